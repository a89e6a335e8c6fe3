"""A synthetic ``track.json`` dict in the shape of the track spec (schema 1.0, kind "track").

:func:`make_track_dict` plants, over ``T`` checkpoints and ``K`` real clusters:

- mode hopping (``hopping=True``): clusters 0 and 1 take turns, one dropped while
  the other is covered, switching every checkpoint;
- a collapse onset at checkpoint ``onset_at`` (``None``: no onset): from then on
  clusters 2 and 3 are dropped and coverage / recall fall;
- one never-learned cluster (``K - 1``), dropped at every checkpoint.

Per-checkpoint cluster statuses come from the real NDB rule
(:func:`collapse_audit.analysis.clusters.bin_test`) on the planted counts; the
``run`` section is derived from those statuses the way the spec describes it
(it stands in for ``trackstats.analyse_run`` in the report tests). With
``folder``, tiny PNG files are written there for every real exemplar and
generated sample and the paths in the dict are relative to ``folder`` (pass it
as the report's ``base_dir``); without, the paths name no file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from collapse_audit.analysis.clusters import bin_test

METRIC_KEYS = ("fid", "kid", "precision", "recall", "density", "coverage", "duplicate_fraction")
CLASS_NAMES = ("cat", "dog", "bird")


def _png(path: Path, colour, size: int = 12, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = np.clip(np.asarray(colour, np.float32)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _hue(b: int, k: int) -> tuple[int, int, int]:
    import colorsys

    r, g, bl = colorsys.hsv_to_rgb(b / max(k, 1), 0.7, 0.9)
    return int(255 * r), int(255 * g), int(255 * bl)


def make_track_dict(T: int = 8, K: int = 12, seed: int = 0, hopping: bool = True, onset_at: int | None = 5,
                    *, folder: str | Path | None = None, n_samples: int = 6, n_gen: int = 600, classes: bool = True,
                    order: str = "step", empty_samples_at: tuple = ()) -> dict:
    """A track.json-shaped dict (see the module docstring); deterministic for a given ``seed``.

    ``folder``: write tiny PNGs of the exemplars and samples there. ``empty_samples_at``:
    checkpoint indices whose ``samples`` list is empty. ``order="generation"`` adds a
    ``tail_loss`` section.
    """
    assert K >= 5 and T >= 2
    rng = np.random.default_rng(seed)
    root = Path(folder) if folder is not None else None
    n_real = np.full(K, 2000 // K, dtype=np.int64)
    n_real[: 2000 - int(n_real.sum())] += 1
    n_real = n_real + rng.integers(-20, 21, size=K)
    n_real_total = int(n_real.sum())
    real_share = n_real / n_real_total
    exemplars = [[f"real/c{b:02d}/r{j}.png" for j in range(4)] for b in range(K)]
    if root is not None:
        for b in range(K):
            for j, p in enumerate(exemplars[b]):
                _png(root / p, _hue(b, K), seed=100 * b + j)

    never = K - 1
    onset_clusters = [2, 3]
    steps = [500 * (t + 1) for t in range(T)]
    checkpoints = []
    for t in range(T):
        w = real_share.copy() * rng.uniform(0.9, 1.1, size=K)
        w[never] = 0.0
        if hopping:
            w[0 if t % 2 == 0 else 1] = 0.0
        collapsed = onset_at is not None and t >= onset_at
        if collapsed:
            w[onset_clusters] = 0.0
        w = w / w.sum()
        counts = np.floor(w * n_gen).astype(np.int64)
        counts[int(np.argmax(w))] += n_gen - int(counts.sum())
        bt = bin_test(n_real, counts, 0.05)
        status = [str(s) for s in bt.status]
        gs = counts / n_gen
        name = f"step_{steps[t]:06d}"
        drop = 0.25 if collapsed else 0.0
        cov = 0.8 - 0.01 * t - drop + float(rng.normal(0, 0.005))
        rec = 0.7 - 0.005 * t - drop + float(rng.normal(0, 0.005))
        prec = 0.75 + 0.01 * t + float(rng.normal(0, 0.005))
        dens = 0.95 + 0.02 * t + float(rng.normal(0, 0.01))
        metrics = {"fid": 40.0 - 3 * t + (15.0 if collapsed else 0.0), "kid": 0.03 - 0.002 * t + (0.01 if collapsed else 0.0),
                   "precision": prec, "recall": rec, "density": dens, "coverage": cov,
                   "duplicate_fraction": 0.01 + (0.05 if collapsed else 0.0)}
        se = {"precision": 0.015, "recall": 0.015, "density": 0.03, "coverage": 0.015}
        intervals = {k: [metrics[k] - 1.96 * se[k], metrics[k] + 1.96 * se[k]] for k in se}
        intervals["kid"] = [metrics["kid"] - 0.004, metrics["kid"] + 0.004]
        if t == 0:
            intervals.pop("density")  # "any key may be absent"
        samples = [] if t in empty_samples_at else [f"samples/{name}/s{j:02d}.png" for j in range(n_samples)]
        if root is not None:
            for j, p in enumerate(samples):
                _png(root / p, _hue((t * 3 + j) % K, K), seed=1000 * t + j)
        cls = None
        if classes:
            c_real = np.array([0.5, 0.3, 0.2])
            c_gen = np.array([0.5, 0.3, 0.2]) if not collapsed else np.array([0.7, 0.3, 0.0])
            cls = {"names": list(CLASS_NAMES), "real_share": c_real.tolist(), "gen_share": c_gen.tolist(),
                   "gen_share_ci": [[max(0.0, g - 0.03), min(1.0, g + 0.03)] for g in c_gen],
                   "status": ["ok", "ok", "dropped" if collapsed else "ok"]}
        checkpoints.append({
            "index": t, "name": name, "step": steps[t], "source": f"run/{name}", "n_gen": n_gen,
            "metrics": metrics, "intervals": intervals, "se": se,
            "clusters": {"n_gen": counts.tolist(), "gen_share": gs.tolist(),
                         "gen_share_ci": [[float(a), float(b)] for a, b in zip(bt.lo, bt.hi)],
                         "status": status, "n_covered": sum(s != "dropped" for s in status),
                         "n_dropped": sum(s == "dropped" for s in status)},
            "classes": cls,
            "samples": samples,
        })

    track = {
        "schema_version": "1.0",
        "kind": "track",
        "tool": {"name": "collapse-audit", "version": "0.1.0"},
        "run_id": f"{seed:08x}cafe",
        "created": "2024-05-01T12:00:00Z",
        "order": order,
        "config": {"k": 5, "clusters": K, "alpha": 0.05, "n_boot": 200, "seed": seed, "embedder": "inception:clean"},
        "real": {"n": n_real_total, "source": "real/", "embedder": "inception:clean"},
        "clusters": {"k": K, "n_real": n_real.tolist(), "real_share": real_share.tolist(), "real_exemplars": exemplars},
        "checkpoints": checkpoints,
    }
    track["run"] = derive_run(track, onset_at)
    return track


def derive_run(track: dict, onset_at: int | None) -> dict:
    """The ``run`` section from the checkpoints' statuses, as the spec describes it (a stand-in for analyse_run)."""
    cps = track["checkpoints"]
    T, K = len(cps), track["clusters"]["k"]
    alpha = track["config"]["alpha"]
    covered = np.array([[s != "dropped" for s in cp["clusters"]["status"]] for cp in cps])  # T x K
    hop = []
    osc = []
    for b in range(K):
        sw = [t for t in range(1, T) if covered[t, b] != covered[t - 1, b]]
        osc.append(len(sw) / (T - 1))
        if len(sw) >= 2:
            hop.append({"id": b, "n_switches": len(sw), "switch_steps": [cps[t]["step"] for t in sw],
                        "switch_checkpoints": sw, "oscillation": len(sw) / (T - 1),
                        "covered_fraction": float(covered[:, b].mean())})
    never = [b for b in range(K) if not covered[:, b].any()]
    run_osc = float(np.mean(osc))
    onset = None
    alerts = []
    if onset_at is not None:
        t, s = onset_at, 0
        cp, ref = cps[t], cps[s]
        v, rv = cp["metrics"]["coverage"], ref["metrics"]["coverage"]
        newly = [b for b in range(K) if not covered[t, b] and covered[:t, b].any() and b not in [h["id"] for h in hop]]
        onset = {"checkpoint": t, "step": cp["step"], "name": cp["name"],
                 "reasons": [{"kind": "metric", "metric": "coverage", "reference_checkpoint": s, "reference_step": ref["step"],
                              "value": v, "reference_value": rv, "drop": rv - v, "z": 11.8, "p": 1e-6, "level": alpha / 2},
                             {"kind": "clusters", "clusters": newly, "level": alpha / 2}]}
        alerts.append({"kind": "onset", "checkpoint": t, "step": cp["step"], "severity": "error",
                       "message": f"collapse starts at step {cp['step']}: coverage fell {rv - v:.3f} below step {ref['step']}; "
                                  f"clusters {newly} dropped"})
    if hop:
        alerts.append({"kind": "hopping", "checkpoint": None, "step": None, "severity": "warning",
                       "message": f"{len(hop)} cluster(s) come and go: " + ", ".join(str(h["id"]) for h in hop)})
    oscillating = run_osc > 0.1
    if oscillating:
        alerts.append({"kind": "oscillating", "checkpoint": None, "step": None, "severity": "warning",
                       "message": f"run oscillation {run_osc:.2f}: the covered set keeps changing"})
    if never:
        alerts.append({"kind": "never_learned", "checkpoint": None, "step": None, "severity": "warning",
                       "message": f"{len(never)} cluster(s) never learned: " + ", ".join(map(str, never))})
    cov = [cp["metrics"]["coverage"] for cp in cps]
    best = int(np.argmax(cov))
    last = cps[-1]
    run = {
        "n_checkpoints": T,
        "alpha": alpha,
        "onset": onset,
        "onset_basis": f"one-sided z-tests against every earlier checkpoint with Holm correction, family-wise false-alarm rate {alpha}",
        "hopping": {"clusters": hop, "run_oscillation": run_osc,
                    "mean_snapshot_covered_fraction": float(covered.mean()),
                    "union_covered_fraction": float(covered.any(axis=0).mean()),
                    "oscillating": oscillating,
                    "basis": "a cluster hops when its covered/dropped status changes at least twice (NDB rule per checkpoint)"},
        "never_learned": never,
        "best_checkpoint": {"checkpoint": best, "step": cps[best]["step"], "name": cps[best]["name"],
                            "criterion": "highest coverage, ties broken by lower FID"},
        "final": {"coverage": last["metrics"]["coverage"], "recall": last["metrics"]["recall"],
                  "precision": last["metrics"]["precision"], "fid": last["metrics"]["fid"],
                  "n_covered": last["clusters"]["n_covered"]},
        "tail_loss": None,
        "alerts": alerts,
    }
    if track.get("order") == "generation":
        rs = np.asarray(track["clusters"]["real_share"])
        rank = np.argsort(np.argsort(rs))
        lost = []
        for b in range(K):
            first = next((t for t in range(T) if not covered[t:, b].any()), None)
            if first is not None and covered[:first, b].any():
                lost.append({"id": b, "real_share": float(rs[b]), "rarity_rank": int(rank[b]),
                             "lost_at_checkpoint": first, "lost_at_step": cps[first]["step"]})
        run["tail_loss"] = {"lost": lost, "rarest_first": False, "p": 0.4, "statistic": "Spearman rho of rarity rank vs loss time",
                            "basis": "permutation test of the loss order against rarity"}
        if lost:
            alerts.append({"kind": "tail_loss", "checkpoint": None, "step": None, "severity": "warning",
                           "message": f"{len(lost)} cluster(s) lost for good over the generations"})
    return run
