"""Scale: `scan` on 50,000 x 512 features per side completes with bounded memory
(the reference prdc would need ~31 GiB for its N x N matrices here). Slow: run by
`make test-slow` and CI."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from collapse_audit.features import FeatureSet, save_features

RUNNER = r"""
import resource, sys
from collapse_audit.cli import main
code = main(sys.argv[1:])
peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"PEAK_KIB={peak_kib}", file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_scan_50k_by_512_per_side_with_bounded_memory(tmp_path):
    n, d = 50_000, 512
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(20, d)).astype(np.float32) * 2
    for name, shift in (("real", 0.0), ("gen", 0.1)):
        lab = rng.integers(0, 20, size=n)
        x = centers[lab] + rng.normal(size=(n, d)).astype(np.float32) + shift
        save_features(tmp_path / f"{name}.npz", FeatureSet(features=x, paths=[f"{i}.png" for i in range(n)], embedder_id="synthetic"))
        del x
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, "scan", str(tmp_path / "gen.npz"), "--real", str(tmp_path / "real.npz"),
         "--out", str(tmp_path / "out"), "--fail-on", "coverage<0.01"],
        capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_gib = int(proc.stderr.split("PEAK_KIB=")[1].split()[0]) / 2**20
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    print(f"50k x 512: peak RSS {peak_gib:.2f} GiB, timings {res['timings']}")
    assert peak_gib < 6.0, f"peak RSS {peak_gib:.2f} GiB"
    m = res["metrics"]
    assert all(m[key] is not None for key in ("fid", "kid", "precision", "recall", "density", "coverage"))
    assert res["inputs"]["real"]["n_images"] == n and res["clusters"] is not None and res["duplicates"] is not None
