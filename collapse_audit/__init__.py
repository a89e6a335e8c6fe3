"""collapse-audit: audit generated images against real images for mode collapse.

The public Python API (the command line is a thin layer over it)::

    from collapse_audit import audit, embed, fid, kid, prdc
    res = audit(gen=G, real=R)          # arrays, FeatureSets, folders or .npz files
    res.metrics["coverage"], res.to_dict()   # to_dict() is results.json
    res.write("out/")                   # results.json + report.html
    cluster_dropout(real=R, gen=G).dropped   # the analyses on arrays: frozen result dataclasses

Names are imported on first use (PEP 562), so ``import collapse_audit`` and the
CLI's start-up stay cheap.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute)
_EXPORTS = {
    "audit": ("collapse_audit.api", "audit"),
    "embed": ("collapse_audit.api", "embed"),
    "AuditResult": ("collapse_audit.api", "AuditResult"),
    "fid": ("collapse_audit.api", "fid"),
    "FIDResult": ("collapse_audit.api", "FIDResult"),
    "AuditConfig": ("collapse_audit.config", "AuditConfig"),
    "AnalysisConfig": ("collapse_audit.config", "AnalysisConfig"),
    "FeatureSet": ("collapse_audit.features", "FeatureSet"),
    "load_features": ("collapse_audit.features", "load_features"),
    "save_features": ("collapse_audit.features", "save_features"),
    "kid": ("collapse_audit.metrics", "kid"),
    "KIDResult": ("collapse_audit.metrics", "KIDResult"),
    "prdc": ("collapse_audit.scale", "prdc"),
    "PRDCResult": ("collapse_audit.metrics", "PRDCResult"),
    "PRDCIndicators": ("collapse_audit.metrics", "PRDCIndicators"),
    "indicator_bootstrap": ("collapse_audit.metrics", "indicator_bootstrap"),
    "GaussianStats": ("collapse_audit.metrics", "GaussianStats"),
    "frechet_distance": ("collapse_audit.metrics", "frechet_distance"),
    "vendi_score": ("collapse_audit.metrics", "vendi_score"),
    "cmmd": ("collapse_audit.metrics", "cmmd"),
    "inception_score": ("collapse_audit.metrics", "inception_score"),
    "fd_infinity": ("collapse_audit.metrics", "fd_infinity"),
    "authpct": ("collapse_audit.metrics", "authpct"),
    "ct_score": ("collapse_audit.metrics", "ct_score"),
    "cluster_dropout": ("collapse_audit.api", "cluster_dropout"),
    "ClusterDropoutResult": ("collapse_audit.results", "ClusterDropoutResult"),
    "class_dropout": ("collapse_audit.api", "class_dropout"),
    "ClassDropoutResult": ("collapse_audit.results", "ClassDropoutResult"),
    "subgroup_gaps": ("collapse_audit.api", "subgroup_gaps"),
    "SubgroupGapsResult": ("collapse_audit.results", "SubgroupGapsResult"),
    "find_duplicates": ("collapse_audit.api", "find_duplicates"),
    "DuplicatesResult": ("collapse_audit.results", "DuplicatesResult"),
    "Tracker": ("collapse_audit.track", "Tracker"),
    "TrackConfig": ("collapse_audit.config", "TrackConfig"),
    "CollapseAuditError": ("collapse_audit.errors", "CollapseAuditError"),
    "InputError": ("collapse_audit.errors", "InputError"),
    "UsageError": ("collapse_audit.errors", "UsageError"),
    "WeightsError": ("collapse_audit.errors", "WeightsError"),
    "CollapseAuditWarning": ("collapse_audit.errors", "CollapseAuditWarning"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str):
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'collapse_audit' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # cache: the next access is a plain attribute
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
