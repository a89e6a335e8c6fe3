"""The command line: parses, calls the pipeline, prints. No logic of its own.

Exit codes (DESIGN.md): 0 ok, 1 a gate rule failed, 2 usage or input error,
3 internal error (a bug; the message says how to get the traceback).
"""
from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from . import config as C
from . import gate as G
from . import report_cli
from . import weights as W
from .config import AnalysisConfig
from .config import AuditConfig as ScanConfig
from .errors import EXIT_USAGE, CollapseAuditError, CollapseAuditWarning, UsageError
from .interpret import interpret
from .keys import HEADLINE
from .outputs import check_output_dir, check_output_file

app = typer.Typer(
    name="collapse-audit",
    help="Audit generated images against real images for mode collapse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
models_app = typer.Typer(help="List, fetch, import and locate model weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")

class _SafeStream:
    """A text stream that survives a closed reader (``collapse-audit scan ... | head``).

    On the first broken pipe, the file descriptor is pointed at /dev/null and
    the run goes on, so the exit code keeps its meaning (0 ok, 1 gate failed).
    """

    def __init__(self, name: str):
        self._name = name
        self.broken = False

    @property
    def _stream(self):
        return getattr(sys, self._name)

    def write(self, s: str) -> int:
        if self.broken:
            return len(s)
        try:
            return self._stream.write(s)
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self._silence()
            return len(s)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self._stream.flush()
        except (BrokenPipeError, ValueError):
            self._silence()

    def _silence(self) -> None:
        self.broken = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except ValueError:
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")


# Markup is off everywhere: paths, labels, rules and policy texts are the user's
# and may contain '[/]'; styles are given with style= or Text, never in strings.
out = Console(file=_SafeStream("stdout"), highlight=False, soft_wrap=True, markup=False, emoji=False)
err = Console(file=_SafeStream("stderr"), highlight=False, soft_wrap=True, markup=False, emoji=False)

AMP_HELP = ("Mixed precision: float16 on CUDA, bfloat16 on CPU (AMX / AVX-512 BF16). Faster; features differ slightly "
            "from float32 and get their own embedder id and cache entries.")
DECODE_HELP = ("Where JPEGs are decoded and resized: 'pil' (Pillow in the worker processes), 'device' (batched on the "
               "model's device: nvJPEG on CUDA, Inception only), 'auto' (device on CUDA when possible, else pil).")
EMBEDDER_HELP = "Embedder: inception[:clean|:pytorch-fid] or clip[:ARCH/PRETRAINED] (default clip is ViT-B-32/openai)."
WEIGHTS_HELP = "Weights: 'pretrained' (default), 'random' (seeded, for tests/offline), or NAME=PATH / NAME=random per embedder (e.g. inception=pt_inception.pth). Repeatable."


def _decode_mode(value: str) -> str:
    """--decode: one of auto, pil, device (checked before any work)."""
    v = (value or "auto").strip().lower()
    if v not in ("auto", "pil", "device"):
        raise typer.BadParameter(f"{value!r}: use auto, pil or device")
    return v


def _in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
              allow_inf: bool = False):
    """A Typer callback that refuses NaN (and infinity unless allowed) and values outside [lo, hi] (open ends if asked)."""
    import math

    def check(value):
        if value is None:
            return value
        v = float(value)
        if math.isnan(v) or (math.isinf(v) and not allow_inf):
            raise typer.BadParameter(f"{value} is not a finite number")
        bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
        if bad_lo or bad_hi:
            lb = "(" if lo_open else "["
            hb = ")" if hi_open else "]"
            raise typer.BadParameter(f"{value} is outside {lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hb}")
        return value

    return check


SEED_MAX = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit


def _version(value: bool):
    if value:
        out.print(f"collapse-audit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
):
    """Audit generated images against real images for mode collapse."""


# --------------------------------------------------------------------------- embed
@app.command()
def embed(
    folder: Path = typer.Argument(..., help="Folder of images (searched recursively)."),
    output: Path = typer.Option(..., "-o", "--output", help="Embeddings file to write (.npz)."),
    embedder: str = typer.Option("inception", "--embedder", "-e", help=EMBEDDER_HELP),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    seed: int = typer.Option(C.SEED, "--seed", min=0, max=SEED_MAX, help="Seed for random weights."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    batch_size: int = typer.Option(C.BATCH_SIZE, "--batch-size", min=1, help="Images per model call."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding worker processes (default: min(8, CPUs))."),
    amp: bool = typer.Option(False, "--amp", help=AMP_HELP),
    decode: str = typer.Option("auto", "--decode", callback=_decode_mode, help=DECODE_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Cache for weights and features (default: $COLLAPSE_AUDIT_CACHE or the user cache dir)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every file again instead of trusting the cache's (size, mtime, ctime, inode) shortcut (also: COLLAPSE_AUDIT_REHASH=1)."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars (default: on a terminal, off in CI)."),
    stats_out: Optional[Path] = typer.Option(None, "--stats-out", help="Also write reusable FID statistics (mean, covariance, count, embedder id) for 'scan --real STATS.npz'."),
    engine: str = typer.Option("local", "--engine", help="Embedding engine: local (DataLoader workers + one device) or ray (Ray Data cluster)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join ('auto' = the one started by 'ray start --head'); default: start a local instance."),
    shard_dir: Optional[Path] = typer.Option(None, "--shard-dir", help="Ray engine: folder (shared storage) for feature shards; default: via Ray's object store."),
):
    """Embed a folder of images into an .npz file (features, paths, embedder id, failures)."""
    from .pipeline import embed_to_file

    res, path = embed_to_file(
        folder, output, embedder=embedder, weights=weights, seed=seed, device=device, batch_size=batch_size,
        workers=workers, amp=amp, decode=decode, cache_dir=cache_dir, use_cache=not no_cache, offline=offline, progress=progress,
        engine=engine, ray_address=ray_address, shard_dir=str(shard_dir) if shard_dir else None, stats_out=stats_out,
        rehash=True if rehash else None,
    )
    e = res.embedders[0]
    s = res.stats
    if e.random_weights:
        err.print(f"WARNING: {e.name} uses RANDOM weights (seed {e.seed}): features are a baseline, not comparable with published FIDs", style="bold yellow")
    out.print(
        f"embedded {s['n_embedded']} of {s['n_files']} files with {e.id} "
        f"({s['n_from_cache']} from cache, {s['n_computed']} computed, {s['n_failed']} failed) in {s['seconds']:.1f}s -> {path}"
    )
    if stats_out:
        out.print(f"statistics -> {stats_out}")
    _print_failures(res.failures)


def _print_failures(failures, side: str | None = None, limit: int = 20):
    if not failures:
        return
    t = Table(title=f"{len(failures)} file(s) could not be used" + (f" ({side})" if side else ""), title_justify="left")
    t.add_column("path", overflow="fold")
    t.add_column("reason", overflow="fold")
    for f in failures[:limit]:
        t.add_row(f["path"], f["reason"])
    if len(failures) > limit:
        t.add_row(f"... and {len(failures) - limit} more", "(all listed in the output file)")
    err.print(t)


# --------------------------------------------------------------------------- scan
@app.command()
def scan(
    gen: Path = typer.Argument(..., help="Generated images: a folder or an .npz embeddings file."),
    real: Path = typer.Option(..., "--real", "-r", help="Real images: a folder, an .npz embeddings file (from 'collapse-audit embed'), or a statistics file (embed --stats-out; FID only)."),
    out_dir: Path = typer.Option(Path("collapse-audit-out"), "--out", "-o", help="Output folder for results.json (and report.html)."),
    embedder: Optional[List[str]] = typer.Option(None, "--embedder", "-e", help=EMBEDDER_HELP + " Repeatable; the first is primary. Default for folders: inception and clip."),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    seed: int = typer.Option(C.SEED, "--seed", min=0, max=SEED_MAX, help="Seed for random weights, KID subsets, bootstrap, clustering."),
    k: int = typer.Option(C.K, "--k", min=1, help="Neighbours for precision/recall/density/coverage."),
    kid_subsets: int = typer.Option(C.KID_SUBSETS, "--kid-subsets", min=1, help="KID: number of random subsets."),
    kid_subset_size: int = typer.Option(C.KID_SUBSET_SIZE, "--kid-subset-size", min=2, help="KID: subset size (capped at the smaller set)."),
    bootstrap: int = typer.Option(C.BOOTSTRAP, "--bootstrap", min=0, help="Bootstrap resamples for 95% intervals of precision/recall/density/coverage (0 = off)."),
    fail_on: Optional[List[str]] = typer.Option(None, "--fail-on", help="Gate rule 'NAME OP NUMBER' that FAILS the scan when true, e.g. 'coverage<0.8'. Repeatable."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="TOML file of gate rules (fail_on = [...])."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write the gate as a JUnit XML file (one test case per rule)."),
    clusters: Optional[int] = typer.Option(None, "--clusters", min=2, help="k-means clusters of the real set for mode dropout (default: grows with N)."),
    cluster_space: Optional[str] = typer.Option(None, "--cluster-space", help="Embedder used for clusters, duplicates and the UMAP (default: CLIP if present, else the primary)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="'folders': class = top-level sub-folder name."),
    manifest: Optional[Path] = typer.Option(None, "--manifest", help="CSV with columns path,label[,side][,attribute columns...]; paths relative to each side's root."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Comma-separated class names for CLIP zero-shot classification of both sides."),
    classes_file: Optional[Path] = typer.Option(None, "--classes-file", help="File with one class name per line (zero-shot)."),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="TorchScript classifier PATH[?size=..&mean=..&std=..] with class_names in its metadata."),
    subgroup: Optional[List[str]] = typer.Option(None, "--subgroup", help="Zero-shot attribute 'name=prompt A|prompt B' (or 'name=a:prompt|b:prompt'). Repeatable."),
    intersect: Optional[List[str]] = typer.Option(None, "--intersect", help="Also analyse the intersection of two attributes 'A,B'. Repeatable."),
    dup_threshold: Optional[float] = typer.Option(None, "--dup-threshold", callback=_in_range(0.0, 2.0), help="Cosine distance under which two generated images are near-duplicates."),
    copy_quantile: float = typer.Option(C.COPY_QUANTILE, "--copy-quantile", callback=_in_range(0.0, 1.0, lo_open=True, hi_open=True), help="Near-copy threshold = this quantile of real-to-real nearest-neighbour distances."),
    alpha: float = typer.Option(C.ALPHA, "--alpha", callback=_in_range(0.0, 1.0, lo_open=True, hi_open=True), help="False discovery rate for the dropout tests (Benjamini-Hochberg)."),
    no_analysis: bool = typer.Option(False, "--no-analysis", help="Metrics only: skip clusters, classes, subgroups and duplicates."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write report.html (results.json only)."),
    real_images: Optional[Path] = typer.Option(None, "--real-images", help="Image folder of an .npz --real side, for the report's thumbnails (paths in the file are relative to it; a features file never chooses which files are read)."),
    gen_images: Optional[Path] = typer.Option(None, "--gen-images", help="Image folder of an .npz generated side, for the report's thumbnails."),
    fd_inf: bool = typer.Option(False, "--fd-inf", help="Also FD-infinity: FID extrapolated to infinitely many samples (15 more FIDs on generated subsamples; Chong & Forsyth 2020)."),
    exact_max_pairs: float = typer.Option(C.EXACT_MAX_PAIRS, "--exact-max-pairs", callback=_in_range(0.0, None, allow_inf=True), help="Above this many real x generated pairs (default 50k x 50k), nearest-neighbour searches use an approximate FAISS IVF index and the measured error is reported."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    batch_size: int = typer.Option(C.BATCH_SIZE, "--batch-size", min=1),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Decoding worker processes."),
    amp: bool = typer.Option(False, "--amp", help=AMP_HELP),
    decode: str = typer.Option("auto", "--decode", callback=_decode_mode, help=DECODE_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Weights and feature cache."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    rehash: bool = typer.Option(False, "--rehash", help="Hash every file again instead of trusting the cache's (size, mtime, ctime, inode) shortcut (also: COLLAPSE_AUDIT_REHASH=1)."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress"),
    engine: str = typer.Option("local", "--engine", help="Embedding engine: local (DataLoader workers + one device) or ray (Ray Data cluster)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster to join ('auto' = the one started by 'ray start --head'); default: start a local instance."),
    shard_dir: Optional[Path] = typer.Option(None, "--shard-dir", help="Ray engine: folder (shared storage) for feature shards; default: via Ray's object store."),
):
    """Compare generated images with real ones: metrics, results.json, and a CI gate (exit 1 when a rule fails)."""
    from .api import audit

    rules = [G.parse_rule(r) for r in (fail_on or [])]
    if policy is not None:
        rules += G.load_policy(policy)
    if rules:  # every rule's key, and the analysis it needs, before any work
        columns = _manifest_columns(manifest)
        G.check_rules_static(
            rules,
            has_labels=bool(labels or classes or classes_file or classifier)
            or (manifest is not None and (columns is None or "label" in columns))
            or any(_features_have_labels(p) for p in (gen, real)),
            has_subgroups=bool(subgroup)
            or (manifest is not None and (columns is None or bool(columns - {"path", "label", "side"}))),
            analysis=not no_analysis,
        )
    if labels not in (None, "folders"):
        raise UsageError(f"--labels {labels}: the only label source by name is 'folders' (use --manifest, --classes or --classifier)")
    class_list = None
    if classes or classes_file:
        from .labels import parse_classes

        class_list = parse_classes(classes, str(classes_file) if classes_file else None)
    pairs = []
    for it in intersect or []:
        a, _, b = it.partition(",")
        if not a.strip() or not b.strip():
            raise UsageError(f"--intersect '{it}': use two attribute names separated by a comma")
        pairs.append((a.strip(), b.strip()))
    if manifest is not None and not manifest.is_file():
        raise UsageError(f"--manifest {manifest}: no such file")
    acfg = AnalysisConfig(
        space=cluster_space, clusters=clusters, alpha=alpha, labels=labels,  # seed, k: from the AuditConfig
        manifest=str(manifest) if manifest else None, classes=class_list, subgroups=list(subgroup or []),
        intersections=pairs, dup_threshold=dup_threshold, copy_quantile=copy_quantile, skip=no_analysis,
    )
    if subgroup:
        from .labels import parse_subgroup

        for sgs in subgroup:
            parse_subgroup(sgs)  # syntax errors before any work
    cfg = ScanConfig(
        embedders=embedder, weights=weights, seed=seed, device=device, batch_size=batch_size, workers=workers,
        amp=amp, decode=decode, fd_infinity=fd_inf, cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache,
        offline=offline, progress=progress, k=k, kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, bootstrap=bootstrap,
        command=["collapse-audit", *sys.argv[1:]] if sys.argv and "collapse" in sys.argv[0] else None,
        classifier=classifier, analysis=acfg, engine=engine, ray_address=ray_address, exact_max_pairs=exact_max_pairs,
        shard_dir=str(shard_dir) if shard_dir else None,
        real_images=str(real_images) if real_images else None, gen_images=str(gen_images) if gen_images else None,
        rehash=True if rehash else None,
    )
    # every output path is checked before the work; results.json is written before anything else that can fail
    out_path = check_output_dir(out_dir)
    if junit:
        check_output_file(junit, what="the JUnit XML", option="--junit")
    G.check_github_summary()
    res = audit(gen, real, cfg)
    gate_result = res.check(rules)
    path = res.write(out_path, report=not no_report, junit=junit)
    results = res.to_dict()
    _print_scan_summary(results)
    _print_failures([f for f in results["failures"]], limit=10)
    out.print(f"results: {path}")
    if (path.parent / "report.html").exists() and not no_report:
        out.print(f"report:  {path.parent / 'report.html'}")
    _finish_gate(gate_result, len(rules))


@app.command()
def track(
    inputs: List[Path] = typer.Argument(..., help="A run folder with one sub-folder or .npz per checkpoint (ordered by the number in its name), or several checkpoints."),
    real: Path = typer.Option(..., "--real", "-r", help="Real images: a folder or an .npz embeddings file (embedded once, cached)."),
    out_dir: Path = typer.Option(Path("collapse-audit-track"), "--out", "-o", help="Output folder for track.json and track.html."),
    steps: Optional[Path] = typer.Option(None, "--steps", help="CSV with columns path,step giving each checkpoint's step (instead of the number in its name)."),
    order: str = typer.Option("step", "--order", help="'step' (a training run) or 'generation' (models trained on their predecessors' outputs: tail loss is reported)."),
    embedder: str = typer.Option("inception", "--embedder", "-e", help=EMBEDDER_HELP),
    weights: Optional[List[str]] = typer.Option(None, "--weights", help=WEIGHTS_HELP),
    seed: int = typer.Option(C.SEED, "--seed", min=0, max=SEED_MAX, help="Seed for random weights, KID subsets, bootstrap, clustering."),
    k: int = typer.Option(C.K, "--k", min=1, help="Neighbours for precision/recall/density/coverage."),
    clusters: Optional[int] = typer.Option(None, "--clusters", min=2, help="k-means clusters of the real set (default: grows with N)."),
    alpha: float = typer.Option(C.ALPHA, "--alpha", callback=_in_range(0.0, 1.0, lo_open=True, hi_open=True), help="False-alarm budget of the whole run for the collapse onset; intervals are at level 1-alpha."),
    bootstrap: int = typer.Option(C.TRACK_BOOTSTRAP, "--bootstrap", min=0, help="Bootstrap resamples for each checkpoint's precision/recall/density intervals (0 = off; coverage's standard error is always estimated)."),
    kid_subsets: int = typer.Option(C.KID_SUBSETS, "--kid-subsets", min=1, help="KID: number of random subsets."),
    kid_subset_size: int = typer.Option(C.KID_SUBSET_SIZE, "--kid-subset-size", min=2, help="KID: subset size (capped at the smaller set)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="'folders': class = top-level sub-folder name (real images; checkpoints too unless --classifier)."),
    classifier: Optional[str] = typer.Option(None, "--classifier", help="TorchScript classifier PATH[?size=..&mean=..&std=..] with class_names in its metadata: labels every checkpoint's images."),
    fail_on: Optional[List[str]] = typer.Option(None, "--fail-on", help="Gate rule over the run, e.g. 'onset_detected>0', 'hopping_clusters>0', 'final_coverage<0.8', 'never_learned>0', 'final_dropped_classes>0'. Repeatable."),
    follow: bool = typer.Option(False, "--follow", help="Keep watching the run folder while training writes to it; each new checkpoint is audited once complete."),
    poll: float = typer.Option(30.0, "--poll", callback=_in_range(0.0, None, lo_open=True), help="--follow: seconds between looks at the folder."),
    idle_timeout: float = typer.Option(600.0, "--idle-timeout", callback=_in_range(0.0, None), help="--follow: stop after this many seconds without a new checkpoint."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not write track.html."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    batch_size: int = typer.Option(C.BATCH_SIZE, "--batch-size", min=1),
    workers: Optional[int] = typer.Option(0, "--workers", min=0, help="Decoding worker processes."),
    amp: bool = typer.Option(False, "--amp", help=AMP_HELP),
    decode: str = typer.Option("auto", "--decode", callback=_decode_mode, help=DECODE_HELP),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="Weights and feature cache."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the feature cache."),
    offline: bool = typer.Option(False, "--offline", help="Never download weights."),
):
    """Audit the checkpoints of a training run (or model generations) over time: onset of collapse, mode hopping, alerts."""
    from . import track as T

    rules = [G.parse_rule(r, aliases=G.TRACK_ALIASES) for r in (fail_on or [])]
    if order not in ("step", "generation"):
        raise UsageError(f"--order {order}: use 'step' or 'generation'")
    if follow and (len(inputs) != 1 or not inputs[0].is_dir()):
        raise UsageError("--follow watches one run folder: give exactly one folder")
    if not real.exists():
        raise UsageError(f"--real {real}: no such file or folder")
    if labels not in (None, "folders"):
        raise UsageError(f"--labels {labels}: the only label source by name is 'folders' (or use --classifier)")
    class_rules = [r.text for r in rules if r.alias in G.TRACK_CLASS_ALIASES]
    if class_rules and not (labels or classifier or _features_have_labels(real)):
        raise UsageError(f"rule {class_rules[0]!r} needs classes: give --labels folders or --classifier MODEL.pt "
                         "(or real features with labels)")
    checkpoints = [] if follow else T.discover_checkpoints(inputs, steps_csv=steps)
    out_path = check_output_dir(out_dir)
    cfg = C.TrackConfig(
        embedder=embedder, weights=weights, seed=seed, k=k, clusters=clusters, alpha=alpha, bootstrap=bootstrap, order=order,
        kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, labels=labels, classifier=classifier,
        device=device, batch_size=batch_size, workers=workers, amp=amp, decode=decode, cache_dir=str(cache_dir) if cache_dir else None,
        use_cache=not no_cache, offline=offline,
    )

    def show(c, found, seconds):
        m, cl = found["checkpoint"]["metrics"], found["checkpoint"]["clusters"]
        out.print(f"{c.name:>16}  step {c.step:>8}  coverage {_fmt(m.get('coverage'))}  recall {_fmt(m.get('recall'))}  "
                  f"FID {_fmt(m.get('fid'))}  clusters covered {cl['n_covered']}/{len(cl['status'])}  ({seconds:.1f} s)")
        for a in found["alerts"]:
            (err if a["severity"] == "error" else out).print(Text.assemble(("ALERT" if a["severity"] == "error" else "warning",
                                                                           "bold red" if a["severity"] == "error" else "yellow"), f": {a['message']}"))

    def write(tr):
        tr.write(out_path, html=not no_report)

    if follow:
        tr = T.follow_run(inputs[0], real, cfg, poll_s=poll, idle_s=idle_timeout, on_checkpoint=show, write=write)
    else:
        tr = T.track_run(checkpoints, real, cfg, on_checkpoint=show)
    gate_result = tr.check(rules)
    path = tr.write(out_path, html=not no_report, gate=gate_result if rules else None)
    run = tr.to_dict()["run"]
    _print_track_summary(run)
    out.print(f"track:   {path}")
    if not no_report:
        out.print(f"report:  {path.parent / 'track.html'}")
    _finish_gate(gate_result, len(rules))


def _finish_gate(gate_result, n_rules: int) -> None:
    """Print the gate's verdict (scan and track); exit 1 when a rule failed."""
    if not gate_result.passed:
        for v in gate_result.violations:
            err.print(Text.assemble(("GATE FAILED", "bold red"), f": {v.message}"))
        raise typer.Exit(1)
    if n_rules:
        out.print(Text.assemble(("gate passed", "green"), f" ({n_rules} rule(s))"))


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def _print_track_summary(run: dict) -> None:
    onset = run.get("onset")
    out.print(Text.assemble(("onset: ", "bold"), f"step {onset['step']} ({onset['name']})" if onset else "none detected"))
    hop = run.get("hopping") or {}
    ids = [str(c["id"]) for c in hop.get("clusters", [])]
    out.print(Text.assemble(("hopping clusters: ", "bold"), ", ".join(ids) if ids else "none",
                            ("  (oscillating run)" if hop.get("oscillating") else "")))
    nl = run.get("never_learned") or []
    out.print(Text.assemble(("never learned: ", "bold"), ", ".join(map(str, nl)) if nl else "none"))
    cls = run.get("classes")
    if cls:
        lost = ", ".join(f"{x['name']} (since step {x['dropped_since_step']})" for x in cls["lost"]) or "none"
        out.print(Text.assemble(("classes dropped at the end: ", "bold"), ", ".join(cls["dropped_final"]) or "none",
                                f"  (lost after being covered: {lost})"))
    best = run.get("best_checkpoint")
    if best:
        out.print(Text.assemble(("best checkpoint: ", "bold"), f"step {best['step']} ({best['name']})"))


def _manifest_columns(manifest: Optional[Path]) -> Optional[set]:
    """The header of a manifest CSV (first record only), or None when there is none or it cannot be read here.

    None means "unknown": the gate's pre-check then assumes the manifest may
    hold labels and attributes, and the manifest's own errors come later.
    """
    if manifest is None:
        return None
    import csv
    import io

    try:
        with open(manifest, "rb") as f:
            head = f.read(1 << 16)
        if head.startswith(b"\xef\xbb\xbf"):
            head = head[3:]
        row = next(csv.reader(io.StringIO(head.decode("utf-8", errors="replace"), newline="")))
    except (OSError, StopIteration, csv.Error):
        return None
    return {c.strip() for c in row}


def _features_have_labels(path: Path) -> bool:
    """Whether ``path`` is an embeddings file with a ``labels`` member (its zip directory only; no array is read)."""
    import zipfile

    try:
        if path.suffix.lower() != ".npz" or not path.is_file():
            return False
        with zipfile.ZipFile(path) as z:
            return any(n in ("labels", "labels.npy") for n in z.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return True  # unreadable here: let the loader say why, later; do not refuse the rule for it


def _print_scan_summary(results: dict):
    for n in results.get("notes", []):
        style = "bold yellow" if n.startswith("RANDOM") else "yellow"
        err.print(Text.assemble(("note:", style), f" {n}"))
    ins = results["inputs"]
    out.print(f"real: {ins['real']['n_images']} images ({ins['real']['n_failed']} failed) | "
              f"generated: {ins['gen']['n_images']} images ({ins['gen']['n_failed']} failed)")
    for eid, block in results["by_embedder"].items():
        m = block["metrics"]
        t = Table(title=f"{eid}" + ("  [primary]" if eid == results["primary_embedder"] else ""), title_justify="left")
        t.add_column("metric")
        t.add_column("value", justify="right")
        t.add_column("what it means", overflow="fold")
        notes = interpret(m)
        for spec in HEADLINE:
            key = spec.leaf
            v = m.get(key)
            val = "-" if v is None else (f"{v:{spec.fmt}}" if not spec.spread else f"{v:{spec.fmt}} +/- {m.get(spec.spread) or 0:.2g}")
            ci = (m.get("ci") or {}).get(key)
            if ci:
                val += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
            t.add_row(key, val, notes.get(key, "not computed (see notes)"))
        out.print(t)
    _print_findings(results)


def _print_findings(results: dict):
    """One line per analysis finding: what was dropped, skewed, duplicated or copied."""
    lines = []
    c = results.get("clusters")
    if c:
        lines.append(f"clusters: {len(c['dropped'])} of {c['k']} dropped, {len(c.get('under', []))} under-represented "
                     f"(NDB/K = {c['ndb_fraction']:.2f}, in {c['embedder']})")
    k = results.get("classes")
    if k:
        agree = (k.get("classifier") or {}).get("agreement")
        extra = f"; classifier agreement {agree:.0%}" if agree is not None else ""
        lines.append(f"classes ({k['source']}): dropped {', '.join(k['dropped']) or 'none'}; "
                     f"under {', '.join(k.get('under', [])) or 'none'}; max gap {k['max_gap']:.1%}{extra}")
    sg = results.get("subgroups")
    if sg:
        for a in sg.get("attributes", []):
            if a.get("max_gap") is None:
                continue
            tag = " (perceived, estimated by a model)" if a.get("perceived") else ""
            lines.append(f"subgroup {a['name']}{tag}: max gap {a['max_gap']:.1%} ({a.get('max_gap_group')}); "
                         f"dropped {', '.join(a.get('dropped', [])) or 'none'}")
    d = results.get("duplicates")
    if d:
        w, g = d["within_gen"], d["gen_vs_real"]
        lines.append(f"duplicates: {w['dup_fraction']:.1%} of generated images are near-duplicates ({w['n_groups']} groups); "
                     f"{g['memorized_fraction']:.1%} are near-copies of real images ({g['n_memorized']})")
    for line in lines:
        out.print(line)


# --------------------------------------------------------------------------- models
@models_app.command("list")
def models_list(cache_dir: Optional[Path] = typer.Option(None, "--cache-dir")):
    """List known weights, where they come from and whether they are present."""
    from .embedders import clip_import_path, clip_source, DEFAULT_CLIP

    t = Table(title=f"weights cache: {W.weights_dir(cache_dir)}", title_justify="left")
    for c in ("name", "source", "expected SHA-256", "present at"):
        t.add_column(c, overflow="fold")
    for name, s in W.REGISTRY.items():
        p = W.expected_path(name, cache_dir)
        t.add_row(name, s.url, s.expected, str(p) if p.exists() else "- (missing)")
    arch, _, tag = DEFAULT_CLIP.partition("/")
    local = clip_import_path(arch, tag, cache_dir)
    t.add_row(f"clip:{DEFAULT_CLIP}", clip_source(arch, tag), "checked by open_clip",
              str(local) if local else "open_clip cache (downloaded on first use)")
    out.print(t)
    out.print("Any open_clip model works as clip:ARCH/PRETRAINED; see open_clip.list_pretrained().")


@models_app.command("fetch")
def models_fetch(
    name: str = typer.Argument(..., help="inception or clip[:ARCH/PRETRAINED]"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
):
    """Download and verify weights ahead of time."""
    from .pipeline import fetch_weights

    path = fetch_weights(name, cache_dir)
    out.print(f"{name}: ready at {path}")


@models_app.command("import")
def models_import(
    name: str = typer.Argument(..., help="inception or clip:ARCH/PRETRAINED"),
    file: Path = typer.Argument(..., help="Weights file copied by hand."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir"),
):
    """Import a weights file copied by hand (for machines without internet)."""
    from .pipeline import import_weights

    dest, digest = import_weights(name, file, cache_dir)
    out.print(f"{name}: imported {file} -> {dest} (SHA-256 {digest})")


@models_app.command("path")
def models_path(name: str = typer.Argument(...), cache_dir: Optional[Path] = typer.Option(None, "--cache-dir")):
    """Print where the weights file for NAME lives (or must be put)."""
    from .pipeline import weights_path

    out.print(str(weights_path(name, cache_dir)))


# --------------------------------------------------------------------------- report / compare
def _register_report_commands():
    report_cli.register(app, out, err)


try:
    _register_report_commands()
except ImportError:  # pragma: no cover - during development only
    pass


# --------------------------------------------------------------------------- entry point
def _click_exceptions():
    """The Click exception classes in play: typer >= 0.29 ships its own copy of Click
    (``typer._click``), older typer uses the ``click`` package; catch both."""
    mods = []
    try:
        from typer._click import exceptions as bundled  # typer >= 0.29

        mods.append(bundled)
    except ImportError:  # pragma: no cover - older typer
        pass
    try:
        from click import exceptions as standalone

        mods.append(standalone)
    except ImportError:  # pragma: no cover - click not installed
        pass

    def grab(name):
        return tuple(getattr(m, name) for m in mods if hasattr(m, name))

    return grab("ClickException"), grab("UsageError"), grab("NoArgsIsHelpError"), grab("Exit"), grab("Abort")


# OS errors that come from the user's environment (full disk, permissions,
# read-only file system, a file where a folder should be), not from a bug.
_ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS", "ENOTDIR", "EISDIR", "EEXIST",
                                "ENAMETOOLONG", "EMFILE", "ENFILE", "EFBIG", "ENOENT", "EIO") if hasattr(errno, n)
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Warnings reach the user as one line; third-party library warnings only with COLLAPSE_AUDIT_DEBUG."""
    if issubclass(category, CollapseAuditWarning):
        err.print(f"collapse-audit: warning: {_one_line(message)}", style="yellow")
    elif os.environ.get("COLLAPSE_AUDIT_DEBUG"):
        err.print(f"{category.__name__} ({filename}:{lineno}): {_one_line(message)}")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it).

    Every user error ends in one line on stderr and exit 2 (DESIGN.md); only a
    bug ends in exit 3, with a one-line message and the traceback on request.
    """
    import warnings

    click_error, usage_error, no_args_error, click_exit, click_abort = _click_exceptions()
    cmd = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        warnings.simplefilter("default")
        try:
            rv = cmd.main(args=args, prog_name="collapse-audit", standalone_mode=False)
            return int(rv) if isinstance(rv, int) else 0
        except CollapseAuditError as e:
            err.print(f"collapse-audit: error: {_one_line(e)}")
            return e.exit_code
        except no_args_error as e:  # 'collapse-audit' or 'collapse-audit models' alone: the help
            ctx = getattr(e, "ctx", None)
            out.print(ctx.get_help() if ctx is not None else str(e))
            return EXIT_USAGE
        except click_exit as e:
            return e.exit_code
        except usage_error as e:
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path if ctx is not None else "collapse-audit"
            err.print(f"{where}: error: {_one_line(e.format_message())} (see '{where} --help')")
            return EXIT_USAGE
        except click_error as e:
            err.print(f"collapse-audit: error: {_one_line(e.format_message())}")
            return EXIT_USAGE
        except click_abort:
            err.print("collapse-audit: aborted")
            return 130
        except KeyboardInterrupt:
            err.print("collapse-audit: interrupted")
            return 130
        except OSError as e:
            if e.errno not in _ENVIRONMENT_ERRNOS or os.environ.get("COLLAPSE_AUDIT_DEBUG"):
                if os.environ.get("COLLAPSE_AUDIT_DEBUG"):
                    raise
                return _internal_error(e)
            where = f": {e.filename}" if e.filename else ""
            err.print(f"collapse-audit: error{where}: {e.strerror or _one_line(e)}; check the path, its permissions and the free space")
            return EXIT_USAGE
        except Exception as e:  # a bug: one line unless asked for the traceback
            if os.environ.get("COLLAPSE_AUDIT_DEBUG"):
                raise
            return _internal_error(e)


def _internal_error(e: BaseException) -> int:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    err.print(
        f"collapse-audit: internal error: {type(e).__name__}: {msg} "
        "(set COLLAPSE_AUDIT_DEBUG=1 for the traceback and please report it)"
    )
    return 3


def entry() -> None:  # pragma: no cover
    sys.exit(main())
