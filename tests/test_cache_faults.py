"""Faults of the feature cache never change a result (issue 12).

A damaged database or damaged rows are detected, moved aside or ignored with
one warning, and the features equal those of a run without the cache; an
unusable cache location is a warning, not an error; a preprocessing failure
of one embedder does not mark a file failed for another; and the stat
shortcut does not serve the old hash of a file edited in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from collapse_audit import cache as C
from collapse_audit.cache import FeatureCache
from collapse_audit.decode import DEFAULT_MAX_PIXELS
from collapse_audit.discover import discover_images
from collapse_audit.embedding import DECODER_ID, embed_files, embed_folder
from collapse_audit.errors import CollapseAuditWarning
from collapse_audit.pipeline import build_embedders, embed_to_file, open_cache
from conftest import write_images

DB_NAME = "features.sqlite"
DECODER_KEY = f"{DECODER_ID}:max{DEFAULT_MAX_PIXELS}"


# --------------------------------------------------------------------------- helpers
class _TinyNet(torch.nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, dim)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def ts_models(tmp_path_factory):
    """Two tiny random-weight TorchScript models: 'a' (input 16x16) and 'b' (input 24x24)."""
    d = tmp_path_factory.mktemp("ts")
    out = {}
    for k, (seed, size) in {"a": (1, 16), "b": (2, 24)}.items():
        torch.manual_seed(seed)
        m = torch.jit.script(_TinyNet().eval())
        p = d / f"{k}.pt"
        m.save(str(p), _extra_files={"collapse_audit.json": json.dumps({"input_size": [size, size], "dim": 8})})
        out[k] = f"torchscript:{p}"
    return out


def _embs(ts_models, *keys):
    return build_embedders([ts_models[k] for k in keys], None)


def _embed(folder, embs, cache=None, **kw):
    kw.setdefault("batch_size", 1)  # one image per model call: recomputed rows are bit-identical
    return embed_folder(folder, embs, device="cpu", workers=0, cache=cache, **kw)


def _assert_same(res, ref):
    assert res.paths == ref.paths
    assert res.shas == ref.shas
    assert res.failures == ref.failures
    assert set(res.features) == set(ref.features)
    for k in ref.features:
        assert res.features[k].dtype == np.float32
        np.testing.assert_array_equal(res.features[k], ref.features[k])  # bit for bit


def _corrupt(db: Path, how: str) -> None:
    size = db.stat().st_size
    rng = np.random.default_rng(0)
    with open(db, "r+b") as f:
        if how == "truncate-half":
            f.truncate(size // 2)
        elif how == "truncate-header":
            f.truncate(100)
        elif how == "header-garbage":
            f.write(b"definitely not SQLite" * 5)
        elif how == "zeros-middle":
            f.seek(size // 2)
            f.write(b"\0" * 6000)
        elif how == "random-middle":
            f.seek(size // 3)
            f.write(rng.integers(0, 256, 6000, dtype=np.uint8).tobytes())
        elif how == "random-pages":
            for off in range(4096, size, 3 * 4096):
                f.seek(off)
                f.write(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
        else:  # pragma: no cover
            raise ValueError(how)


class _FlakyDB:
    """Stands in for the sqlite3 connection: statements containing ``needle`` raise ``exc``."""

    def __init__(self, db, needle, exc):
        self.db, self.needle, self.exc = db, needle, exc

    def execute(self, sql, *a):
        if self.needle in sql:
            raise self.exc
        return self.db.execute(sql, *a)

    def executemany(self, sql, *a):
        if self.needle in sql:
            raise self.exc
        return self.db.executemany(sql, *a)

    def __getattr__(self, k):
        return getattr(self.db, k)


@pytest.fixture
def folder(tmp_path):
    write_images(tmp_path / "imgs", 6, size=(40, 30), seed=11)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not an image at all")
    return tmp_path / "imgs"


# --------------------------------------------------------------------------- 1. corruption
def test_corrupt_database_through_embed_to_file_with_random_inception_equals_no_cache(tmp_path, cache_root):
    write_images(tmp_path / "imgs", 3, size=(40, 30), seed=3)
    kw = dict(embedder="inception", weights=["random"], device="cpu", workers=0, batch_size=4)
    ref, _ = embed_to_file(tmp_path / "imgs", tmp_path / "ref.npz", use_cache=False, **kw)
    embed_to_file(tmp_path / "imgs", tmp_path / "first.npz", **kw)
    db = cache_root / DB_NAME
    assert db.is_file() and not Path(f"{db}-wal").exists()
    _corrupt(db, "truncate-half")
    with pytest.warns(CollapseAuditWarning, match=r"is corrupt \(.*\); moved it to .*corrupt-.*; recomputing"):
        res, _ = embed_to_file(tmp_path / "imgs", tmp_path / "second.npz", **kw)
    _assert_same(res, ref)
    assert len(list(cache_root.glob(f"{DB_NAME}.corrupt-*"))) == 1
    # the new database works: a third run is served from it
    third, _ = embed_to_file(tmp_path / "imgs", tmp_path / "third.npz", **kw)
    assert third.stats["n_from_cache"] == 3
    _assert_same(third, ref)


@pytest.mark.parametrize("how", ["truncate-half", "truncate-header", "header-garbage", "zeros-middle",
                                 "random-middle", "random-pages"])
def test_damaged_database_never_changes_the_features(folder, ts_models, tmp_path, how):
    ref = _embed(folder, _embs(ts_models, "a", "b"))
    db = tmp_path / "c" / DB_NAME
    with FeatureCache(db) as c:
        first = _embed(folder, _embs(ts_models, "a", "b"), c)
    _assert_same(first, ref)
    _corrupt(db, how)
    with pytest.warns(CollapseAuditWarning) as rec:
        c = open_cache(tmp_path / "c")
        try:
            res = _embed(folder, _embs(ts_models, "a", "b"), c)
        finally:
            if c is not None:
                c.close()
    _assert_same(res, ref)
    msgs = [str(w.message) for w in rec]
    assert all("\n" not in m for m in msgs)
    assert any("corrupt" in m or "damaged" in m for m in msgs), msgs
    if how in ("truncate-half", "truncate-header", "header-garbage"):
        assert list(db.parent.glob(f"{DB_NAME}.corrupt-*")), "a database SQLite cannot read is moved aside"
    # whatever happened, the cache is usable again and gives the same answer
    with FeatureCache(db) as c:
        again = _embed(folder, _embs(ts_models, "a", "b"), c)
    _assert_same(again, ref)


def test_corruption_found_by_a_query_mid_run_moves_the_database_aside(folder, ts_models, tmp_path):
    ref = _embed(folder, _embs(ts_models, "a"))
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        _embed(folder, _embs(ts_models, "a"), c)
    with FeatureCache(db) as c:
        c._db = _FlakyDB(c._db, "FROM features", sqlite3.DatabaseError("database disk image is malformed"))
        with pytest.warns(CollapseAuditWarning, match="database disk image is malformed.*moved it to.*recomputing"):
            res = _embed(folder, _embs(ts_models, "a"), c)
        assert c.enabled
    _assert_same(res, ref)
    assert res.stats["n_computed"] == 6
    assert len(list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))) == 1


def test_quick_check_failure_on_open_moves_the_database_aside(tmp_path):
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        c.put_features("e", ["a" * 64], np.ones((1, 4), np.float32))
    with sqlite3.connect(db) as raw:  # damage a b-tree page: the header stays readable
        page = raw.execute("PRAGMA page_size").fetchone()[0]
        root = raw.execute("SELECT rootpage FROM sqlite_master WHERE name='features'").fetchone()[0]
    with open(db, "r+b") as f:
        f.seek((root - 1) * page)
        f.write(b"\xff" * 64)
    with pytest.warns(CollapseAuditWarning, match="is corrupt"):
        c = FeatureCache(db)
    with c:
        assert c.get_features("e", ["a" * 64]) == {}
    assert list(tmp_path.glob(f"{DB_NAME}.corrupt-*"))


def _raw_rows(db):
    with sqlite3.connect(db) as raw:
        return raw.execute("SELECT embedder, sha, dim, vec FROM features ORDER BY embedder, sha").fetchall()


@pytest.mark.parametrize("damage", ["short-blob", "long-blob", "wrong-dim-column", "other-dim-row", "nan-row",
                                    "bad-checksum", "zero-dim"])
def test_damaged_rows_are_ignored_and_recomputed(folder, ts_models, tmp_path, damage):
    ref = _embed(folder, _embs(ts_models, "a"))
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        _embed(folder, _embs(ts_models, "a"), c)
    eid, sha, dim, vec = _raw_rows(db)[2]
    assert dim == 8 and len(vec) == 8 * 4 + 4
    if damage == "short-blob":
        new = (dim, vec[:13])
    elif damage == "long-blob":
        new = (dim, vec + b"\0" * 8)
    elif damage == "wrong-dim-column":
        new = (4, vec)
    elif damage == "other-dim-row":  # a well-formed row, but not of this embedder's dimension
        v = np.ones(5, np.float32).tobytes()
        new = (5, v + zlib.crc32(v).to_bytes(4, "little"))
    elif damage == "nan-row":
        v = np.full(dim, np.nan, np.float32).tobytes()
        new = (dim, v + zlib.crc32(v).to_bytes(4, "little"))
    elif damage == "bad-checksum":
        new = (dim, np.zeros(dim, np.float32).tobytes() + vec[-4:])
    else:
        new = (0, b"")
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE features SET dim=?, vec=? WHERE embedder=? AND sha=?", (*new, eid, sha))
    with FeatureCache(db) as c:
        with pytest.warns(CollapseAuditWarning, match="1 cached feature row.* damaged .*recomputing"):
            res = _embed(folder, _embs(ts_models, "a"), c)
    _assert_same(res, ref)
    assert res.stats["n_computed"] == 1 and res.stats["n_from_cache"] == 5
    assert _raw_rows(db)[2] == (eid, sha, dim, vec), "the damaged row was replaced by the recomputed one"


def test_legacy_rows_without_checksum_are_still_served(folder, ts_models, tmp_path):
    ref = _embed(folder, _embs(ts_models, "a"))
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        _embed(folder, _embs(ts_models, "a"), c)
    with sqlite3.connect(db) as raw:  # rows as written by the previous version: dim * 4 bytes
        raw.execute("UPDATE features SET vec = substr(vec, 1, dim * 4)")
    with FeatureCache(db) as c:
        res = _embed(folder, _embs(ts_models, "a"), c)
    assert res.stats["n_from_cache"] == 6
    _assert_same(res, ref)


def test_non_finite_features_are_not_cached(tmp_path):
    with FeatureCache(tmp_path / DB_NAME) as c:
        feats = np.array([[1, 2], [np.nan, 0], [3, np.inf]], np.float32)
        c.put_features("e", ["a" * 64, "b" * 64, "c" * 64], feats)
        got = c.get_features("e", ["a" * 64, "b" * 64, "c" * 64], dim=2)
    assert list(got) == ["a" * 64]
    np.testing.assert_array_equal(got["a" * 64], [1, 2])


# --------------------------------------------------------------------------- 2. unusable location
@pytest.mark.parametrize("kind", ["file", "under-a-file", "db-is-a-folder"])
def test_unusable_cache_location_is_a_warning_and_the_run_goes_on(tmp_path, folder, ts_models, kind):
    if kind == "file":
        cdir = tmp_path / "cachefile"
        cdir.write_text("x")
    elif kind == "under-a-file":
        (tmp_path / "f").write_text("x")
        cdir = tmp_path / "f" / "sub"
    else:
        cdir = tmp_path / "c"
        (cdir / DB_NAME).mkdir(parents=True)
    with pytest.warns(CollapseAuditWarning, match="running without the feature cache"):
        assert open_cache(cdir) is None
    ref, _ = embed_to_file(folder, tmp_path / "ref.npz", embedder=ts_models["a"], device="cpu", workers=0, use_cache=False)
    with pytest.warns(CollapseAuditWarning, match="running without the feature cache"):
        res, path = embed_to_file(folder, tmp_path / "f.npz", embedder=ts_models["a"], device="cpu", workers=0, cache_dir=cdir)
    assert path.is_file()
    _assert_same(res, ref)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_cache_folder_is_a_warning(tmp_path, folder, ts_models):
    cdir = tmp_path / "ro"
    cdir.mkdir()
    cdir.chmod(0o555)
    try:
        with pytest.warns(CollapseAuditWarning, match="running without the feature cache"):
            assert open_cache(cdir) is None
        with pytest.warns(CollapseAuditWarning):
            embed_to_file(folder, tmp_path / "f.npz", embedder=ts_models["a"], device="cpu", workers=0, cache_dir=cdir)
    finally:
        cdir.chmod(0o755)


@pytest.mark.parametrize("message", ["attempt to write a readonly database", "unable to open database file",
                                     "database is locked"])
def test_sqlite_refusing_to_open_is_a_warning_and_nothing_is_moved(tmp_path, monkeypatch, message):
    # as root cannot make a folder read-only, make SQLite say so
    (tmp_path / DB_NAME).write_bytes(b"")

    def refuse(self, check):
        raise sqlite3.OperationalError(message)

    monkeypatch.setattr(FeatureCache, "_connect", refuse)
    with pytest.warns(CollapseAuditWarning, match=f"cannot be opened \\({message}\\); running without the feature cache"):
        assert open_cache(tmp_path) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [DB_NAME], "a database that is only unavailable is not moved"


def test_sqlite_errors_during_a_run_switch_the_cache_off(folder, ts_models, tmp_path):
    ref = _embed(folder, _embs(ts_models, "a"))
    with FeatureCache(tmp_path / DB_NAME) as c:
        c._db = _FlakyDB(c._db, "INSERT OR REPLACE INTO features", sqlite3.OperationalError("database or disk is full"))
        with pytest.warns(CollapseAuditWarning, match="database or disk is full.*continuing without the cache"):
            res = _embed(folder, _embs(ts_models, "a"), c)
        assert not c.enabled
        assert c.get_features("x", ["a" * 64]) == {}
        assert c.hash_files([folder / "img0000.png"]) == [res.shas[0]]
    _assert_same(res, ref)
    assert not list(tmp_path.glob("*.corrupt-*"))


# --------------------------------------------------------------------------- 3. failures per preprocessing
class _RejectSize:
    """Wraps a preprocessing so that it rejects images of one size (as a strict preprocessing might)."""

    def __init__(self, inner, size):
        self.inner, self.size = inner, size

    def __call__(self, img):
        if img.size == self.size:
            raise ValueError(f"image {img.size} too small for this preprocessing")
        return self.inner(img)


ODD = (13, 7)


def _strict_embs(ts_models, *keys):
    embs = _embs(ts_models, *keys)
    for e in embs:
        if e.id.startswith("torchscript:a.pt"):
            e._pre = _RejectSize(e._pre, ODD)
    return embs


@pytest.fixture
def odd_folder(folder):
    write_images(folder, 1, size=ODD, seed=5, prefix="odd")
    return folder


def test_a_preprocessing_failure_does_not_fail_the_file_for_another_embedder(odd_folder, ts_models, tmp_path):
    db = tmp_path / DB_NAME
    no_cache = {keys: _embed(odd_folder, _strict_embs(ts_models, *keys)) for keys in [("a", "b"), ("b",), ("a",), ("b", "a")]}
    ab = no_cache[("a", "b")]
    failed = {f["path"]: f["reason"] for f in ab.failures}
    assert set(failed) == {"broken.png", "odd0000.png"}
    assert failed["odd0000.png"].startswith("preprocessing failed for torchscript:a.pt")
    assert "odd0000.png" in no_cache[("b",)].paths
    assert [f["path"] for f in no_cache[("b",)].failures] == ["broken.png"]

    with FeatureCache(db) as c:
        first = _embed(odd_folder, _strict_embs(ts_models, "a", "b"), c)
        _assert_same(first, ab)
        # before the fix: odd0000.png reported failed for b too, from the cache
        only_b = _embed(odd_folder, _strict_embs(ts_models, "b"), c)
        _assert_same(only_b, no_cache[("b",)])
        second = _embed(odd_folder, _strict_embs(ts_models, "a", "b"), c)
        _assert_same(second, first)
        assert second.stats["n_computed"] == 0 and second.stats["n_failed"] == 2
        only_a = _embed(odd_folder, _strict_embs(ts_models, "a"), c)
        _assert_same(only_a, no_cache[("a",)])
        ba = _embed(odd_folder, _strict_embs(ts_models, "b", "a"), c)
        _assert_same(ba, no_cache[("b", "a")])
    with sqlite3.connect(db) as raw:
        keys = dict(raw.execute("SELECT decoder, count(*) FROM failures GROUP BY decoder").fetchall())
    a_id = _embs(ts_models, "a")[0].id
    # broken.png under the decoder alone, odd0000.png under (decoder, a's preprocessing)
    assert keys == {DECODER_KEY: 1, C.preprocess_failure_key(DECODER_KEY, a_id): 1}, keys


def test_order_of_failing_embedders_matches_a_run_without_cache(odd_folder, ts_models, tmp_path):
    def both_strict(*keys):
        embs = _embs(ts_models, *keys)
        for e in embs:
            e._pre = _RejectSize(e._pre, ODD)
        return embs

    with FeatureCache(tmp_path / DB_NAME) as c:
        _embed(odd_folder, both_strict("a"), c)  # only a's failure is known
        res = _embed(odd_folder, both_strict("b", "a"), c)
    ref = _embed(odd_folder, both_strict("b", "a"))
    _assert_same(res, ref)
    assert [f["reason"] for f in res.failures if f["path"] == "odd0000.png"][0].startswith(
        "preprocessing failed for torchscript:b.pt")


def test_decode_failures_are_still_shared_and_not_decoded_again(folder, ts_models, tmp_path, monkeypatch):
    from collapse_audit import decode as D

    with FeatureCache(tmp_path / DB_NAME) as c:
        _embed(folder, _embs(ts_models, "a"), c)
        decoded = []
        real = D.load_rgb
        monkeypatch.setattr(D, "load_rgb", lambda p, **kw: (decoded.append(os.path.basename(p)), real(p, **kw))[1])
        res = _embed(folder, _embs(ts_models, "b"), c)
    assert [f["path"] for f in res.failures] == ["broken.png"]
    assert "broken.png" not in decoded and len(decoded) == 6


def test_old_preprocessing_failures_under_the_decoder_key_are_ignored(odd_folder, ts_models, tmp_path):
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        sha = c.hash_files([odd_folder / "odd0000.png"])[0]
        # what the previous version stored after a failed CLIP preprocessing
        c.put_failures(DECODER_KEY, [(sha, "preprocessing failed for clip:ViT-B-32/openai:pretrained:openclip: boom")])
        res = _embed(odd_folder, _embs(ts_models, "b"), c)
    assert "odd0000.png" in res.paths


# --------------------------------------------------------------------------- 4. stat shortcut
@pytest.fixture
def sha_calls(monkeypatch):
    calls = []
    real = C.file_sha256

    def counting(p, *a, **k):
        calls.append(os.path.basename(p))
        return real(p, *a, **k)

    monkeypatch.setattr(C, "file_sha256", counting)
    return calls


def _age(db, seconds=60):
    """Make every memoised hash look taken ``seconds`` after the file last changed (as on a later run)."""
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE filehash_v2 SET hashed_ns = max(mtime_ns, ctime_ns) + ?", (int(seconds * 1e9),))


def test_edit_in_place_with_size_and_mtime_restored_is_rehashed(tmp_path, sha_calls):
    p = tmp_path / "a.bin"
    p.write_bytes(b"A" * 1000)
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        s1 = c.hash_files([p])[0]
        _age(db)
        sha_calls.clear()
        assert c.hash_files([p]) == [s1] and sha_calls == [], "an old, unchanged file uses the shortcut"
        st = p.stat()
        with open(p, "r+b") as f:
            f.write(b"B")
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        st2 = p.stat()
        assert (st2.st_size, st2.st_mtime_ns, st2.st_ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
        s2 = c.hash_files([p])[0]
    assert s2 == hashlib.sha256(b"B" + b"A" * 999).hexdigest() != s1


def test_racy_entries_are_rehashed_until_they_are_old_enough(tmp_path, sha_calls):
    p = tmp_path / "a.bin"
    p.write_bytes(b"x" * 10)
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        c.hash_files([p])
        sha_calls.clear()
        c.hash_files([p])
        assert sha_calls == ["a.bin"], "hashed within the timestamp granularity of its last change: not trusted"
        with sqlite3.connect(db) as raw:  # exactly at the margin: still racy
            raw.execute("UPDATE filehash_v2 SET hashed_ns = max(mtime_ns, ctime_ns) + ?", (C.RACY_MARGIN_NS,))
        sha_calls.clear()
        c.hash_files([p])
        assert sha_calls == ["a.bin"]
        with sqlite3.connect(db) as raw:
            raw.execute("UPDATE filehash_v2 SET hashed_ns = max(mtime_ns, ctime_ns) + ? + 1", (C.RACY_MARGIN_NS,))
        sha_calls.clear()
        c.hash_files([p])
        assert sha_calls == []


def test_same_tick_edit_is_caught_by_the_racy_rule(tmp_path, sha_calls, monkeypatch):
    """A filesystem with coarse timestamps: the edit right after hashing changes no stat field."""
    p = tmp_path / "a.bin"
    p.write_bytes(b"old!")
    frozen = p.stat()
    real_stat = os.stat
    monkeypatch.setattr(C.os, "stat", lambda q, *a, **k: frozen if os.fspath(q) == str(p) else real_stat(q, *a, **k))
    with FeatureCache(tmp_path / DB_NAME) as c:
        c.hash_files([p])
        p.write_bytes(b"new!")  # within the same tick: stat (frozen here) is identical
        assert c.hash_files([p]) == [hashlib.sha256(b"new!").hexdigest()]


def test_rehash_keyword_and_environment_variable(tmp_path, sha_calls, monkeypatch):
    files = write_images(tmp_path / "imgs", 3)
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        c.hash_files(files)
    _age(db)

    def calls(c, **kw):
        _age(db)  # every entry old and trusted, unless re-hashing is forced
        sha_calls.clear()
        c.hash_files(files, **kw)
        return len(sha_calls)

    with FeatureCache(db) as c:
        assert calls(c) == 0
        assert calls(c, rehash=True) == 3
        assert calls(c) == 0
        monkeypatch.setenv("COLLAPSE_AUDIT_REHASH", "1")
        assert calls(c) == 3
        assert calls(c, rehash=False) == 0, "the keyword wins over the environment"
        monkeypatch.setenv("COLLAPSE_AUDIT_REHASH", "0")
        assert calls(c) == 0
    with FeatureCache(db, rehash=True) as c:
        assert calls(c) == 3
        assert calls(c, rehash=False) == 0


def _poison_shortcut(db, victim: str, donor: str):
    """Make the memoised hash of ``victim`` the (old, trusted-looking) hash of ``donor``: a stale shortcut."""
    _age(db)
    with sqlite3.connect(db) as raw:
        sha = raw.execute("SELECT sha FROM filehash_v2 WHERE path=?", (donor,)).fetchone()[0]
        raw.execute("UPDATE filehash_v2 SET sha=? WHERE path=?", (sha, victim))


@pytest.mark.parametrize("how", ["embed_folder", "embed_files", "open_cache", "env"])
def test_rehash_recovers_from_a_stale_shortcut(folder, ts_models, tmp_path, monkeypatch, how):
    ref = _embed(folder, _embs(ts_models, "a"))
    cdir = tmp_path / "c"
    with open_cache(cdir) as c:
        _embed(folder, _embs(ts_models, "a"), c)
    victim, donor = (os.path.abspath(folder / n) for n in ("img0001.png", "img0000.png"))
    _poison_shortcut(cdir / DB_NAME, victim, donor)
    with open_cache(cdir) as c:
        stale = _embed(folder, _embs(ts_models, "a"), c)
    assert stale.shas[1] == stale.shas[0], "the shortcut is trusted when nothing says otherwise"
    if how == "env":
        monkeypatch.setenv("COLLAPSE_AUDIT_REHASH", "1")
    with open_cache(cdir, rehash=how == "open_cache" or None) as c:
        if how == "embed_folder":
            res = _embed(folder, _embs(ts_models, "a"), c, rehash=True)
        elif how == "embed_files":
            res = embed_files(folder, discover_images(folder), _embs(ts_models, "a"), device="cpu", workers=0, batch_size=1,
                              cache=c, rehash=True)
        else:
            res = _embed(folder, _embs(ts_models, "a"), c)
    _assert_same(res, ref)
    monkeypatch.delenv("COLLAPSE_AUDIT_REHASH", raising=False)
    with open_cache(cdir) as c:  # and the shortcut was repaired
        _assert_same(_embed(folder, _embs(ts_models, "a"), c), ref)


def test_edited_image_with_mtime_restored_gets_new_features(folder, ts_models, tmp_path):
    ref_before = _embed(folder, _embs(ts_models, "a"))
    db = tmp_path / DB_NAME
    with FeatureCache(db) as c:
        _embed(folder, _embs(ts_models, "a"), c)
    target = folder / "img0002.png"
    other = tmp_path / "other"
    write_images(other, 1, size=(40, 30), seed=99)
    new_bytes = (other / "img0000.png").read_bytes()
    old = target.stat()
    if len(new_bytes) != old.st_size:  # keep the size: pad or cut the PNG's trailing bytes
        new_bytes = (new_bytes + b"\0" * old.st_size)[: old.st_size]
    with open(target, "r+b") as f:
        f.write(new_bytes)
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert target.stat().st_size == old.st_size and target.stat().st_mtime_ns == old.st_mtime_ns
    ref = _embed(folder, _embs(ts_models, "a"))
    with FeatureCache(db) as c:
        res = _embed(folder, _embs(ts_models, "a"), c)
    _assert_same(res, ref)
    assert res.shas != ref_before.shas


# --------------------------------------------------------------------------- CLI
def test_cli_embed_with_a_corrupt_cache_exits_0_with_a_one_line_warning(tmp_path, run_cli, cache_root, ts_models):
    write_images(tmp_path / "imgs", 3, seed=1)
    args = ("embed", tmp_path / "imgs", "-e", ts_models["a"], "--workers", "0")
    code, _, err = run_cli(*args, "-o", tmp_path / "a.npz")
    assert code == 0, err
    _corrupt(cache_root / DB_NAME, "header-garbage")
    code, _, err = run_cli(*args, "-o", tmp_path / "b.npz")
    assert code == 0, err
    assert "Traceback" not in err and "corrupt" in err
    from collapse_audit.features import load_features

    np.testing.assert_array_equal(load_features(tmp_path / "a.npz").features, load_features(tmp_path / "b.npz").features)
