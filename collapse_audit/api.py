"""The public Python API: :func:`audit` and :func:`embed`, the top of the pipeline.

``collapse-audit scan`` is :func:`audit` plus :meth:`AuditResult.write` plus the
gate; Python users get the same numbers on arrays, tensors, feature files or
folders, inside a training loop or a notebook::

    >>> import numpy as np
    >>> from collapse_audit import audit
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(scale=8, size=(4, 16))
    >>> real = (centres[rng.integers(0, 4, 600)] + rng.standard_normal((600, 16))).astype(np.float32)
    >>> gen = (centres[rng.integers(0, 2, 400)] + rng.standard_normal((400, 16))).astype(np.float32)
    >>> res = audit(gen=gen, real=real)   # the generator produces two of the four modes
    >>> res.metrics["coverage"] < 0.6
    True

Nothing here prints, exits, or writes unless asked (:meth:`AuditResult.write`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import gate as G
from . import metrics as M
from .config import AuditConfig
from .embedding import embed_files, embed_folder
from .errors import InputError, UsageError
from .features import FeatureSet
from .outputs import check_output_dir, check_output_file, remove_stale_artefacts, write_atomic
from .pipeline import build_embedders, open_cache, resource_usage
from .report import render_report, write_report
from . import scan as _scan
from .scan import Side, side_from_featureset

__all__ = ["AuditResult", "audit", "embed", "FIDResult", "fid"]


# --------------------------------------------------------------------------- audit
@dataclass
class AuditResult:
    """What :func:`audit` found: ``to_dict()`` is exactly what ``results.json`` holds.

    Attributes
    ----------
    results : the ``results.json`` document (dict; see ``collapse_audit/schema/results.schema.json``).
    real, gen : the two sides as compared (features per embedder, paths, labels).
    config : the :class:`~collapse_audit.config.AuditConfig` of the run.
    """

    results: dict
    real: Side
    gen: Side
    config: AuditConfig
    verdict: G.GateResult | None = dataclasses.field(default=None, repr=False)

    def to_dict(self) -> dict:
        """The ``results.json`` document."""
        return self.results

    @property
    def metrics(self) -> dict:
        """The primary embedder's metrics (``results["metrics"]``): fid, kid, precision, recall, density, coverage, ..."""
        return self.results["metrics"]

    @property
    def gate(self) -> dict | None:
        """``results["gate"]`` once :meth:`check` ran (``passed``, ``violations``), else None."""
        return self.results.get("gate")

    def check(self, rules: Iterable[str | G.Rule]) -> G.GateResult:
        """Evaluate gate rules (``"coverage<0.8"``: the rule FAILS when true) and record the verdict in ``results``."""
        parsed = [r if isinstance(r, G.Rule) else G.parse_rule(r) for r in rules]
        self.verdict = G.evaluate(parsed, self.results)
        self.results["gate"] = self.verdict.to_dict()
        return self.verdict

    def write(self, out_dir: str | os.PathLike = "collapse-audit-out", *, report: bool = True,
              junit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Path:
        """Write ``results.json`` (first, so it survives anything later), then JUnit XML, the GitHub
        step summary (``GITHUB_STEP_SUMMARY`` in ``env``, default ``os.environ``) and ``report.html``.

        Files an earlier run left in ``out_dir`` (``report.html``, ``report_data.json``) are removed,
        so the folder holds one run. Returns the path of ``results.json``.
        """
        out = check_output_dir(out_dir)
        if junit:
            check_output_file(junit, what="the JUnit XML", option="--junit")
        G.check_github_summary(env)
        return _write(self, out, report=report, junit=junit, env=env)


def _write(res: AuditResult, out: Path, *, report: bool, junit, env) -> Path:
    results = res.results
    if res.verdict is None:
        res.check([])
    results["resources"] = resource_usage()
    remove_stale_artefacts(out)  # everything in the output folder belongs to this run
    path = out / "results.json"
    write_atomic(path, json.dumps(results, indent=2, allow_nan=False) + "\n", what="results.json")
    gate_result = res.verdict
    if junit:
        G.write_junit(gate_result, junit)
    G.append_github_summary(gate_result, results, env=env)
    if report:
        t0 = time.perf_counter()
        if res.real.kind == "stats":  # no real features: no map, no galleries
            render_report(results, None, out / "report.html")
        else:
            write_report(results, res.real, res.gen, out, seed=res.config.seed)
        results["timings"]["report"] = round(time.perf_counter() - t0, 3)
        results["resources"] = resource_usage()
        write_atomic(path, json.dumps(results, indent=2, allow_nan=False) + "\n", what="results.json")
    return path


def _as_side(x, name: str) -> Side | str | os.PathLike:
    """Arrays, tensors and FeatureSets become in-memory sides; paths stay paths (folder, .npz, statistics)."""
    if isinstance(x, (str, os.PathLike)):
        return x
    if isinstance(x, Side):
        return x
    if isinstance(x, FeatureSet):
        return side_from_featureset(x, name)
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor of features
        x = x.detach().cpu().numpy()
    if isinstance(x, np.ndarray):
        return side_from_featureset(FeatureSet(features=x, paths=[]), name)
    raise InputError(f"{name}: expected an N x D array, a FeatureSet or a path, got {type(x).__name__}")


def audit(gen, real, config: AuditConfig | None = None, **options: Any) -> AuditResult:
    """Audit generated samples against real ones: FID, KID, precision/recall/density/coverage,
    dropped clusters and classes, subgroup gaps, near-duplicates and near-copies.

    Parameters
    ----------
    gen, real : each an (N, D) array of features (NumPy or torch), a
        :class:`~collapse_audit.features.FeatureSet`, or a path: an image folder,
        an ``.npz`` features file (``collapse-audit embed``), or (``real`` only) a
        statistics file (ours, pytorch-fid's or clean-fid's ``mu``/``sigma``).
        Two arrays are assumed to come from the same embedder.
    config : :class:`~collapse_audit.config.AuditConfig` (defaults when None).
    **options : fields of ``AuditConfig`` overriding ``config`` (``k=10``, ``seed=1``, ...).

    Returns
    -------
    :class:`AuditResult`; ``to_dict()`` is the ``results.json`` document. Nothing is written.
    """
    cfg = config or AuditConfig()
    if options:
        bad = sorted(set(options) - {f.name for f in dataclasses.fields(AuditConfig)})
        if bad:
            raise UsageError(f"unknown audit option(s): {', '.join(bad)} (see collapse_audit.AuditConfig)")
        cfg = dataclasses.replace(cfg, **options)
    results, real_side, gen_side = _scan.run_scan(_as_side(gen, "gen"), _as_side(real, "real"), cfg)  # via the module: patchable
    return AuditResult(results=results, real=real_side, gen=gen_side, config=cfg)


# --------------------------------------------------------------------------- metrics with result types
@dataclass(frozen=True)
class FIDResult:
    """Frechet Inception Distance (Heusel et al. 2017) of two feature sets.

    ``fid = |mu_r - mu_g|^2 + tr(S_r) + tr(S_g) - 2 tr((S_r^1/2 S_g S_r^1/2)^1/2)``,
    computed by :func:`collapse_audit.metrics.fid` (float64 moments, pivoted-Cholesky
    factors; exact low-rank path when a side has fewer samples than dimensions).
    ``float(result)`` is the value.
    """

    fid: float
    n_real: int
    n_gen: int
    dim: int
    low_rank: bool

    def __float__(self) -> float:
        return float(self.fid)


def fid(real, gen) -> FIDResult:
    """FID of ``real`` (N, D) and ``gen`` (M, D) features (arrays or torch tensors); see :class:`FIDResult`."""
    r, g = _array(real, "real"), _array(gen, "gen")
    if r.shape[1] != g.shape[1]:
        raise ValueError(f"real has {r.shape[1]} features but gen has {g.shape[1]}")
    low = min(len(r), len(g)) - 1 < r.shape[1]
    value = M.fid_from_features(r, g) if low else M.fid(r, g)
    return FIDResult(fid=float(value), n_real=len(r), n_gen=len(g), dim=r.shape[1], low_rank=bool(low))


def _array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N x D), got shape {a.shape}")
    return a


# --------------------------------------------------------------------------- embed
def _images_to_folder(images, folder: Path) -> None:
    """Write a batch of images (PIL images, or a uint8 / float [0, 1] tensor or array, NCHW or NHWC) as PNG."""
    from PIL import Image

    if hasattr(images, "detach") and hasattr(images, "cpu"):
        images = images.detach().cpu().numpy()
    if isinstance(images, np.ndarray):
        a = images
        if a.ndim == 3:  # N x H x W grey
            a = a[:, None]
        if a.ndim != 4:
            raise InputError(f"an image batch must be N x C x H x W or N x H x W x C, got shape {a.shape}")
        if a.shape[1] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = a.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        elif a.shape[1] in (1, 3, 4) and a.shape[-1] in (1, 3, 4):
            a = a.transpose(0, 2, 3, 1)  # ambiguous: torch's NCHW convention
        if a.dtype != np.uint8:
            if not np.issubdtype(a.dtype, np.floating):
                raise InputError(f"image tensors must be uint8 or float in [0, 1], got {a.dtype}")
            if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
                raise InputError("float image tensors must hold values in [0, 1] (no NaN)")
            a = np.rint(a * 255.0).astype(np.uint8)  # the 8-bit pixels a saved PNG would hold
        if a.shape[-1] == 1:
            a = np.repeat(a, 3, axis=-1)
        imgs = [Image.fromarray(x[..., :3]) for x in a]
    else:
        imgs = list(images)
        if not all(isinstance(i, Image.Image) for i in imgs):
            raise InputError("a list given to embed() must hold PIL images or file paths")
    width = max(5, len(str(len(imgs))))
    for i, im in enumerate(imgs):
        im.save(folder / f"{i:0{width}d}.png")


def embed(source, embedder: str = "inception", *, weights: Sequence[str] | None = None, seed: int = 0,
          device: str = "auto", batch_size: int = 64, workers: int | None = 0, amp: bool = False,
          cache_dir=None, use_cache: bool | None = None, offline: bool = False) -> FeatureSet:
    """Embed images with one embedder; returns a :class:`~collapse_audit.features.FeatureSet`.

    ``source``: an image folder (recursive), a list of image files, a list of
    PIL images, or a batch tensor/array (uint8, or float in [0, 1]; N x C x H x W
    or N x H x W x C), which is what a training loop holds. In-memory images are
    written losslessly as 8-bit PNG and go through exactly the folder path, so
    they get the same features as the same pixels saved as PNG. ``embedder`` and
    ``weights`` as on the command line (``"inception"``, ``"clip:ViT-B-32/openai"``,
    ``weights=["random"]``). The feature cache is used for folders and files
    (``use_cache=None``) and not for in-memory images.
    """
    embs = build_embedders([embedder], weights, seed=seed, cache_dir=cache_dir, offline=offline, progress=False)
    kw = dict(device=device, batch_size=batch_size, workers=workers, amp=amp)
    with tempfile.TemporaryDirectory(prefix="collapse-audit-embed-") as tmp:
        if isinstance(source, (str, os.PathLike)):
            root, files, cached = Path(source), None, True
            if not root.is_dir():
                raise InputError(f"{root}: not a folder of images")
        elif isinstance(source, (list, tuple)) and source and all(isinstance(s, (str, os.PathLike)) for s in source):
            paths = [Path(s) for s in source]
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                raise InputError(f"{missing[0]}: no such file ({len(missing)} missing)")
            root, files, cached = Path("/"), [str(p.resolve()).lstrip("/") for p in paths], True
        else:
            root, files, cached = Path(tmp), None, False
            _images_to_folder(source, root)
        cache = open_cache(cache_dir, cached if use_cache is None else use_cache)
        try:
            if files is None:
                res = embed_folder(root, embs, cache=cache, **kw)
            else:
                res = embed_files(root, files, embs, cache=cache, **kw)
        finally:
            if cache is not None:
                cache.close()
    e = embs[0]
    n_files = getattr(res, "n_files", len(res.paths) + len(res.failures))
    return FeatureSet(features=res.features[e.id], paths=list(res.paths), embedder_id=e.id, preprocess_id=e.preprocess_id,
                      weights_sha256=e.weights_sha256, random_weights=e.random_weights, shas=res.shas,
                      failures=list(res.failures), embedder=e.describe(), root=str(source) if cached and files is None else None,
                      n_files=n_files)

