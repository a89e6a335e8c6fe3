"""Mergeable state: shards combined in any order equal the single pass.

References are computed independently of the accumulators: ``np.mean`` /
``np.cov`` on the concatenated features, ``collections.Counter`` /
``np.unique`` for counts, and pytorch-fid's formula (``scipy.linalg.sqrtm``)
for FID.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import linalg

from collapse_audit.errors import InputError
from collapse_audit.features import FeatureSet, save_features
from collapse_audit.metrics import GaussianStats, fid
from collapse_audit.stats_file import (
    CountAccumulator,
    FailureLog,
    gaussian_stats_from_moments,
    is_stats_file,
    read_stats_file,
    write_stats_file,
)

SIZES = [1, 7, 2, 313, 0, 64, 1, 612]  # uneven, with 1-row and empty shards; sum 1000


def _split(x, sizes=SIZES):
    assert sum(sizes) == len(x)
    out, s = [], 0
    for n in sizes:
        out.append(x[s : s + n])
        s += n
    return out


def _pytorch_fid(mu1, s1, mu2, s2):
    """pytorch-fid 0.3.0 ``calculate_frechet_distance`` (its formula, written out here)."""
    diff = mu1 - mu2
    covmean = np.real(linalg.sqrtm(s1.dot(s2)))
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    d = 16
    a = rng.normal(size=(d, d))
    real = (rng.normal(size=(1000, d)) @ a + 100.0).astype(np.float32)  # large mean: stresses the update
    gen = (rng.normal(size=(1000, d)) @ (0.7 * a) + 100.5).astype(np.float32)
    return real, gen


def test_gaussian_stats_merged_from_uneven_shards_equal_single_pass(feats):
    real, _ = feats
    x64 = real.astype(np.float64)
    shards = [GaussianStats().update(s) if len(s) else GaussianStats() for s in _split(real)]
    order = np.random.default_rng(1).permutation(len(shards))
    merged = GaussianStats()
    for i in order:
        merged.merge(shards[i])
    assert merged.n == len(real)
    assert _rel(merged.mean, x64.mean(axis=0)) < 1e-12
    assert _rel(merged.cov, np.cov(x64, rowvar=False)) < 1e-12
    # a tree of merges (as a cluster would combine partial results) gives the same
    left = GaussianStats().merge(shards[0]).merge(shards[1]).merge(shards[2]).merge(shards[3])
    right = GaussianStats().merge(shards[4]).merge(shards[5]).merge(shards[6]).merge(shards[7])
    tree = left.merge(right)
    assert _rel(tree.cov, np.cov(x64, rowvar=False)) < 1e-12


def test_fid_from_merged_stats_equals_fid_from_full_sets(feats):
    real, gen = feats
    r = GaussianStats()
    for s in _split(real):
        r.merge(GaussianStats().update(s) if len(s) else GaussianStats())
    g = GaussianStats()
    for s in reversed(_split(gen, [500, 1, 499])):
        g.merge(GaussianStats().update(s))
    ref = _pytorch_fid(real.astype(np.float64).mean(0), np.cov(real.astype(np.float64), rowvar=False),
                       gen.astype(np.float64).mean(0), np.cov(gen.astype(np.float64), rowvar=False))
    assert fid(r, g) == pytest.approx(ref, rel=1e-8)
    assert fid(r, g) == pytest.approx(fid(real, gen), rel=1e-10)


def test_counts_merge_to_single_pass_counts():
    rng = np.random.default_rng(2)
    clusters = rng.integers(0, 12, size=1000)
    classes = np.array(["cat", "dog", "bird", "fish"])[rng.integers(0, 4, size=1000)]
    for labels in (clusters, classes):
        merged = CountAccumulator()
        for s in reversed(_split(labels)):
            merged.merge(CountAccumulator().update(s))
        vals, counts = np.unique(labels, return_counts=True)
        expect = {(int(v) if labels.dtype.kind == "i" else str(v)): int(c) for v, c in zip(vals, counts)}
        assert merged.as_dict() == expect
        assert list(merged.as_dict().items()) == sorted(Counter(labels.tolist()).items())
        assert merged.total == 1000
    assert CountAccumulator({"a": 2}).merge(CountAccumulator().update(["a", "b"])) == CountAccumulator({"a": 3, "b": 1})


def test_failure_logs_merge_sorted_and_deduplicated():
    recs = [{"path": f"d/{i:03d}.png", "reason": "truncated image", "side": "gen" if i % 3 else "real"} for i in range(40)]
    rng = np.random.default_rng(3)
    shuffled = [recs[i] for i in rng.permutation(len(recs))]
    logs = [FailureLog(s) for s in _split(shuffled, [1, 0, 13, 26])]
    logs.append(FailureLog(shuffled[5:8]))  # a retried shard reports the same records again
    merged = FailureLog()
    for lg in logs[::-1]:
        merged.merge(lg)
    expect = sorted(recs, key=lambda r: (r["side"], r["path"]))
    assert merged.as_list() == expect
    assert len(merged) == 40
    with pytest.raises(ValueError):
        FailureLog([{"path": "x.png"}])


def test_stats_file_gives_the_fid_of_the_full_features(tmp_path, feats):
    real, gen = feats
    st = GaussianStats()
    for s in _split(real):
        st.merge(GaussianStats().update(s) if len(s) else GaussianStats())
    p = write_stats_file(tmp_path / "ref", st, "inception:random-seed0:clean", {"n_files": 1003, "root": "real/"})
    assert p.name == "ref.npz" and is_stats_file(p)
    with np.load(p, allow_pickle=False) as z:  # the documented layout, readable without this package
        assert str(z["kind"]) == "stats" and int(z["n"]) == 1000
        assert _rel(z["mu"], real.astype(np.float64).mean(0)) < 1e-12
        assert _rel(z["sigma"], np.cov(real.astype(np.float64), rowvar=False)) < 1e-12
    stats, eid, meta = read_stats_file(p)
    assert eid == "inception:random-seed0:clean" and meta == {"n_files": 1003, "root": "real/"}
    assert stats.n == 1000
    assert fid(stats, gen) == pytest.approx(fid(real, gen), rel=1e-9)
    # a statistics file is itself a shard: merged with more features it equals the single pass
    more = gen[:37]
    both = stats.merge(GaussianStats().update(more))
    full = np.concatenate([real, more]).astype(np.float64)
    assert _rel(both.cov, np.cov(full, rowvar=False)) < 1e-10


def test_stats_file_is_told_apart_from_a_features_file(tmp_path):
    f = save_features(tmp_path / "feats.npz", FeatureSet(features=np.ones((3, 4), np.float32), paths=["a", "b", "c"]))
    assert not is_stats_file(f)
    assert not is_stats_file(tmp_path / "missing.npz")
    with pytest.raises(InputError, match="not a statistics file"):
        read_stats_file(f)
    with pytest.raises(InputError, match="no such file"):
        read_stats_file(tmp_path / "missing.npz")
    with pytest.raises(InputError, match="at least 2"):
        write_stats_file(tmp_path / "one.npz", GaussianStats().update(np.ones((1, 4))), "x")


def test_stats_from_moments_round_trip():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(50, 5))
    st = gaussian_stats_from_moments(50, x.mean(0), np.cov(x, rowvar=False))
    assert st.n == 50
    assert _rel(st.cov, np.cov(x, rowvar=False)) < 1e-14
    y = rng.normal(size=(9, 5))
    st.merge(GaussianStats().update(y))
    assert _rel(st.cov, np.cov(np.concatenate([x, y]), rowvar=False)) < 1e-12
