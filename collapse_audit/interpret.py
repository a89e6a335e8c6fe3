"""One plain sentence per headline metric on what its value means (``results.json``'s ``interpretation``).

A pure function of a metrics dict: the scan writes it into ``results.json``, the report and
the command line's summary read it, so it sits at the bottom of the import graph (no imports
of the package) instead of in :mod:`collapse_audit.scan`, which re-exports it.
"""
from __future__ import annotations

__all__ = ["interpret"]


def interpret(metrics: dict) -> dict[str, str]:
    """One plain sentence per metric on what its value means (heuristic bands, not verdicts)."""
    def pct(v):
        return f"{100 * v:.0f}%"

    out = {}
    fid = metrics.get("fid")
    if fid is not None:
        out["fid"] = (f"Frechet distance between Gaussian fits of the two feature sets ({fid:.2f}); lower is closer. "
                      "Comparable only at the same embedder, preprocessing and sample sizes.")
    kid = metrics.get("kid")
    if kid is not None:
        std = metrics.get("kid_std") or 0.0
        if kid <= 0 or (std > 0 and kid <= 2 * std):
            verdict = "indistinguishable from 0 at this sample size."
        elif std == 0:
            verdict = "above 0 (one subset only: no spread estimate)."
        else:
            verdict = "clearly above 0: the distributions differ."
        out["kid"] = f"Unbiased MMD^2 with a cubic kernel ({kid:.4g} +/- {std:.2g}); " + verdict
    p, r = metrics.get("precision"), metrics.get("recall")
    d, c = metrics.get("density"), metrics.get("coverage")
    if p is not None:
        out["precision"] = (f"{pct(p)} of generated samples lie inside the real data's k-NN manifold"
                            + ("; low precision = off-manifold / low-fidelity samples." if p < 0.6 else "."))
    if r is not None:
        out["recall"] = (f"{pct(r)} of real samples lie inside the generated manifold"
                         + ("; low recall = missing modes (mode collapse)." if r < 0.6 else "."))
    if d is not None:
        out["density"] = (f"density {d:.2f}: ~1 when generated samples crowd real neighbourhoods like real ones do"
                          + ("; well below 1 = off-manifold samples." if d < 0.7 else "; well above 1 = samples piled on dense real regions (collapse towards common modes)." if d > 1.3 else "."))
    if c is not None:
        out["coverage"] = (f"{pct(c)} of real samples have a generated sample in their k-NN ball"
                           + ("; low coverage = dropped modes." if c < 0.8 else "."))
    v, vr = metrics.get("vendi"), metrics.get("vendi_real")
    if v is not None:
        ref = f" against {vr:.1f} for the real set" if vr is not None else ""
        low = vr is not None and v < 0.5 * vr
        out["vendi"] = (f"the generated set is worth {v:.1f} distinct samples (Vendi score, cosine kernel){ref}"
                        + ("; far fewer than the real set = collapse onto few modes." if low else "."))
    ap = metrics.get("authpct")
    if ap is not None:
        out["authpct"] = (f"{ap:.0f}% of generated samples are authentic: farther from their nearest real sample than "
                          "that sample is from its nearest real neighbour"
                          + ("; a low share = near-copies of the real set (memorisation)." if ap < 50 else "."))
    fdi = metrics.get("fd_infinity")
    if fdi is not None:
        out["fd_infinity"] = (f"FID with its 1/N bias extrapolated away ({fdi:.2f}): comparable across sample sizes, "
                              "unlike FID itself.")
    isc = metrics.get("inception_score")
    if isc is not None:
        out["inception_score"] = (f"Inception Score {isc:.3g}: high when each image is confidently one class and the "
                                  "classes are varied; it ignores the real set, and depends on N, order and splits.")
    cm = metrics.get("cmmd")
    if cm is not None:
        out["cmmd"] = (f"RBF MMD^2 x 1000 between the CLIP embeddings ({cm:.4g}); 0 for identical distributions, "
                       "no normality assumption (unlike FID).")
    return out
