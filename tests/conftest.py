"""Shared fixtures. No test touches the network: downloads are disabled for the
whole session and every cache lives in a temporary directory."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("COLLAPSE_AUDIT_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("CI", "1")  # no progress bars in test output


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    d = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("COLLAPSE_AUDIT_CACHE", str(d))
    monkeypatch.setenv("COLLAPSE_AUDIT_OFFLINE", "1")
    return d


@pytest.fixture
def cache_root(_isolated_cache):
    return _isolated_cache


def write_images(folder: Path, n: int, size=(64, 48), seed: int = 0, prefix: str = "img", fmt: str = "png") -> list[Path]:
    """Write ``n`` random-but-structured RGB images; return their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        base = rng.integers(0, 256, size=3)
        freq = rng.uniform(0.02, 0.3)
        arr = np.stack([(base[c] + 80 * np.sin(freq * (xx + c * 7) + i) + 40 * np.cos(freq * yy)) for c in range(3)], -1)
        arr = np.clip(arr + rng.normal(0, 8, arr.shape), 0, 255).astype(np.uint8)
        p = folder / f"{prefix}{i:04d}.{fmt}"
        Image.fromarray(arr).save(p)
        out.append(p)
    return out


@pytest.fixture
def run_cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from collapse_audit.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run
