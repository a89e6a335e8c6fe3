"""Hostile and odd inputs (issue 12): decompression bombs, features that overflow float32,
non-real dtypes, malformed metadata, pytorch-fid statistics files, Netpbm images,
unreadable image-named entries, manifests the csv module must split itself."""
from __future__ import annotations

import csv
import io
import json
import os
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

from collapse_audit import features as F
from collapse_audit.discover import IMAGE_EXTENSIONS, discover, discover_images
from collapse_audit.errors import InputError
from collapse_audit.features import FeatureSet, check_feature_values, load_features, load_features_mmap, save_features
from collapse_audit.labels import read_manifest
from collapse_audit.stats_file import FOREIGN_SOURCE, is_stats_file, read_stats_file, write_stats_file


def _npy_header(shape, descr="<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg.strip()
    return msg


# --------------------------------------------------------------------------- 1. decompression bombs
def test_bomb_header_declaring_400_gb_is_refused_before_inflating(tmp_path):
    """A few KB whose features.npy header declares (10^6, 10^5) float32 = 400 GB: refused from the header."""
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("features.npy", _npy_header((10**6, 10**5)) + bytes(1 << 16))
    assert p.stat().st_size < 10_000
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        for load in (load_features, load_features_mmap):
            with pytest.raises(InputError) as e:
                load(p)
            msg = _one_line(e)
            assert "declares" in msg and "(1000000, 100000)" in msg, msg
        assert not is_stats_file(p)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 5
    assert peak < 32 << 20, peak


def test_consistent_bomb_is_refused_by_its_compression_ratio(tmp_path, monkeypatch):
    """A real np.savez_compressed of zeros (directory and header agree) inflating ~1000x."""
    p = tmp_path / "zeros.npz"
    np.savez_compressed(p, features=np.zeros((1024, 1024), np.float32))  # 4 MiB -> ~4 KB
    monkeypatch.setattr(F, "RATIO_CHECK_BYTES", 1 << 20, raising=False)
    with pytest.raises(InputError) as e:
        load_features(p)
    assert "decompression bomb" in _one_line(e)


def test_member_over_the_memory_limit_is_refused_but_a_memory_map_is_not(tmp_path, monkeypatch):
    x = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)  # 128 KiB
    np.savez_compressed(tmp_path / "c.npz", features=x)
    np.savez(tmp_path / "u.npz", features=x, paths=np.array([f"{i}.png" for i in range(512)]))
    monkeypatch.setattr(F, "MAX_FEATURES_BYTES", 64 << 10, raising=False)
    monkeypatch.setattr(F, "_available_memory", lambda: None, raising=False)
    with pytest.raises(InputError) as e:
        load_features(tmp_path / "c.npz")
    assert "over the" in _one_line(e) and "(512, 64)" in str(e.value)
    fs = load_features_mmap(tmp_path / "u.npz")  # memory-mapped: nothing inflated, no limit
    assert isinstance(fs.features, np.memmap)
    np.testing.assert_array_equal(np.asarray(fs.features), x)
    with pytest.raises(InputError, match="over the"):
        load_features(tmp_path / "u.npz")  # read into memory: limited


def test_string_member_bomb_and_lying_directory(tmp_path, monkeypatch):
    p = tmp_path / "paths_bomb.npz"
    n = 4096
    x = np.ones((n, 4), np.float32)
    np.savez_compressed(p, features=x, paths=np.array(["a" * 200] * n))  # 3.2 MB of identical strings
    monkeypatch.setattr(F, "MAX_STRING_BYTES", 1 << 20, raising=False)
    with pytest.raises(InputError, match="'paths' declares"):
        load_features(p)
    # header says 4096 x 4 float32 but the directory's uncompressed size is 64 bytes of data
    q = tmp_path / "lie.npz"
    with zipfile.ZipFile(q, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("features.npy", _npy_header((n, 4)) + bytes(64))
    for load in (load_features, load_features_mmap):
        with pytest.raises(InputError, match="ZIP directory says"):
            load(q)


def test_object_and_non_npy_members(tmp_path):
    p = tmp_path / "obj.npz"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("features.npy", _npy_header((2, 2), descr="|O") + bytes(16))
    with pytest.raises(InputError, match="Python objects"):
        load_features(p)
    q = tmp_path / "extra.npz"
    np.savez(q, features=np.ones((3, 2), np.float32))
    with zipfile.ZipFile(q, "a", zipfile.ZIP_DEFLATED) as zf:  # a non-.npy member is never read
        zf.writestr("notes.txt", bytes(8 << 20))
    assert load_features(q).features.shape == (3, 2)


def test_bomb_on_the_command_line_exits_2_with_one_line(tmp_path, run_cli):
    p = tmp_path / "bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("features.npy", _npy_header((10**6, 10**5)) + bytes(1 << 16))
    ok = save_features(tmp_path / "ok.npz", FeatureSet(features=np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32),
                                                       paths=[f"{i}.png" for i in range(20)]))
    code, _, err = run_cli("scan", p, "--real", ok, "--no-report", "--out", tmp_path / "o")
    assert code == 2 and "declares" in err and err.strip().count("\n") == 0, err


# --------------------------------------------------------------------------- 2. magnitude
@pytest.mark.timeout(60)
def test_features_that_overflow_float32_distances_are_refused(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    x[[3, 17]] *= np.float32(1.9e19)  # finite float32, squared distances overflow
    np.savez(tmp_path / "big.npz", features=x)
    for load in (load_features, load_features_mmap):
        with pytest.raises(InputError) as e:
            load(tmp_path / "big.npz")
        msg = _one_line(e)
        assert "2 of 50 rows" in msg and "max |x| = " in msg and "e+19" in msg, msg
    # float64 beyond float32's range: a magnitude error, not an 'infinite' one after a cast
    y = np.ones((5, 3))
    y[1, 1] = 1e30
    np.savez(tmp_path / "f64.npz", features=y)
    with pytest.raises(InputError, match="1 of 5 rows too large"):
        load_features(tmp_path / "f64.npz")


def test_check_feature_values_on_arrays():
    check_feature_values(np.random.default_rng(0).normal(size=(100, 16)).astype(np.float32) * 1e3, "x")
    check_feature_values(np.full((4, 4), 1e17, np.float32), "x")  # large but safe
    with pytest.raises(InputError, match=r"^gen features has 1 of 4 rows too large"):
        check_feature_values(np.array([[1, 2], [3, 4], [5, 6], [2e18, 0]], np.float64), "gen features")
    with pytest.raises(InputError, match="1 rows with NaN"):
        check_feature_values(np.array([[1, np.nan], [3, 4]], np.float32), "x")
    with pytest.raises(InputError, match="rows too large"):  # squared norm, not one entry
        check_feature_values(np.full((2, 64), 9e17, np.float32), "x")
    with pytest.raises(InputError, match="non-empty N x D"):
        check_feature_values(np.ones(3), "x")
    # chunking: a memory map or a big array never needs an N x D float64 copy; same verdict per chunk size
    z = np.ones((1000, 7), np.float32)
    z[999, 6] = 3e18
    with pytest.raises(InputError, match="1 of 1000 rows"):
        check_feature_values(z, "x", chunk_elements=64)


# --------------------------------------------------------------------------- 3. dtypes and metadata
@pytest.mark.parametrize("arr, needle", [
    (np.ones((4, 3), np.complex64), "complex"),
    (np.ones((4, 3), bool), "boolean"),
    (np.array([["a", "b"], ["c", "d"]]), "float or integer"),
    (np.zeros((4, 3), "datetime64[s]"), "float or integer"),
])
def test_non_real_features_are_refused(tmp_path, arr, needle):
    np.savez(tmp_path / "f.npz", features=arr)
    with pytest.raises(InputError) as e:
        load_features(tmp_path / "f.npz")
    assert needle in _one_line(e)


@pytest.mark.parametrize("dtype", [np.int16, np.int64, np.uint8, np.float16, np.float64])
def test_real_dtypes_are_converted_to_float32(tmp_path, dtype):
    x = (np.arange(12).reshape(4, 3) * 3).astype(dtype)
    np.savez(tmp_path / "f.npz", features=x)
    fs = load_features_mmap(tmp_path / "f.npz")
    assert fs.features.dtype == np.float32
    np.testing.assert_array_equal(fs.features, x.astype(np.float32))


def _feats(tmp_path, name="f.npz", n=4, **arrays):
    np.savez(tmp_path / name, features=np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32), **arrays)
    return tmp_path / name


@pytest.mark.parametrize("meta, needle", [
    ("[1, 2]", "JSON object, got a JSON list"),
    ('"text"', "JSON object, got a JSON str"),
    ("not json {", "not valid JSON"),
])
def test_meta_that_is_not_a_json_object_is_refused(tmp_path, meta, needle):
    with pytest.raises(InputError) as e:
        load_features(_feats(tmp_path, meta=np.array(meta)))
    assert needle in _one_line(e)


def test_meta_list_on_the_command_line_exits_2(tmp_path, run_cli):
    p = _feats(tmp_path, "g.npz", n=20, meta=np.array("[]"))
    ok = _feats(tmp_path, "r.npz", n=20)
    code, _, err = run_cli("scan", p, "--real", ok, "--no-report", "--out", tmp_path / "o")
    assert code == 2 and "JSON object" in err and err.strip().count("\n") == 0, err


def test_malformed_meta_parts_are_ignored_with_warnings(tmp_path):
    meta = {"failures": [{"path": "ok.png", "reason": "zero-byte file"}, "junk", {"path": "x.png"}, {"reason": "r"}, 7],
            "embedder": {"name": "inception", "seed": "abc", "dim": 2048}, "n_files": "many", "root": 5}
    fs = load_features(_feats(tmp_path, meta=np.array(json.dumps(meta))))
    assert fs.failures == [{"path": "ok.png", "reason": "zero-byte file"}]
    assert fs.embedder == {"name": "inception", "dim": 2048}
    assert fs.n_files is None and fs.root is None
    text = " | ".join(fs.warnings)
    assert "4 failure record(s)" in text and "seed" in text and "n_files" in text and "root" in text
    fs = load_features(_feats(tmp_path, meta=np.array(json.dumps({"failures": {"a": 1}}))))
    assert fs.failures == [] and "not a list" in fs.warnings[0]
    # a valid file has no warnings
    ok = save_features(tmp_path / "ok.npz", FeatureSet(features=np.ones((2, 2), np.float32), paths=["a", "b"],
                                                        failures=[{"path": "c", "reason": "r"}], n_files=3))
    fs = load_features(ok)
    assert fs.warnings == [] and fs.n_files == 3 and fs.failures == [{"path": "c", "reason": "r"}]


@pytest.mark.parametrize("arrays, needle", [
    ({"paths": np.array(["a", "b", "c"])}, "'paths' has 3 entries but 'features' has 4 rows"),
    ({"labels": np.array(["a"] * 5)}, "'labels' has 5 entries"),
    ({"paths": np.array(["a", "b", "a", "c"])}, "'paths' lists 'a' twice (rows 0 and 2)"),
    ({"embedder_id": np.array(["x", "y"])}, "'embedder_id' must be a single string"),
    ({"random_weights": np.array([True, False])}, "'random_weights' must be a single boolean"),
    ({"meta": np.array(["{}", "{}"])}, "'meta' must be a single string"),
])
def test_inconsistent_arrays_are_refused(tmp_path, arrays, needle):
    with pytest.raises(InputError) as e:
        load_features(_feats(tmp_path, **arrays))
    assert needle in _one_line(e)


def test_bytes_paths_are_decoded(tmp_path):
    fs = load_features(_feats(tmp_path, paths=np.array([b"a.png", b"b.png", "c\u00e9.png".encode(), b"d.png"])))
    assert fs.paths == ["a.png", "b.png", "c\u00e9.png", "d.png"]


# --------------------------------------------------------------------------- 4. pytorch-fid statistics
def _pytorch_fid_stats(path, d=8, seed=0, compressed=True):
    x = np.random.default_rng(seed).normal(size=(200, d))
    mu, sigma = np.mean(x, axis=0), np.cov(x, rowvar=False)
    (np.savez_compressed if compressed else np.savez)(path, mu=mu, sigma=sigma)  # pytorch_fid.fid_score.save_fid_stats
    return mu, sigma


@pytest.mark.parametrize("compressed", [True, False])
def test_pytorch_fid_statistics_file_is_read(tmp_path, compressed):
    p = tmp_path / "fid_stats.npz"
    mu, sigma = _pytorch_fid_stats(p, compressed=compressed)
    assert is_stats_file(p)
    sf = read_stats_file(p)
    np.testing.assert_array_equal(sf.mu, mu)
    np.testing.assert_allclose(sf.sigma, sigma, rtol=0, atol=1e-15)
    assert sf.n is None and sf.embedder_id == "unknown" and not sf.embedder_known
    assert sf.source == FOREIGN_SOURCE == "pytorch-fid statistics file" and sf.meta["source"] == FOREIGN_SOURCE
    assert sf.notes and "comparable only" in sf.notes[0]


def test_own_statistics_file_is_unchanged(tmp_path):
    from collapse_audit.metrics import GaussianStats

    st = GaussianStats().update(np.random.default_rng(0).normal(size=(50, 4)))
    p = write_stats_file(tmp_path / "own", st, "e", {"n_files": 50})
    sf = read_stats_file(p)
    assert sf.n == 50 and sf.source == "collapse-audit statistics file" and sf.notes == [] and sf.meta == {"n_files": 50}


def test_pytorch_fid_statistics_are_validated(tmp_path):
    mu, sigma = _pytorch_fid_stats(tmp_path / "ok.npz")
    cases = {
        "mu2d": (mu[None], sigma, "'mu' must be (D,)"),
        "shape": (mu, sigma[:-1], "'sigma' (D, D)"),
        "nan": (mu, np.where(np.eye(len(mu)) > 0, np.nan, sigma), "NaN or infinite"),
        "asym": (mu, sigma + np.triu(np.ones_like(sigma), 1), "not symmetric"),
        "negvar": (mu, sigma - 10 * np.eye(len(mu)), "negative variances"),
        "complex": (mu.astype(complex), sigma, "real float array"),
        "empty": (np.zeros(0), np.zeros((0, 0)), "'mu' must be (D,)"),
    }
    for name, (m, s, needle) in cases.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, mu=m, sigma=s)
        with pytest.raises(InputError) as e:
            read_stats_file(p)
        assert needle in _one_line(e), (name, str(e.value))
    # asymmetric within rounding: accepted and symmetrised
    p = tmp_path / "round.npz"
    s = sigma.copy()
    s[0, 1] += 1e-12
    np.savez(p, mu=mu, sigma=s)
    out = read_stats_file(p).sigma
    assert np.array_equal(out, out.T)


def test_statistics_bomb_is_not_a_statistics_file_and_is_refused(tmp_path):
    p = tmp_path / "stats_bomb.npz"
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("mu.npy", _npy_header((4,), "<f8") + bytes(32))
        zf.writestr("sigma.npy", _npy_header((10**6, 10**6), "<f8") + bytes(1 << 16))
    assert not is_stats_file(p)
    with pytest.raises(InputError, match="declares"):
        read_stats_file(p)


# --------------------------------------------------------------------------- 5. Netpbm images
def test_netpbm_images_are_discovered(tmp_path):
    from PIL import Image

    assert {".pgm", ".ppm", ".pbm", ".pnm"} <= IMAGE_EXTENSIONS
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    rgb.save(tmp_path / "a.ppm")
    rgb.convert("L").save(tmp_path / "b.pgm")
    rgb.convert("1").save(tmp_path / "c.pbm")
    rgb.save(tmp_path / "d.pnm")
    (tmp_path / "E.PGM").write_bytes((tmp_path / "b.pgm").read_bytes())
    assert discover_images(tmp_path) == ["E.PGM", "a.ppm", "b.pgm", "c.pbm", "d.pnm"]


def test_netpbm_decodes_to_rgb_once_pillow_ppm_plugin_is_enabled(tmp_path, monkeypatch):
    """What decode.py gives for Netpbm files once "PPM" is in SUPPORTED_FORMATS (decode.py's owner adds it):
    16-bit PGM (Pillow mode I) scales like 16-bit PNG, round(v / 257); 8-bit PGM, PPM and PBM are exact."""
    from collapse_audit import decode as D

    monkeypatch.setattr(D, "SUPPORTED_FORMATS", D.SUPPORTED_FORMATS + ("PPM",))
    monkeypatch.setattr(D, "_available_formats", None)
    (tmp_path / "g16.pgm").write_bytes(b"P5\n4 1\n65535\n" + np.array([0, 257, 32896, 65535], ">u2").tobytes())
    (tmp_path / "g12.pgm").write_bytes(b"P5\n2 1\n4095\n" + np.array([0, 4095], ">u2").tobytes())
    (tmp_path / "g8.pgm").write_bytes(b"P5\n3 1\n255\n" + bytes([0, 128, 255]))
    (tmp_path / "c.ppm").write_bytes(b"P6\n1 1\n255\n" + bytes([10, 20, 30]))
    (tmp_path / "b.pbm").write_bytes(b"P1\n2 1\n0 1\n")
    px = {n: np.asarray(D.load_rgb(tmp_path / n)) for n in ("g16.pgm", "g12.pgm", "g8.pgm", "c.ppm", "b.pbm")}
    assert all(a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8 for a in px.values())
    assert px["g16.pgm"][0, :, 0].tolist() == [0, 1, 128, 255]
    assert px["g12.pgm"][0, :, 0].tolist() == [0, 255]
    assert px["g8.pgm"][0, :, 0].tolist() == [0, 128, 255]
    assert px["c.ppm"][0, 0].tolist() == [10, 20, 30]
    assert px["b.pbm"][0, :, 0].tolist() == [255, 0]  # PBM: 1 = black


# --------------------------------------------------------------------------- 6. unreadable entries
@pytest.mark.timeout(30)
@pytest.mark.skipif(not (hasattr(os, "mkfifo") and hasattr(os, "symlink")), reason="needs FIFOs and symlinks")
def test_unreadable_image_named_entries_are_reported_not_dropped(tmp_path):
    root = tmp_path / "gen"
    (root / "sub").mkdir(parents=True)
    (root / "ok.png").write_bytes(b"x")
    os.mkfifo(root / "pipe.png")
    os.symlink(root / "missing.png", root / "dangling.png")
    os.symlink(root / "loop_b.png", root / "loop_a.png")
    os.symlink(root / "loop_a.png", root / "loop_b.png")
    os.symlink(root / "nowhere", root / "sub" / "notes")  # not image-named: ignored as before
    os.symlink(root, root / "sub" / "back")  # folder loop: walked once, as before
    t0 = time.perf_counter()
    d = discover(root)
    assert time.perf_counter() - t0 < 5
    assert d.files == ["ok.png"] == discover_images(root)
    reasons = dict(d.unreadable)
    assert list(reasons) == ["dangling.png", "loop_a.png", "loop_b.png", "pipe.png"]
    assert "dangling symlink" in reasons["dangling.png"]
    assert "symlink loop" in reasons["loop_a.png"] and "symlink loop" in reasons["loop_b.png"]
    assert "FIFO" in reasons["pipe.png"] and "not opened" in reasons["pipe.png"]
    assert d.n_files == 5
    assert d.failures()[0] == {"path": "dangling.png", "reason": reasons["dangling.png"]}
    assert d.skipped_folders == []
    # what embed_folder does with them: failures in discovery order, counted in n_files
    from types import SimpleNamespace

    res = SimpleNamespace(failures=[{"path": "ok.png", "reason": "zero-byte file"}], n_files=1, stats={"n_files": 1, "n_failed": 1})
    assert d.merge_into(res) is res
    assert [f["path"] for f in res.failures] == ["dangling.png", "loop_a.png", "loop_b.png", "ok.png", "pipe.png"]
    assert res.n_files == 5 and res.stats == {"n_files": 5, "n_failed": 5}
    (root / "ok.png").unlink()
    d = discover(root)
    assert d.files == [] and "none of the 4 image files could be read (e.g. dangling.png: unreadable: dangling" in d.empty_message(root)
    (tmp_path / "empty").mkdir()
    assert ".pgm" in discover(tmp_path / "empty").empty_message("empty") and "no image files found" in discover(tmp_path / "empty").empty_message("x")


def test_unlistable_subfolder_is_reported(tmp_path, monkeypatch):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "a.png").write_bytes(b"x")
    (tmp_path / "b.png").write_bytes(b"x")
    real_scandir = os.scandir

    def scandir(p="."):
        if os.fspath(p).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(p))
        return real_scandir(p)

    monkeypatch.setattr(os, "scandir", scandir)
    d = discover(tmp_path)
    assert d.files == ["b.png"] and d.unreadable == []
    assert d.skipped_folders == [("locked", "folder cannot be listed: permission denied")]


# --------------------------------------------------------------------------- 7. manifests
def _write_csv(path, rows, **kw):
    with open(path, "w", newline="", encoding=kw.pop("encoding", "utf-8")) as f:
        csv.writer(f, **kw).writerows(rows)
    return path


def test_manifest_cell_with_line_separator_survives(tmp_path):
    label = "cat\u2028tabby"  # U+2028 LINE SEPARATOR: csv writes it unquoted and reads it back intact
    p = _write_csv(tmp_path / "m.csv", [["path", "label", "note"], ["a.png", label, "x\u0085y"], ["b.png", "dog", "multi\nline"]])
    m = read_manifest(p)
    labels, attrs = m.lookup("real", ["a.png", "b.png"])
    assert labels == [label, "dog"] and attrs["note"] == ["x\u0085y", "multi\nline"]


def test_manifest_bom_crlf_and_quoted_newlines(tmp_path):
    p = tmp_path / "m.csv"
    p.write_bytes("\ufeffpath,label\r\na.png,\"two\r\nlines\"\r\nb.png,dog\r\n".encode())
    labels, _ = read_manifest(p).lookup("gen", ["a.png", "b.png"])
    assert labels == ["two\r\nlines", "dog"]
    # row numbers are the line a record starts on, after a multi-line cell too
    p.write_text('path,label\na.png,"x\ny"\nb.png,cat,extra\n', newline="")
    with pytest.raises(InputError, match=r"row 4: 3 cells"):
        read_manifest(p)


@pytest.mark.parametrize("data, needle", [
    ("path,label\na.png,caf\u00e9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 on line 2)"),
    ("path,label\na.png,cat\n".encode("utf-16"), "UTF-16"),
    (b"", "empty"),
    (b"\xef\xbb\xbf\r\n\r\n", "empty"),
    (b'path,label\na.png,"cat\nb.png,dog\n', "line 2: not valid CSV (a quoted cell is never closed)"),
])
def test_manifest_bad_encodings_and_csv(tmp_path, data, needle):
    p = tmp_path / "m.csv"
    p.write_bytes(data)
    with pytest.raises(InputError) as e:
        read_manifest(p)
    assert needle in _one_line(e)
