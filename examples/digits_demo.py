"""``python examples/digits_demo.py`` (``make demo``): an offline demonstration on real data with a real collapse.

Everything comes from the package registries, nothing is downloaded, and the
collapse is an outcome of training, never staged:

1. **Real set.** scikit-learn's bundled handwritten digits (``load_digits``:
   1,797 real 8x8 scans with 17 grey levels, 10 classes; UCI "Optical
   Recognition of Handwritten Digits", Alpaydin & Kaynak 1998) are written to
   ``demo/real/<digit>/*.png``, upscaled 8x with nearest-neighbour resampling
   to 64x64 so that a person can see them (every scanner pixel becomes an 8x8
   block; nothing is invented by interpolation).
2. **Domain model.** A small CNN is trained on 80% of the real set (stratified
   split) and exported as two TorchScript files with their metadata
   (``collapse_audit.json``): ``digits_embedder.pt`` (64-d penultimate
   features) and ``digits_classifier.pt`` (10 logits, ``class_names`` "0".."9").
   Both declare ``input_size`` 8x8 and ``resample`` nearest, which maps the
   64x64 PNGs exactly back to the 8x8 grid. Its held-out accuracy is printed.
3. **Collapsed generator.** A vanilla GAN (Goodfellow et al. 2014, the
   non-saturating generator loss) with MLPs, no normalisation, a discriminator
   twice as wide as the generator and a high learning rate (Adam 2e-3): the
   textbook recipe for mode collapse. Its samples, upscaled the same way, go
   to ``demo/gen/`` (a flat folder: a generator does not know labels).
4. **Healthier generator** (skipped with ``--no-healthy``). The same
   generator trained as a WGAN-GP (Gulrajani et al. 2017: Wasserstein critic,
   gradient penalty 10, 5 critic steps per generator step, Adam 1e-4
   (0.5, 0.9)), the standard remedy, to ``demo/gen_healthy/``.
5. **Audit.** Both folders are scanned through the real CLI code path
   (``collapse-audit scan ... --embedder torchscript:... --classifier ...
   --fail-on dropped_classes>0``); a gate failure on the collapsed model is
   expected. The two scans are then compared with ``collapse-audit compare``.

Seeds: ``--seed`` seeds Python, NumPy and torch; training runs on the CPU
with deterministic algorithms, so a seed gives the same images on the same
machine and library versions.

This script is an example of using collapse-audit, not part of the package: it
imports only the package's public modules (:mod:`collapse_audit.cli`,
:mod:`collapse_audit.errors`) and needs scikit-learn and torch besides.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from collapse_audit.cli import app as cli_app
from collapse_audit.cli import main as cli_main
from collapse_audit.errors import CollapseAuditError, UsageError

#: Upscaling factor of the written PNGs (8x8 -> 64x64, nearest neighbour).
SCALE = 8
CLASS_NAMES = [str(d) for d in range(10)]


# --------------------------------------------------------------------------- data
def load_real_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as ``(images (N, 8, 8) float32 in [0, 1], labels (N,) int)``.

    The scans have 17 grey levels (0..16), mapped linearly to [0, 1].
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images.astype(np.float32) / 16.0), d.target.astype(np.int64)


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (N, h, w) -> uint8, upscaled ``SCALE`` x by nearest neighbour (pixel replication)."""
    a = np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return a.repeat(SCALE, axis=1).repeat(SCALE, axis=2)


def write_pngs(images: np.ndarray, folder: Path, names: list[str]) -> list[Path]:
    """Write images in [0, 1] (N, 8, 8) as upscaled greyscale PNGs ``folder/name``; return the paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for a, name in zip(to_uint8(images), names):
        p = folder / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, mode="L").save(p, optimize=False)
        out.append(p)
    return out


def write_real(folder: Path, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    """The real set as ``folder/<digit>/digit<d>_<index>.png`` (class = sub-folder name)."""
    names = [f"{int(y)}/digit{int(y)}_{i:04d}.png" for i, y in enumerate(labels)]
    return write_pngs(images, folder, names)


def write_generated(folder: Path, images: np.ndarray) -> list[Path]:
    """Generated samples as a flat folder ``folder/sample_<i>.png``."""
    return write_pngs(images, folder, [f"sample_{i:05d}.png" for i in range(len(images))])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; deterministic algorithms on."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


# --------------------------------------------------------------------------- domain model
def _digit_net(dim: int = 64):
    import torch.nn as nn

    class DigitNet(nn.Module):
        """8x8 greyscale -> ``dim`` features (post-ReLU) -> 10 logits."""

        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 4 * 4, dim), nn.ReLU(),
            )
            self.head = nn.Linear(dim, 10)

        def forward(self, x):
            return self.head(self.features(x))

    return DigitNet()


@dataclass
class DomainModel:
    """The trained digit CNN and what was measured on it."""

    net: object
    mean: float
    std: float
    train_size: int
    test_size: int
    test_accuracy: float
    epochs: int
    seconds: float


def train_digit_model(images: np.ndarray, labels: np.ndarray, *, seed: int = 0, epochs: int = 15,
                      test_fraction: float = 0.2) -> DomainModel:
    """Train the digit CNN on a stratified ``1 - test_fraction`` split; accuracy on the held-out rest.

    Plain supervised training: cross-entropy, Adam (Kingma & Ba 2015) lr 1e-3, batch 64.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.model_selection import train_test_split

    t0 = time.perf_counter()
    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    mean, std = float(images[tr].mean()), float(images[tr].std())
    x = torch.from_numpy((images[:, None] - mean) / std)
    y = torch.from_numpy(labels)
    torch.manual_seed(seed)
    net = _digit_net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        net.train()
        perm = torch.from_numpy(tr)[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(perm), 64):
            b = perm[i:i + 64]
            loss = F.cross_entropy(net(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(x[te]).argmax(1) == y[te]).float().mean()) if len(te) else float("nan")
    return DomainModel(net, mean, std, len(tr), len(te), acc, epochs, time.perf_counter() - t0)


def export_torchscript(model: DomainModel, folder: Path) -> tuple[Path, Path]:
    """Save ``digits_embedder.pt`` (features) and ``digits_classifier.pt`` (logits + class names) with metadata."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    net = model.net.eval()
    meta = {"input_size": [8, 8], "channels": 1, "mean": [model.mean], "std": [model.std], "resample": "nearest",
            "description": "collapse-audit demo: small CNN trained on scikit-learn's digits "
                           f"(held-out accuracy {model.test_accuracy:.3f})"}
    emb_path, cls_path = folder / "digits_embedder.pt", folder / "digits_classifier.pt"
    with warnings.catch_warnings():  # torch 2.x marks torch.jit.script as deprecated; TorchScript is the format we read
        warnings.simplefilter("ignore", FutureWarning)
        emb = torch.jit.script(net.features)
        cls = torch.jit.script(net)
    emb.save(str(emb_path), _extra_files={"collapse_audit.json": json.dumps(meta)})
    cls.save(str(cls_path), _extra_files={"collapse_audit.json": json.dumps({**meta, "class_names": CLASS_NAMES})})
    return emb_path, cls_path


# --------------------------------------------------------------------------- generators
def _mlp_generator(latent: int, hidden: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(latent, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, 64), nn.Tanh(),
    )


def _mlp_critic(hidden: int):
    import torch.nn as nn

    return nn.Sequential(
        nn.Linear(64, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
        nn.Linear(hidden, 1),
    )


@dataclass
class GANRecipe:
    """How a generator is trained (MLP generator z -> 8x8 in [-1, 1], MLP discriminator/critic)."""

    name: str
    loss: str  # "ns" (vanilla non-saturating GAN) or "wgan-gp"
    latent: int = 16
    g_hidden: int = 256
    d_hidden: int = 512
    lr_g: float = 2e-3
    lr_d: float = 2e-3
    betas: tuple[float, float] = (0.5, 0.999)
    d_steps: int = 1
    gp: float = 10.0
    batch: int = 64
    steps: int = 3000  # generator updates
    extra: dict = field(default_factory=dict)


#: The textbook failure: a vanilla non-saturating GAN whose discriminator is too strong (5 updates per
#: generator update, twice as wide, high learning rate, no normalisation anywhere).
COLLAPSED = GANRecipe("vanilla GAN (non-saturating loss, 5 D steps per G step, lr 2e-3)", "ns", latent=16, g_hidden=256,
                      d_hidden=512, lr_g=2e-3, lr_d=2e-3, betas=(0.5, 0.999), d_steps=5, steps=1000)
#: The standard remedy: the same generator trained as a WGAN-GP (critic as strong: 5 steps per generator step).
HEALTHY = GANRecipe("WGAN-GP (same generator, 5 critic steps per G step, lr 1e-3)", "wgan-gp", latent=16, g_hidden=256,
                    d_hidden=256, lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.9), d_steps=5, gp=10.0, steps=1000)


@dataclass
class TrainedGAN:
    recipe: GANRecipe
    generator: object
    seconds: float
    steps: int


def train_gan(images: np.ndarray, recipe: GANRecipe, *, seed: int = 0, steps: int | None = None,
              snapshot_every: int = 0, on_snapshot=None) -> TrainedGAN:
    """Train a generator on ``images`` (N, 8, 8) in [0, 1] with ``recipe``.

    ``ns``: discriminator on ``BCE(D(x), 1) + BCE(D(G(z)), 0)``, generator on the
    non-saturating ``BCE(D(G(z)), 1)`` (Goodfellow et al. 2014, sec. 3).
    ``wgan-gp``: critic on ``D(G(z)) - D(x) + gp * (||grad D(x_hat)|| - 1)^2`` with
    ``x_hat`` uniform on segments between real and generated samples, generator
    on ``-D(G(z))`` (Gulrajani et al. 2017, Algorithm 1).

    ``on_snapshot(step, G)`` is called every ``snapshot_every`` generator
    updates (and after the last), the way a training script saves samples.
    """
    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    steps = int(recipe.steps if steps is None else steps)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    data = torch.from_numpy(images.reshape(len(images), -1) * 2.0 - 1.0)
    G = _mlp_generator(recipe.latent, recipe.g_hidden)
    D = _mlp_critic(recipe.d_hidden)
    opt_g = torch.optim.Adam(G.parameters(), lr=recipe.lr_g, betas=recipe.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=recipe.lr_d, betas=recipe.betas)
    n, b = len(data), recipe.batch

    def real_batch():
        return data[torch.randint(0, n, (b,), generator=g)]

    def noise():
        return torch.randn(b, recipe.latent, generator=g)

    for it in range(steps):
        for _ in range(recipe.d_steps):
            x = real_batch()
            with torch.no_grad():
                fake = G(noise())
            if recipe.loss == "ns":
                dr, df = D(x), D(fake)
                loss_d = F.binary_cross_entropy_with_logits(dr, torch.ones_like(dr)) + \
                    F.binary_cross_entropy_with_logits(df, torch.zeros_like(df))
            else:
                eps = torch.rand(b, 1, generator=g)
                xh = (eps * x + (1 - eps) * fake).requires_grad_(True)
                grad, = torch.autograd.grad(D(xh).sum(), xh, create_graph=True)
                loss_d = D(fake).mean() - D(x).mean() + recipe.gp * ((grad.norm(dim=1) - 1) ** 2).mean()
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        out = D(G(noise()))
        loss_g = F.binary_cross_entropy_with_logits(out, torch.ones_like(out)) if recipe.loss == "ns" else -out.mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if on_snapshot is not None and snapshot_every and ((it + 1) % snapshot_every == 0 or it + 1 == steps):
            G.eval()
            on_snapshot(it + 1, G)
            G.train()
    G.eval()
    return TrainedGAN(recipe, G, time.perf_counter() - t0, steps)


def sample(gan: TrainedGAN, n: int, *, seed: int = 0) -> np.ndarray:
    """``n`` samples (n, 8, 8) in [0, 1] from fresh noise."""
    return sample_generator(gan.generator, gan.recipe.latent, n, seed=seed)


def sample_generator(generator, latent: int, n: int, *, seed: int = 0) -> np.ndarray:
    import torch

    g = torch.Generator().manual_seed(seed + 12345)
    with torch.no_grad():
        z = torch.randn(n, latent, generator=g)
        x = generator(z).reshape(n, 8, 8)
    return ((x.numpy() + 1.0) / 2.0).astype(np.float32)


def track_argv(run: Path, real: Path, embedder: Path, classifier: Path, out: Path, seed: int) -> list[str]:
    """The ``collapse-audit track`` command line the demo runs on each training run's snapshots."""
    return ["track", str(run), "--real", str(real), "--embedder", f"torchscript:{embedder}", "--classifier", str(classifier),
            "--labels", "folders", "--out", str(out), "--seed", str(seed), "--workers", "0", "--fail-on", "onset_persists>0"]


# --------------------------------------------------------------------------- audit
def scan_argv(gen: Path, real: Path, embedder: Path, classifier: Path, out: Path, seed: int) -> list[str]:
    """The ``collapse-audit scan`` command line the demo runs (printed so that a person can rerun it)."""
    return ["scan", str(gen), "--real", str(real), "--embedder", f"torchscript:{embedder}", "--classifier", str(classifier),
            "--labels", "folders", "--out", str(out), "--seed", str(seed), "--workers", "0", "--fail-on", "dropped_classes>0"]


def _run_cli(argv: list[str]) -> int:
    return cli_main(argv)


def _has_command(name: str) -> bool:
    """Whether ``collapse-audit NAME`` exists in this installation (report and compare are optional here)."""
    try:
        import typer

        return name in typer.main.get_command(cli_app).commands  # type: ignore[attr-defined]
    except Exception:
        return False


def _report_path(out: Path) -> Path | None:
    """``out/report.html`` when the scan wrote one."""
    p = out / "report.html"
    return p if p.is_file() else None


def summarise(results: dict) -> dict:
    """The few numbers the demo prints (and tests check) from a scan's ``results.json``."""
    m = results.get("metrics", {})
    c = results.get("classes") or {}
    k = results.get("clusters") or {}
    d = (results.get("duplicates") or {}).get("within_gen", {})
    rows = {r["name"]: r for r in c.get("classes", [])}
    return {
        "precision": m.get("precision"), "recall": m.get("recall"), "density": m.get("density"),
        "coverage": m.get("coverage"), "fid": m.get("fid"),
        "dropped_classes": list(c.get("dropped", [])), "under_classes": list(c.get("under", [])),
        "over_classes": list(c.get("over", [])),
        "gen_share": {n: rows[n]["gen_share"] for n in rows}, "real_share": {n: rows[n]["real_share"] for n in rows},
        "classifier_agreement": (c.get("classifier") or {}).get("agreement"),
        "clusters_k": k.get("k"), "clusters_dropped": len(k.get("dropped", [])), "clusters_under": len(k.get("under", [])),
        "dup_fraction": d.get("dup_fraction"),
        "gate_passed": (results.get("gate") or {}).get("passed"),
    }


def _fmt(v, pct=False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}%" if pct else f"{v:.3f}"


# --------------------------------------------------------------------------- the program
MARKER = ".collapse-audit-demo"
QUICK = {"epochs": 2, "steps": 60, "samples": 300, "snapshot_every": 20, "snapshot_samples": 200}
#: Defaults of the snapshots the demo's training saves (every N generator updates, this many samples each).
SNAPSHOT_EVERY = 100
SNAPSHOT_SAMPLES = 600


def _say(msg: str = "") -> None:
    print(msg, flush=True)


def _prepare_out(out: Path) -> None:
    """Create ``out``; clear the demo's own sub-folders from an earlier run (only in a folder the demo made)."""
    owned = ("real", "gen", "gen_healthy", "models", "out-collapsed", "out-healthy", "runs", "track-collapsed", "track-healthy")
    if out.exists() and any((out / o).exists() for o in owned) and not (out / MARKER).exists():
        raise UsageError(f"{out}: holds files that the demo did not write; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by examples/digits_demo.py; its sub-folders are replaced on every run\n")
    for o in owned:
        if (out / o).is_dir():
            shutil.rmtree(out / o)
    for f in ("compare.html", "summary.json"):
        if (out / f).exists():
            (out / f).unlink()


def _class_line(s: dict) -> str:
    parts = []
    for n in CLASS_NAMES:
        r, g = s["real_share"].get(n), s["gen_share"].get(n)
        if r is None:
            continue
        tag = " DROPPED" if n in s["dropped_classes"] else (" under" if n in s["under_classes"] else "")
        parts.append(f"{n}: {100 * r:.0f}%->{100 * g:.1f}%{tag}")
    return "; ".join(parts)


def _describe(label: str, s: dict, out: Path) -> None:
    _say(f"{label}:")
    _say(f"  recall {_fmt(s['recall'])}  coverage {_fmt(s['coverage'])}  precision {_fmt(s['precision'])}  "
         f"density {_fmt(s['density'])}  FID (digit features) {_fmt(s['fid'])}")
    _say(f"  digit classes dropped: {', '.join(s['dropped_classes']) or 'none'}; "
         f"under-represented: {', '.join(s['under_classes']) or 'none'}; "
         f"over-represented: {', '.join(s['over_classes']) or 'none'}")
    _say(f"  class shares real -> generated: {_class_line(s)}")
    if s["clusters_k"]:
        _say(f"  clusters of the real set: {s['clusters_dropped']} of {s['clusters_k']} dropped, "
             f"{s['clusters_under']} under-represented; "
             f"near-duplicates among generated images: {_fmt(s['dup_fraction'], pct=True)}")
    rep = _report_path(out)
    _say(f"  results: {out / 'results.json'}" + (f"   report: {rep}" if rep else ""))


def summarise_track(track: dict, code: int) -> dict:
    """The numbers of one track.json the demo prints and the README quotes."""
    run = track["run"]
    cks = track["checkpoints"]
    return {
        "exit_code": code,
        "n_checkpoints": len(cks),
        "onset_step": run["onset"]["step"] if run["onset"] else None,
        "onset_reasons": [r.get("metric") or r["kind"] for r in run["onset"]["reasons"]] if run["onset"] else [],
        "onset_recovered_step": run["onset"].get("recovered_step") if run["onset"] else None,
        "hopping_clusters": [h["id"] for h in run["hopping"]["clusters"]],
        "oscillating": bool(run["hopping"]["oscillating"]),
        "never_learned": list(run["never_learned"]),
        "best_step": run["best_checkpoint"]["step"] if run["best_checkpoint"] else None,
        "alerts": [a["message"] for a in run["alerts"]],
        "coverage": [c["metrics"]["coverage"] for c in cks],
        "clusters_covered": [c["clusters"]["n_covered"] for c in cks],
        "k": track["clusters"]["k"],
        "steps": [c["step"] for c in cks],
        "classes_dropped": [[n for n, st in zip(c["classes"]["names"], c["classes"]["status"]) if st == "dropped"]
                            if c.get("classes") else None for c in cks],
        "classes_dropped_final": (run.get("classes") or {}).get("dropped_final"),
        "classes_lost": (run.get("classes") or {}).get("lost"),
    }


def _describe_track(name: str, t: dict, out: Path) -> None:
    cov = ", ".join(_fmt(v) for v in t["coverage"])
    _say(f"{name} run over {t['n_checkpoints']} checkpoints: coverage {cov}; clusters covered "
         f"{', '.join(map(str, t['clusters_covered']))} of {t['k']}")
    _say(f"  onset: {'step ' + str(t['onset_step']) + ' (' + ', '.join(t['onset_reasons']) + ')' if t['onset_step'] is not None else 'none'}; "
         f"hopping clusters: {len(t['hopping_clusters'])}{' (oscillating)' if t['oscillating'] else ''}; never learned: "
         f"{len(t['never_learned'])}; best checkpoint: step {t['best_step']}; alerts: {len(t['alerts'])}")
    if t.get("classes_dropped_final") is not None:
        first = {}
        for st, dropped in zip(t["steps"], t["classes_dropped"]):
            for n in dropped or []:
                first.setdefault(n, st)
        _say(f"  digits dropped at the last snapshot: {', '.join(t['classes_dropped_final']) or 'none'}; "
             f"first dropped: {', '.join(f'{n} at step {s}' for n, s in sorted(first.items(), key=lambda x: x[1])) or 'none'}")
    html = out / "track.html"
    if html.exists():
        _say(f"  timeline and heatmap: {html}")


def _set_threads(torch_threads: int, faiss_threads: int | None = None) -> tuple[int, int | None]:
    """Set torch's and FAISS's (OpenMP) thread counts; return the previous ones.

    The demo's models are tiny: on a busy 2-core machine, two intra-op threads
    make them several times slower than one (measured), so the demo uses one.
    """
    import torch

    old = (torch.get_num_threads(), None)
    torch.set_num_threads(torch_threads)
    try:
        import faiss

        old = (old[0], faiss.omp_get_max_threads())
        faiss.omp_set_num_threads(faiss_threads if faiss_threads is not None else torch_threads)
    except Exception:  # FAISS without OpenMP controls
        pass
    return old


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns 0 when it ran (a failed gate on the collapsed model is the expected outcome)."""
    ap = argparse.ArgumentParser(prog="python examples/digits_demo.py",
                                 description="Offline demo: real digits, a GAN that collapses, a healthier one, "
                                             "and the audit of both.")
    ap.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo/)")
    ap.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    ap.add_argument("--quick", action="store_true", help="tiny training and few samples (for tests; no collapse claims)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of the digit classifier (default 15)")
    ap.add_argument("--steps", type=int, default=None, help="generator updates of each GAN (default: the recipe's, 1000)")
    ap.add_argument("--samples", type=int, default=None, help="generated images per generator (default 1500)")
    ap.add_argument("--snapshot-every", type=int, default=None,
                    help=f"save samples every N generator updates for 'track' (default {SNAPSHOT_EVERY})")
    ap.add_argument("--no-healthy", action="store_true", help="skip the healthier generator and the comparison")
    ap.add_argument("--no-report", action="store_true", help="results.json only (passes --no-report to the scans)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/FAISS threads (default 1: the same numbers on any machine, and no slowdown on a busy one)")
    args = ap.parse_args(argv)

    import torch

    quick = QUICK if args.quick else {}
    epochs = args.epochs or quick.get("epochs", 15)
    steps = args.steps or quick.get("steps")
    n_samples = args.samples or quick.get("samples", 1500)
    out = args.out
    t_all = time.perf_counter()
    timings: dict[str, float] = {}
    saved = _set_threads(max(1, args.threads))
    deterministic = torch.are_deterministic_algorithms_enabled()
    snap_every = args.snapshot_every or quick.get("snapshot_every", SNAPSHOT_EVERY)
    snap_n = quick.get("snapshot_samples", SNAPSHOT_SAMPLES)
    n_steps = 6 if args.no_healthy else 9
    try:
        _prepare_out(out)
        t0 = time.perf_counter()
        seed_everything(args.seed)
        images, labels = load_real_digits()
        real_dir = out / "real"
        write_real(real_dir, images, labels)
        timings["real"] = time.perf_counter() - t0
        _say(f"[1/{n_steps}] real set: {len(images)} scans of handwritten digits (scikit-learn load_digits, 8x8, 10 classes) "
             f"-> {real_dir}/<digit>/*.png (upscaled {SCALE}x, nearest neighbour)")

        dm = train_digit_model(images, labels, seed=args.seed, epochs=epochs)
        emb_path, cls_path = export_torchscript(dm, out / "models")
        timings["domain_model"] = dm.seconds
        _say(f"[2/{n_steps}] domain model: small CNN, {dm.epochs} epochs on {dm.train_size} scans, held-out accuracy "
             f"{100 * dm.test_accuracy:.1f}% on {dm.test_size} ({dm.seconds:.0f}s) -> {emb_path}, {cls_path}")

        runs = [("collapsed", COLLAPSED, out / "gen", out / "out-collapsed")]
        if not args.no_healthy:
            runs.append(("healthy", HEALTHY, out / "gen_healthy", out / "out-healthy"))
        step = 3
        for name, recipe, gdir, _ in runs:
            seed_everything(args.seed)
            snap_dir = out / "runs" / name

            def snapshot(it, G, snap_dir=snap_dir, recipe=recipe):
                write_generated(snap_dir / f"step_{it:06d}", sample_generator(G, recipe.latent, snap_n, seed=args.seed + it))

            gan = train_gan(images, recipe, seed=args.seed, steps=steps, snapshot_every=snap_every, on_snapshot=snapshot)
            write_generated(gdir, sample(gan, n_samples, seed=args.seed))
            timings[f"train_{name}"] = gan.seconds
            _say(f"[{step}/{n_steps}] {name} generator: {recipe.name}, {gan.steps} steps ({gan.seconds:.0f}s) "
                 f"-> {n_samples} samples in {gdir}; {snap_n} samples every {snap_every} steps in {snap_dir}")
            step += 1

        summaries, codes = {}, {}
        for name, _, gdir, odir in runs:
            argv_scan = scan_argv(gdir, real_dir, emb_path, cls_path, odir, args.seed)
            argv_scan += ["--no-report"] if args.no_report else []
            _say(f"[{step}/{n_steps}] collapse-audit {shlex.join(argv_scan)}")
            step += 1
            t0 = time.perf_counter()
            code = _run_cli(argv_scan)
            timings[f"scan_{name}"] = time.perf_counter() - t0
            codes[name] = code
            if code not in (0, 1):
                print(f"demo: the scan of {gdir} failed (exit {code})", file=sys.stderr)
                return code
            summaries[name] = summarise(json.loads((odir / "results.json").read_text()))
        tracks = {}
        for name, _, _, _ in runs:
            argv_track = track_argv(out / "runs" / name, real_dir, emb_path, cls_path, out / f"track-{name}", args.seed)
            argv_track += ["--no-report"] if args.no_report else []
            _say(f"[{step}/{n_steps}] collapse-audit {shlex.join(argv_track)}")
            step += 1
            t0 = time.perf_counter()
            code = _run_cli(argv_track)
            timings[f"track_{name}"] = time.perf_counter() - t0
            if code not in (0, 1):
                print(f"demo: track of {out / 'runs' / name} failed (exit {code})", file=sys.stderr)
                return code
            tracks[name] = summarise_track(json.loads((out / f"track-{name}" / "track.json").read_text()), code)
        compare_path = None
        if "healthy" in summaries:
            if _has_command("compare"):
                compare_path = out / "compare.html"
                argv_cmp = ["compare", str(out / "out-collapsed"), str(out / "out-healthy"), "-o", str(compare_path)]
                _say(f"[{step}/{n_steps}] collapse-audit {shlex.join(argv_cmp)}")
                if _run_cli(argv_cmp) != 0:
                    compare_path = None
            else:
                _say(f"[{step}/{n_steps}] (no 'compare' command in this installation: comparison skipped)")

        _say()
        _say("=" * 78)
        _say("What the audit found")
        _say("=" * 78)
        _describe("Collapsed generator (vanilla GAN, too-strong discriminator)", summaries["collapsed"], out / "out-collapsed")
        if "healthy" in summaries:
            _describe("Healthier generator (WGAN-GP)", summaries["healthy"], out / "out-healthy")
            c, h = summaries["collapsed"], summaries["healthy"]
            _say(f"collapsed -> healthier: recall {_fmt(c['recall'])} -> {_fmt(h['recall'])}, coverage {_fmt(c['coverage'])} -> "
                 f"{_fmt(h['coverage'])}, dropped classes {len(c['dropped_classes'])} -> {len(h['dropped_classes'])}"
                 + (f"; side by side: {compare_path}" if compare_path else ""))
        if codes["collapsed"] == 1:
            _say("The gate 'dropped_classes>0' FAILED for the collapsed generator (exit 1): that is the expected outcome, "
                 "and what would block such a model in CI. The demo itself succeeded.")
        else:
            _say("The gate 'dropped_classes>0' held for the collapsed generator this time (no class dropped outright).")
        for name, t in tracks.items():
            _describe_track(name, t, out / f"track-{name}")
        timings["total"] = time.perf_counter() - t_all
        summary = {"seed": args.seed, "quick": bool(args.quick), "classifier_test_accuracy": dm.test_accuracy,
                   "n_samples": n_samples, "recipes": {n: r.name for n, r, _, _ in runs}, "scan_exit_codes": codes,
                   "seconds": {k: round(v, 1) for k, v in timings.items()}, **summaries, "track": tracks}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        _say(f"demo finished in {timings['total']:.0f}s; numbers in {out / 'summary.json'}")
        return 0
    except CollapseAuditError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return e.exit_code
    finally:
        _set_threads(*saved)
        torch.use_deterministic_algorithms(deterministic)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
