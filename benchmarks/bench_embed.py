"""Embedding throughput: collapse-audit's image -> Inception feature pipeline against pytorch-fid and torch-fidelity.

    .venv/bin/python benchmarks/bench_embed.py [--images 96] [--size 512] [--device cpu|cuda] [--batch-size 32]
                                               [--workers 2] [--rounds 2] [--quick] [--json OUT]

In a temporary directory: N seeded synthetic images (smooth colour gradients,
a soft blob, a few translucent shapes, a slight blur and mild noise), SIZE x
SIZE pixels, saved as JPEG (quality 90) and the same pixels as PNG; a second,
different-looking set B (other seed, other palette) of N JPEGs, used only to
see how far FID moves under ``--amp``.  One set of seeded random FID
Inception-v3 weights (:func:`collapse_audit.models.inception.random_fid_state_dict`)
is saved once and loaded by every tool: collapse-audit through ``--weights
inception=PATH``, pytorch-fid from ``$TORCH_HOME/hub/checkpoints/`` (a
temporary TORCH_HOME, so torch.hub finds the file and downloads nothing),
torch-fidelity through ``feature_extractor_weights_path``.

Rows (images/s, the median over rounds; spread = min-max over rounds):

* collapse-audit (``collapse_audit.api.embed_with`` on embedders built once,
  i.e. :func:`collapse_audit.embed` without the model build): fp32 with the
  clean resize, fp32 with pytorch-fid's preprocessing, ``--amp`` (bfloat16 on
  CPU, float16 on CUDA), the feature cache warm (second call), the PNG copy;
  each call lists, hashes, decodes, resizes and embeds the whole folder;
* pytorch-fid 0.3.0 ``get_activations`` (same batch size and workers);
* torch-fidelity 0.4.0 ``prepare_input_from_id`` + ``get_featuresdict_from_dataset``
  (``inception-v3-compat``; it picks its own worker count, min(4, 2 x cores));
* the model alone on a batch of 299 x 299 tensors already on the device, fp32
  and autocast + channels_last: the ceiling any pipeline can reach.

Within a round the tools alternate (so drift of the machine hits all of them
alike); before the rounds each tool makes one untimed warm-up call on the first
BATCH images (model build and first-call overhead are not timed).  Then a
stage breakdown of the CPU work per image in one process (hash, decode,
resize, model), and the accuracy: collapse-audit with pytorch-fid's
preprocessing vs pytorch-fid on the same JPEGs (max abs difference), and
``--amp`` vs fp32 (Pearson r of all feature values, max abs difference,
FID(A, B) from either).  The weights are random: throughput does not depend on
them, FID values are not comparable to published ones.  clean-fid is not
measured when it is not installed (it says so).

Measured: the default run (N=96, 512 px, batch 32, 2 workers, 2 rounds, CPU)
took 5 min 23 s to 5 min 33 s wall over three runs (320-329 s reported by the
script; peak RSS 2.5-2.6 GiB) on an otherwise idle 2-core AMD EPYC (avx512_bf16),
torch 2.14.1, 2 torch threads; rates agreed within 5% between runs.  ``--quick``
takes about 30 s (minutes when other processes share the cores).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_machine.py, also when loaded by path

from _machine import cores, cpu_model  # noqa: E402

SEED = 1234
WEIGHTS_SEED = 0
JPEG_QUALITY = 90

# Two palettes (RGB): set A earthy / sky tones, set B saturated neon tones.
PALETTE_A = [(70, 110, 60), (180, 160, 110), (90, 140, 200), (200, 90, 60), (240, 220, 180), (40, 50, 70),
             (130, 170, 90), (160, 120, 80)]
PALETTE_B = [(255, 0, 170), (0, 230, 255), (120, 0, 255), (255, 240, 0), (20, 20, 20), (0, 255, 120),
             (255, 120, 0), (250, 250, 250)]

ROWS = [
    "collapse-audit fp32 (clean)",
    "collapse-audit fp32 (pytorch-fid preprocessing)",
    "collapse-audit --amp (clean)",
    "collapse-audit cached",
    "collapse-audit PNG fp32",
    "pytorch-fid",
    "torch-fidelity",
    "model only fp32",
    "model only amp",
]
AMP_ROWS = {"collapse-audit --amp (clean)", "model only amp"}


# --------------------------------------------------------------------------- data


def make_image(rng: np.random.Generator, size: int, palette) -> np.ndarray:
    """A seeded photo-ish RGB image (size x size uint8): gradient, blob, shapes, blur, noise."""
    from PIL import Image, ImageDraw, ImageFilter

    pal = np.asarray(palette, dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c0, c1, c2 = pal[rng.choice(len(pal), 3, replace=False)]
    ang = rng.uniform(0, 2 * np.pi)
    t = np.cos(ang) * xx + np.sin(ang) * yy
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
    img = c0 * (1 - t)[..., None] + c1 * t[..., None]
    cx, cy = rng.uniform(0.2, 0.8, 2)
    r = rng.uniform(0.15, 0.45)
    w = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)) * rng.uniform(0.3, 0.8)
    img = img * (1 - w[..., None]) + c2 * w[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil, "RGBA")
    for _ in range(int(rng.integers(3, 8))):
        col = pal[rng.integers(len(pal))] + rng.normal(0, 12, 3)
        fill = tuple(int(v) for v in np.clip(col, 0, 255)) + (int(rng.integers(120, 231)),)
        x0, y0 = rng.uniform(-0.1, 0.9, 2) * size
        x1, y1 = x0 + rng.uniform(0.08, 0.5) * size, y0 + rng.uniform(0.08, 0.5) * size
        kind = int(rng.integers(3))
        if kind == 0:
            draw.ellipse([x0, y0, x1, y1], fill=fill)
        elif kind == 1:
            draw.rectangle([x0, y0, x1, y1], fill=fill)
        else:
            k = int(rng.integers(3, 7))
            pts = [(float(x), float(y)) for x, y in zip(rng.uniform(x0, x1, k), rng.uniform(y0, y1, k))]
            draw.polygon(pts, fill=fill)
    pil = pil.filter(ImageFilter.GaussianBlur(radius=1.2 * size / 512))
    arr = np.asarray(pil, dtype=np.float32) + rng.normal(0, 4.0, (size, size, 3))
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def write_set(folder: Path, n: int, size: int, seed: int, palette, png_folder: Path | None = None) -> list[Path]:
    """N JPEGs (quality 90) in ``folder`` and, with ``png_folder``, the same pixels as PNG; sorted paths of the JPEGs."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if png_folder is not None:
        png_folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = make_image(np.random.default_rng([seed, i]), size, palette)
        im = Image.fromarray(arr)
        p = folder / f"img_{i:05d}.jpg"
        im.save(p, quality=JPEG_QUALITY)
        if png_folder is not None:
            im.save(png_folder / f"img_{i:05d}.png")
        out.append(p)
    return out


def copy_first(src: Path, dst: Path, k: int) -> Path:
    """The first ``k`` files of ``src`` (by name) copied to ``dst``: the warm-up folder."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.iterdir())[:k]:
        shutil.copy(p, dst / p.name)
    return dst


# --------------------------------------------------------------------------- machine


def machine(device: str) -> dict:
    import torch

    out = {"cpu": cpu_model(), "cores": cores(), "python": platform.python_version(), "numpy": np.__version__,
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "device": device,
           "device_name": None, "load_avg_start": _loadavg(), "cpu_busy_start": cpu_busy()}
    if device == "cuda":
        out["device_name"] = torch.cuda.get_device_name(0)
    for mod, key in (("pytorch_fid", "pytorch_fid"), ("torch_fidelity", "torch_fidelity")):
        try:
            out[key] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - not installed: reported in the table
            out[key] = None
    return out


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def cpu_busy(interval: float = 1.0) -> float | None:
    """Fraction of all cores' time spent busy over ``interval`` seconds (/proc/stat) while this script sleeps:
    what other processes are using.  None where /proc/stat is not readable."""

    def sample():
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(interval)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


# --------------------------------------------------------------------------- timing helpers


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, device: str):
    """(seconds, result) of ``fn()``, CUDA work included (synchronised before and after)."""
    _sync(device)
    t = time.perf_counter()
    res = fn()
    _sync(device)
    return time.perf_counter() - t, res


@contextlib.contextmanager
def quiet():
    """Swallow stdout/stderr chatter (pytorch-fid's tqdm bar and batch-size warning) and warnings."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _sorted_features(fs) -> np.ndarray:
    order = np.argsort([Path(p).stem for p in fs.paths], kind="stable")
    return np.asarray(fs.features, dtype=np.float32)[order]


# --------------------------------------------------------------------------- contenders


class Contender:
    """One row: ``run(warm=False)`` embeds the whole set (or the warm-up subset) and returns its features."""

    def __init__(self, name: str, run, n: int):
        self.name, self._run, self.n = name, run, n
        self.seconds: list[float] = []
        self.features: np.ndarray | None = None
        self.error: str | None = None

    def __call__(self, warm: bool = False):
        return self._run(warm)


def _ours(name, emb, folder, warm_folder, args, amp, n, cache_dir=None):
    from collapse_audit.api import embed_with

    def run(warm):
        fs = embed_with(warm_folder if warm else folder, [emb], device=args.device, batch_size=args.batch_size,
                        workers=args.workers, amp=amp, cache_dir=cache_dir, use_cache=cache_dir is not None)[0]
        return _sorted_features(fs)

    return Contender(name, run, n)


def _pytorch_fid(files, warm_files, args, n):
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    with quiet():  # loads $TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(args.device).eval()

    def run(warm):
        with quiet():
            a = get_activations([str(f) for f in (warm_files if warm else files)], model, args.batch_size, 2048,
                                args.device, args.workers)
        return a.astype(np.float32)

    return Contender("pytorch-fid", run, n)


def _torch_fidelity(folder, warm_folder, weights, args, n):
    import torch_fidelity.utils as U

    cuda = args.device == "cuda"
    with quiet():
        fe = U.create_feature_extractor("inception-v3-compat", ["2048"], cuda=cuda,
                                        feature_extractor_weights_path=str(weights), verbose=False)

    def run(warm):
        with quiet():
            ds = U.prepare_input_from_id(1, input1=str(warm_folder if warm else folder), samples_find_deep=False,
                                         verbose=False)
            out = U.get_featuresdict_from_dataset(ds, fe, args.batch_size, cuda, save_cpu_ram=False, verbose=False)
        return out["2048"].numpy().astype(np.float32)

    return Contender("torch-fidelity", run, n)


def _model_only(name, net, x, args, amp):
    """The network alone on preprocessed 299 x 299 tensors already on the device, in batches of ``--batch-size``."""
    import torch

    dev_type = "cuda" if args.device == "cuda" else "cpu"
    dtype = torch.float16 if dev_type == "cuda" else torch.bfloat16
    bs = args.batch_size

    def run(warm):
        xs = x[:bs] if warm else x
        outs = []
        with torch.inference_mode():
            for i in range(0, len(xs), bs):
                if amp:
                    with torch.autocast(dev_type, dtype=dtype):
                        outs.append(net(xs[i:i + bs]))
                else:
                    outs.append(net(xs[i:i + bs]))
            y = torch.cat(outs)
        return y

    c = Contender(name, run, len(x))
    c.keep = False  # its features are not compared
    return c


# --------------------------------------------------------------------------- stage breakdown


def stage_breakdown(jpgs: list[Path], pngs: list[Path], args) -> tuple[dict, "object"]:
    """ms per image of each CPU stage in this process (one thread of Python, torch's threads for the resize);
    returns the stages and the clean-preprocessed batch (N, 3, 299, 299) for the model-only rows."""
    import torch

    from collapse_audit.decode import file_sha256, load_rgb
    from collapse_audit.models.inception import preprocess_clean, preprocess_pytorch_fid

    n = len(jpgs)
    load_rgb(jpgs[0]), load_rgb(pngs[0])  # warm-up
    t = time.perf_counter()
    for p in jpgs:
        file_sha256(p)
    hash_ms = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    imgs = [load_rgb(p) for p in jpgs]
    dec_ms = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    for p in pngs:
        load_rgb(p)
    dec_png_ms = (time.perf_counter() - t) / n * 1000
    preprocess_clean(imgs[0]), preprocess_pytorch_fid(imgs[0])
    t = time.perf_counter()
    x = torch.stack([preprocess_clean(im) for im in imgs])
    clean_ms = (time.perf_counter() - t) / n * 1000
    t = time.perf_counter()
    for im in imgs:
        preprocess_pytorch_fid(im)
    pf_ms = (time.perf_counter() - t) / n * 1000
    return {"hash_sha256": hash_ms, "decode_jpeg": dec_ms, "decode_png": dec_png_ms, "resize_clean": clean_ms,
            "resize_pytorch_fid": pf_ms}, x


def model_ms_at_threads(net, x, args, amp: bool, threads: int) -> float:
    """ms per image of the network on one batch with ``threads`` torch threads (after one warm-up batch)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        xb = x[: args.batch_size]
        with torch.inference_mode(), (torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()):
            net(xb)
            t = time.perf_counter()
            net(xb)
            return (time.perf_counter() - t) / len(xb) * 1000
    finally:
        torch.set_num_threads(old)


# --------------------------------------------------------------------------- output


def fmt_rate(v: float) -> str:
    """images/s with 3-4 significant digits (the cached row runs at thousands)."""
    return f"{v:.0f}" if v >= 1000 else f"{v:.1f}" if v >= 100 else f"{v:.2f}"


def print_table(rows: list[dict]) -> None:
    hdr = (f"{'row':<48} {'images/s':>9} {'spread (min-max)':>17} {'vs pytorch-fid':>15} {'vs torch-fidelity':>18} "
           f"{'of model ceiling':>17}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        if r.get("error"):
            print(f"{r['name']:<48} {'-':>9} {'-':>17} {'-':>15} {'-':>18} {'-':>17}  {r['error']}")
            continue
        spread = f"{fmt_rate(r['min'])}-{fmt_rate(r['max'])}" if r["rounds"] > 1 else "(1 round)"
        ceil = f"{100 * r['share_of_ceiling']:.0f}% ({r['ceiling']})" if r.get("share_of_ceiling") is not None else "-"
        vs_pf = f"{r['vs_pytorch_fid']:.2f}x" if r.get("vs_pytorch_fid") is not None else "-"
        vs_tf = f"{r['vs_torch_fidelity']:.2f}x" if r.get("vs_torch_fidelity") is not None else "-"
        print(f"{r['name']:<48} {fmt_rate(r['median']):>9} {spread:>17} {vs_pf:>15} {vs_tf:>18} {ceil:>17}")


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=None, help="images per set (default 96; --quick: 8)")
    ap.add_argument("--size", type=int, default=None, help="image side in pixels (default 512; --quick: 128)")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers (collapse-audit and pytorch-fid)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 2; --quick: 1)")
    ap.add_argument("--quick", action="store_true", help="smoke test: 8 images of 128 px, 1 round")
    ap.add_argument("--json", type=Path, default=None, help="also write every number here")
    args = ap.parse_args(argv)
    args.images = args.images or (8 if args.quick else 96)
    args.size = args.size or (128 if args.quick else 512)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.images < 2 or args.size < 16 or args.batch_size < 1 or args.workers < 0 or args.rounds < 1:
        ap.error("need --images >= 2, --size >= 16, --batch-size >= 1, --workers >= 0, --rounds >= 1")

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda was asked for but no CUDA GPU is visible (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2

    t_start = time.perf_counter()
    old_torch_home = os.environ.get("TORCH_HOME")
    try:
        with tempfile.TemporaryDirectory(prefix="bench_embed_") as tmp:
            out = _run(args, Path(tmp), t_start)
    finally:
        if old_torch_home is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = old_torch_home
    out["wall_s"] = time.perf_counter() - t_start
    out["machine"]["load_avg_end"] = _loadavg()
    out["machine"]["cpu_busy_end"] = cpu_busy()
    print(f"total wall time: {out['wall_s']:.0f} s; CPU busy with other processes at the end: "
          f"{_pct(out['machine']['cpu_busy_end'])}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    return 0


def _run(args, tmp: Path, t_start: float) -> dict:
    import torch

    mach = machine(args.device)
    dev = f", device {mach['device_name']}" if mach["device_name"] else ""
    print(f"machine: {mach['cpu']}, {mach['cores']} cores; python {mach['python']}, torch {mach['torch']}, "
          f"torch threads {mach['torch_threads']} (not changed by this script){dev}; "
          f"CPU busy with other processes at start: {_pct(mach['cpu_busy_start'])}")
    if mach["cpu_busy_start"] is not None and mach["cpu_busy_start"] > 0.2:
        print("warning: other processes are using the CPU: the timings below are slower and noisier than on an "
              "idle machine")
    n, bs = args.images, args.batch_size
    print(f"settings: N={n} images per set, {args.size}x{args.size} px, JPEG quality {JPEG_QUALITY} (+ the same pixels "
          f"as PNG), device {args.device}, batch size {bs}, workers {args.workers}, rounds {args.rounds}")
    print(f"weights: seeded random FID Inception-v3 (random_fid_state_dict({WEIGHTS_SEED})), the same file for every "
          "tool; throughput does not depend on the weights, FID values are not comparable to published ones")
    try:
        import cleanfid  # noqa: F401

        print("clean-fid: installed but not measured by this benchmark")
    except ImportError:
        print("clean-fid: not installed, not measured")

    # -- data and weights
    t = time.perf_counter()
    a_jpg, a_png, b_jpg = tmp / "a_jpg", tmp / "a_png", tmp / "b_jpg"
    jpgs = write_set(a_jpg, n, args.size, SEED, PALETTE_A, png_folder=a_png)
    pngs = sorted(a_png.iterdir())
    write_set(b_jpg, n, args.size, SEED + 1, PALETTE_B)
    k = min(n, bs)
    warm_jpg, warm_png = copy_first(a_jpg, tmp / "warm_jpg", k), copy_first(a_png, tmp / "warm_png", k)
    warm_files = sorted(warm_jpg.iterdir())

    from collapse_audit.models.inception import build_fid_inception, random_fid_state_dict

    wpath = tmp / "fid_inception_random.pth"
    torch.save(random_fid_state_dict(WEIGHTS_SEED), wpath)
    torch_home = tmp / "torch_home"
    ckpt = torch_home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    from urllib.parse import urlparse

    try:
        from pytorch_fid.inception import FID_WEIGHTS_URL
        pf_name = os.path.basename(urlparse(FID_WEIGHTS_URL).path)
    except ImportError:
        pf_name = "pt_inception-2015-12-05-6726825d.pth"
    shutil.copy(wpath, ckpt / pf_name)
    os.environ["TORCH_HOME"] = str(torch_home)
    if Path(torch.hub.get_dir()).resolve() != (torch_home / "hub").resolve():  # set_dir() was called before us
        torch.hub.set_dir(str(torch_home / "hub"))
    print(f"data: {2 * n} JPEGs + {n} PNGs written in {time.perf_counter() - t:.1f} s "
          f"(JPEG {sum(p.stat().st_size for p in jpgs) / n / 1024:.0f} KiB, "
          f"PNG {sum(p.stat().st_size for p in pngs) / n / 1024:.0f} KiB per image)", flush=True)

    # -- contenders (models built here, untimed)
    from collapse_audit.pipeline import build_embedders

    wopt = [f"inception={wpath}"]

    def emb(name):
        return build_embedders([name], wopt, progress=False)[0]

    e_clean, e_pf, e_amp = emb("inception"), emb("inception:pytorch-fid"), emb("inception")
    cache_dir = tmp / "feature_cache"
    contenders: list[Contender] = [
        _ours(ROWS[0], e_clean, a_jpg, warm_jpg, args, False, n),
        _ours(ROWS[1], e_pf, a_jpg, warm_jpg, args, False, n),
        _ours(ROWS[2], e_amp, a_jpg, warm_jpg, args, True, n),
        _ours(ROWS[3], e_clean, a_jpg, warm_jpg, args, False, n, cache_dir=cache_dir),
        _ours(ROWS[4], e_clean, a_png, warm_png, args, False, n),
    ]
    for name, make in (("pytorch-fid", lambda: _pytorch_fid(jpgs, warm_files, args, n)),
                       ("torch-fidelity", lambda: _torch_fidelity(a_jpg, warm_jpg, wpath, args, n))):
        try:
            contenders.append(make())
        except Exception as e:  # noqa: BLE001 - a missing or broken reference tool is a row, not a crash
            c = Contender(name, None, n)
            c.error = f"cannot run: {type(e).__name__}: {str(e).strip().splitlines()[0][:100] if str(e).strip() else ''}"
            contenders.append(c)

    # -- stage breakdown (one process) and the model-only nets
    print("stage breakdown (one process) ...", flush=True)
    stages, x = stage_breakdown(jpgs, pngs, args)
    net32 = build_fid_inception(torch.load(wpath, weights_only=True))
    net_amp = build_fid_inception(torch.load(wpath, weights_only=True))
    cuda = args.device == "cuda"
    x_dev = x.to(args.device)
    if cuda:
        net32 = net32.to(args.device, memory_format=torch.channels_last)
        x32 = x_dev.contiguous(memory_format=torch.channels_last)
    else:
        x32 = x_dev
    net_amp = net_amp.to(args.device, memory_format=torch.channels_last)
    x_amp = x_dev.contiguous(memory_format=torch.channels_last)
    contenders.append(_model_only(ROWS[7], net32, x32, args, False))
    contenders.append(_model_only(ROWS[8], net_amp, x_amp, args, True))

    # threads collapse-audit gives the model while its decode workers run (collapse_audit.embedding.embed_files)
    threads = torch.get_num_threads()
    nw = min(args.workers, max(0, n // max(1, bs // 4)))
    pipe_threads = threads  # collapse_audit.embedding keeps every torch thread for the model (workers are mostly idle)
    if not cuda and pipe_threads != threads:
        stages["model_fp32_pipeline_threads"] = model_ms_at_threads(net32, x32, args, False, pipe_threads)
        stages["model_amp_pipeline_threads"] = model_ms_at_threads(net_amp, x_amp, args, True, pipe_threads)

    # -- warm-up: one untimed call per tool (the cached row's warm-up fills its cache with the whole set)
    print("warm-up (untimed): one call per tool on the first "
          f"{k} images; the cached row's warm-up fills the cache with all {n} ...", flush=True)
    for c in contenders:
        if c.error:
            continue
        try:
            if c.name == ROWS[3]:
                c(warm=False)
            else:
                c(warm=True)
        except Exception as e:  # noqa: BLE001
            c.error = f"failed: {type(e).__name__}: {str(e).strip()[:100]}"

    # -- timed rounds, tools alternating
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds} ...", flush=True)
        for c in contenders:
            if c.error:
                continue
            try:
                s, feats = timed(lambda: c(warm=False), args.device)
            except Exception as e:  # noqa: BLE001
                c.error = f"failed: {type(e).__name__}: {str(e).strip()[:100]}"
                continue
            c.seconds.append(s)
            if c.features is None and getattr(c, "keep", True):
                c.features = np.asarray(feats, dtype=np.float32)

    # -- set B (untimed): fp32 and amp features for the FID comparison
    from collapse_audit import fid
    from collapse_audit.api import embed_with

    kw = dict(device=args.device, batch_size=bs, workers=args.workers, use_cache=False)
    b32 = _sorted_features(embed_with(b_jpg, [e_clean], amp=False, **kw)[0])
    bamp = _sorted_features(embed_with(b_jpg, [e_amp], amp=True, **kw)[0])

    # -- rows
    ips = {c.name: [c.n / s for s in c.seconds] for c in contenders if c.seconds}
    med = {name: statistics.median(v) for name, v in ips.items()}
    rows = []
    for c in contenders:
        row = {"name": c.name, "n_images": c.n, "error": c.error, "seconds": c.seconds, "images_per_s": ips.get(c.name)}
        if c.seconds and not c.error:
            m = med[c.name]
            ceiling = "amp" if c.name in AMP_ROWS else "fp32"
            ref = med.get("model only amp" if ceiling == "amp" else "model only fp32")
            row.update(rounds=len(c.seconds), median=m, min=min(ips[c.name]), max=max(ips[c.name]),
                       vs_pytorch_fid=m / med["pytorch-fid"] if "pytorch-fid" in med else None,
                       vs_torch_fidelity=m / med["torch-fidelity"] if "torch-fidelity" in med else None,
                       ceiling=ceiling, share_of_ceiling=m / ref if ref else None)
        rows.append(row)
    by = {c.name: c for c in contenders}
    order = [by[name] for name in ROWS if name in by]
    rows = [next(r for r in rows if r["name"] == c.name) for c in order]

    print()
    print(f"embedding throughput, {n} images of {args.size}x{args.size} px, batch {bs}, {args.workers} workers, "
          f"{args.device}; median of {args.rounds} round(s)")
    print_table(rows)
    print("timed: the whole call on the folder (listing, hashing for collapse-audit, worker start, decode, resize, model, "
          "features back on the host); model build and one warm-up call per tool excluded. "
          "'of model ceiling': the row's rate / the model-only rate of the same arithmetic (fp32 or amp).")
    amp_name = "float16" if cuda else "bfloat16"
    print(f"--amp / model only amp: torch.autocast({'cuda' if cuda else 'cpu'}, {amp_name}) with channels_last; "
          f"model only: the network on {n} preprocessed 299x299 tensors already on the device, "
          f"{threads} torch thread(s){', channels_last' if cuda else ''}.")
    if not cuda and nw > 0:
        print(f"threads: collapse-audit runs the model with {pipe_threads} torch thread(s) next to its {nw} decode "
              f"worker(s) (collapse_audit.embedding keeps every thread for the model); pytorch-fid keeps "
              f"{threads} thread(s) next to its {args.workers} worker(s); torch-fidelity uses "
              f"min(4, 2 x cores) = {min(4, 2 * (os.cpu_count() or 1))} workers whatever --workers says.")

    # -- stage breakdown
    m32 = 1000 / med["model only fp32"] if "model only fp32" in med else None
    mamp = 1000 / med["model only amp"] if "model only amp" in med else None
    stage_rows = [("hash (sha256 of the file)", stages["hash_sha256"]),
                  ("decode JPEG (decode.load_rgb)", stages["decode_jpeg"]),
                  ("decode PNG (decode.load_rgb)", stages["decode_png"]),
                  ("resize clean (preprocess_clean)", stages["resize_clean"]),
                  ("resize pytorch-fid (preprocess_pytorch_fid)", stages["resize_pytorch_fid"]),
                  (f"model fp32 ({threads} threads)", m32), (f"model amp ({threads} threads)", mamp)]
    if "model_fp32_pipeline_threads" in stages:
        stage_rows += [(f"model fp32 ({pipe_threads} thread, one batch)", stages["model_fp32_pipeline_threads"]),
                       (f"model amp ({pipe_threads} thread, one batch)", stages["model_amp_pipeline_threads"])]
    print()
    print(f"stage breakdown, one process, {n} JPEGs / PNGs of {args.size} px (ms per image):")
    for label, ms in stage_rows:
        print(f"  {label:<46} {ms:>8.2f} ms" if ms is not None else f"  {label:<46} {'-':>8}")
    if m32:
        cpu_ms = stages["hash_sha256"] + stages["decode_jpeg"] + stages["resize_clean"]
        print(f"  hash + decode + clean resize = {cpu_ms:.2f} ms/image = {100 * cpu_ms / (cpu_ms + m32):.0f}% of the "
              f"serial fp32 time per image ({cpu_ms + m32:.1f} ms, {1000 / (cpu_ms + m32):.2f} images/s without overlap)")

    # -- accuracy
    acc: dict = {}
    ours_pf, pf = by[ROWS[1]].features, by["pytorch-fid"].features if "pytorch-fid" in by else None
    print()
    print("accuracy:")
    if ours_pf is not None and pf is not None and ours_pf.shape == pf.shape:
        d = float(np.abs(ours_pf - pf).max())
        acc["parity_max_abs_diff"] = d
        acc["parity_feature_max_abs"] = float(np.abs(pf).max())
        print(f"  parity: collapse-audit fp32 (pytorch-fid preprocessing) vs pytorch-fid, same {n} JPEGs: "
              f"max abs difference {d:.2e} (features up to {acc['parity_feature_max_abs']:.3g} in absolute value)")
    else:
        print("  parity: not measured (pytorch-fid did not run)")
    a32, aamp = by[ROWS[0]].features, by[ROWS[2]].features
    if a32 is not None and aamp is not None:
        r = float(np.corrcoef(a32.ravel().astype(np.float64), aamp.ravel().astype(np.float64))[0, 1])
        dmax = float(np.abs(a32 - aamp).max())
        f32 = fid(a32, b32).fid
        famp = fid(aamp, bamp).fid
        rel = 100 * (famp - f32) / f32 if f32 else float("nan")
        acc.update(amp_pearson_r=r, amp_max_abs_diff=dmax, amp_feature_mean_abs=float(np.abs(a32).mean()),
                   fid_ab_fp32=f32, fid_ab_amp=famp, fid_ab_rel_change_pct=rel, amp_dtype=amp_name)
        print(f"  --amp ({amp_name}) vs fp32, clean preprocessing, set A: Pearson r {r:.6f} over all "
              f"{a32.size} feature values, max abs difference {dmax:.3g} (mean |feature| "
              f"{acc['amp_feature_mean_abs']:.3g})")
        print(f"  FID(set A, set B), {n} vs {n} images: fp32 {f32:.4f}, --amp {famp:.4f}, change {rel:+.3f}%")
    png, jpg = by[ROWS[4]].features, a32
    if png is not None and jpg is not None:
        acc["png_vs_jpeg_max_abs_diff"] = float(np.abs(png - jpg).max())
    cached = by[ROWS[3]].features
    if cached is not None and a32 is not None:
        acc["cached_vs_fp32_max_abs_diff"] = float(np.abs(cached - a32).max())
        print(f"  cached vs computed fp32 features: max abs difference {acc['cached_vs_fp32_max_abs_diff']:.2e}")

    return {"machine": mach, "settings": {"images": n, "size": args.size, "device": args.device, "batch_size": bs,
                                          "workers": args.workers, "rounds": args.rounds, "quick": args.quick,
                                          "jpeg_quality": JPEG_QUALITY, "weights": f"random_fid_state_dict({WEIGHTS_SEED})",
                                          "pipeline_model_threads": pipe_threads, "torch_threads": threads},
            "rows": rows, "stages_ms_per_image": {**stages, "model_fp32": m32, "model_amp": mamp},
            "accuracy": acc, "clean_fid": _has("cleanfid")}


def _pct(v: float | None) -> str:
    return f"{100 * v:.0f}%" if v is not None else "?"


def _has(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


if __name__ == "__main__":
    raise SystemExit(main())
