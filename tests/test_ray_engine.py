"""``--engine ray`` gives the local engine's answers: same paths, features, failures and cache behaviour.

A local Ray instance with 2 CPUs, random-weight Inception on CPU, a few good
files and the corpus's broken ones.
"""
from __future__ import annotations

import shutil
import sys
from typing import ClassVar

import numpy as np
import pytest

from collapse_audit.cache import FeatureCache
from collapse_audit.embedding import embed_files
from collapse_audit.errors import UsageError
from collapse_audit.pipeline import build_embedders

ray = pytest.importorskip("ray")

GOOD = ["rgb.png", "gray16.png", "cmyk.jpg", "exif_rotated.jpg", "palette_transparent.png", "float32.tif",
        "animated.gif", "sub/dir/nested.png"]
BAD = ["empty.png", "truncated.jpg", "text.jpg", "bomb.png"]
REL = ["cmyk.jpg", "empty.png", "rgb.png", "gray16.png", "truncated.jpg", "exif_rotated.jpg", "palette_transparent.png",
       "text.jpg", "float32.tif", "animated.gif", "bomb.png", "sub/dir/nested.png"]  # not sorted: order must be kept


@pytest.fixture(scope="module")
def ray_local():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from corpus import write_corpus

    corpus = write_corpus(tmp_path_factory.mktemp("ray") / "mixed")
    assert set(GOOD) <= set(corpus.good) and set(BAD) <= set(corpus.bad)
    return corpus


@pytest.fixture(scope="module")
def local_result(folder):
    embs = build_embedders(["inception"], ["random"])
    return embed_files(folder.root, REL, embs, device="cpu", batch_size=4, workers=0)


def _ray_embed(folder, rel, cache=None, **kw):
    from collapse_audit.engine_ray import embed_files_ray

    embs = build_embedders(["inception"], ["random"])
    return embed_files_ray(folder.root, rel, embs, device="cpu", batch_size=3, workers=2, cache=cache, **kw), embs


def test_ray_equals_local_paths_features_failures(ray_local, folder, local_result, tmp_path):
    res, embs = _ray_embed(folder, REL, shard_dir=tmp_path / "shards")
    assert res.paths == local_result.paths == [p for p in REL if p in GOOD]
    assert res.failures == local_result.failures
    assert [f["path"] for f in res.failures] == [p for p in REL if p in BAD]
    for path, keyword in folder.bad.items():
        if path in BAD:
            assert keyword in {f["path"]: f["reason"] for f in res.failures}[path].lower()
    (eid,) = res.features
    assert res.features[eid].shape == (len(GOOD), 2048)
    assert float(np.abs(res.features[eid] - local_result.features[eid]).max()) <= 1e-5
    assert res.shas == local_result.shas
    assert res.stats["engine"] == "ray" and res.stats["n_computed"] == len(GOOD)
    assert embs[0].model_calls == res.stats["model_calls"][eid] >= 1
    assert not embs[0].loaded, "the driver must not load the model: the actors do"

    # the documented shard layout: every input position once, features aligned with rows_0
    shards = sorted((tmp_path / "shards").glob("shard-*.npz"))
    assert len(shards) == res.stats["ray"]["n_shards"] >= 2
    seen, rows_all = [], {}
    for p in shards:
        with np.load(p, allow_pickle=False) as z:
            assert p.name == f"shard-{int(z['index'].min()):09d}.npz"
            seen += z["index"].tolist()
            for i, f in zip(z["rows_0"].tolist(), z["features_0"]):
                rows_all[i] = f
    assert sorted(seen) == list(range(len(REL)))
    assert sorted(rows_all) == [i for i, p in enumerate(REL) if p in GOOD]
    got = np.stack([rows_all[i] for i in sorted(rows_all)])
    np.testing.assert_array_equal(got, res.features[eid])


def test_ray_cache_second_run_does_no_model_work(ray_local, folder, local_result, tmp_path):
    root = tmp_path / "imgs"
    root.mkdir()
    rel = ["rgb.png", "gray16.png", "cmyk.jpg", "empty.png"]
    for r in rel:
        shutil.copy(folder.path(r), root / r)
    folder_copy = type(folder)(root=root)
    with FeatureCache(tmp_path / "c.sqlite") as cache:
        first, e1 = _ray_embed(folder_copy, rel, cache=cache)
        assert first.stats["n_computed"] == 3 and e1[0].model_calls >= 1
        second, e2 = _ray_embed(folder_copy, rel, cache=cache)
    assert e2[0].model_calls == 0 and "ray" not in second.stats, "a fully cached run must not start Ray"
    assert second.stats["n_from_cache"] == 3 and second.stats["n_computed"] == 0
    assert second.paths == first.paths and second.failures == first.failures == [{"path": "empty.png", "reason": "zero-byte file"}]
    eid = next(iter(first.features))
    np.testing.assert_array_equal(second.features[eid], first.features[eid])
    # the cache is shared with the local engine: same keys, same vectors
    with FeatureCache(tmp_path / "c.sqlite") as cache:
        local = embed_files(root, rel, build_embedders(["inception"], ["random"]), device="cpu", workers=0, cache=cache)
    assert local.stats["n_computed"] == 0
    np.testing.assert_array_equal(local.features[eid], first.features[eid])
    want = [local_result.paths.index(p) for p in first.paths]
    assert float(np.abs(first.features[eid] - local_result.features[eid][want]).max()) <= 1e-5


def test_ray_missing_is_a_one_line_usage_error(monkeypatch, folder):
    from collapse_audit import engine_ray

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.data", None)
    with pytest.raises(UsageError) as err:
        engine_ray.embed_files_ray(folder.root, REL, build_embedders(["inception"], ["random"]), device="cpu")
    assert str(err.value) == "--engine ray needs Ray: pip install 'collapse-audit[ray]'"
    assert err.value.exit_code == 2
    with pytest.raises(UsageError, match="needs Ray"):
        engine_ray.select_engine("ray", ray_address="auto")
    assert engine_ray.select_engine("local") is embed_files
    with pytest.raises(UsageError, match="unknown --engine"):
        engine_ray.select_engine("spark")


def test_connect_maps_a_missing_cluster_to_a_one_line_input_error():
    from collapse_audit.engine_ray import connect
    from collapse_audit.errors import InputError

    class FakeRay:  # stands in for ray when no cluster answers at the address
        calls: ClassVar[list] = []

        def is_initialized(self):
            return False

        def init(self, **kw):
            self.calls.append(kw)
            raise ConnectionError("Could not find any running Ray instance.\nPlease specify the address.")

    fake = FakeRay()
    with pytest.raises(InputError) as err:
        connect(fake, "auto")
    assert "\n" not in str(err.value) and "ray start --head" in str(err.value)
    assert fake.calls[0]["address"] == "auto" and "num_cpus" not in fake.calls[0]
