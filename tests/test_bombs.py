"""Memory and time bombs in small files (issue 12, item 3).

1. Extreme aspect ratios: a 1 x 20000 PNG of ~120 bytes made CLIP's
   short-side resize build a 224 x 4,480,000 image (4 GB). It is refused from
   the header, like a decompression bomb, and the CLIP preprocessing refuses
   it too when handed such an image directly.
2. Huge finite features (~1.9e19): squared radii overflowed float32 and
   ``index._strict_thresholds`` stepped down from float64's maximum one ulp
   at a time, for ever. Thresholds are now exact for infinite / overflowing
   radii with bounded loops, and the array-level neighbour functions refuse
   features whose squared distances can overflow.
3. Netpbm (PBM, PGM, PPM, 16-bit PGM included) decodes to RGB uint8, and the
   binary files Pillow decodes in pure Python (~4 s / megapixel) are fast.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from collapse_audit import decode as D
from collapse_audit import index
from collapse_audit.decode import DEFAULT_MAX_ASPECT_RATIO, DecodeFailure, load_rgb

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_images  # noqa: E402


def _sliver(path: Path, size=(1, 20000)) -> Path:
    Image.new("RGB", size, (40, 80, 120)).save(path)
    return path


# =========================================================================== 1. aspect ratio


def test_sliver_png_is_refused_from_the_header_without_decoding(tmp_path, monkeypatch):
    tall = _sliver(tmp_path / "tall.png")
    wide = _sliver(tmp_path / "wide.png", (20000, 1))
    assert tall.stat().st_size < 300  # a tiny file...
    calls = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: calls.append(self.size) or real_load(self))
    with pytest.raises(DecodeFailure) as e:
        load_rgb(tall)
    assert e.value.reason == "extreme aspect ratio 1:20000 (1 x 20000 pixels, limit 1:50)"
    assert e.value.path == str(tall)
    with pytest.raises(DecodeFailure, match=r"extreme aspect ratio 1:20000 \(20000 x 1 pixels, limit 1:50\)"):
        load_rgb(wide)
    assert calls == []  # ...refused before a single pixel is decoded


def test_aspect_ratio_limit_boundary_and_override(tmp_path):
    assert DEFAULT_MAX_ASPECT_RATIO == 50
    assert load_rgb(_sliver(tmp_path / "a.png", (2, 100))).size == (2, 100)  # exactly 1:50 passes
    assert load_rgb(_sliver(tmp_path / "b.png", (100, 2))).size == (100, 2)
    with pytest.raises(DecodeFailure, match=r"1:50\.5 \(2 x 101 pixels, limit 1:50\)"):
        load_rgb(_sliver(tmp_path / "c.png", (2, 101)))
    with pytest.raises(DecodeFailure, match=r"1:66\.67 \(3 x 200 pixels, limit 1:10\)"):
        load_rgb(_sliver(tmp_path / "d.png", (3, 200)), max_aspect_ratio=10)
    im = load_rgb(tmp_path / "a.png", max_aspect_ratio=float("inf"))
    assert im.size == (2, 100) and im.mode == "RGB"
    assert load_rgb(_sliver(tmp_path / "e.png"), max_aspect_ratio=float("inf")).size == (1, 20000)


def test_clip_preprocess_refuses_an_extreme_image_handed_to_it_directly():
    pytest.importorskip("open_clip")
    from collapse_audit.embedders import _check_short_side_resize

    with pytest.raises(ValueError, match=r"extreme aspect ratio 1:20000 \(1 x 20000 pixels, limit 1:50\)"):
        _check_short_side_resize(Image.new("RGB", (1, 20000)))
    _check_short_side_resize(Image.new("RGB", (2, 100)))  # 1:50 is fine
    _check_short_side_resize(np.zeros((3, 1, 20000)))  # not a PIL image: left to open_clip


def test_embedding_records_the_sliver_as_a_failure_and_embeds_the_others(tmp_path):
    pytest.importorskip("open_clip")
    from collapse_audit.embedding import embed_folder
    from collapse_audit.pipeline import build_embedders

    write_images(tmp_path / "imgs", 3, size=(40, 30), seed=3)
    _sliver(tmp_path / "imgs" / "sliver.png")
    _sliver(tmp_path / "imgs" / "banner.png", (5000, 2))
    (emb,) = build_embedders(["clip:ViT-S-32/openai"], ["random"])
    res = embed_folder(tmp_path / "imgs", [emb], device="cpu", batch_size=8, workers=0)
    assert res.paths == ["img0000.png", "img0001.png", "img0002.png"]
    reasons = {f["path"]: f["reason"] for f in res.failures}
    assert reasons == {
        "sliver.png": "extreme aspect ratio 1:20000 (1 x 20000 pixels, limit 1:50)",
        "banner.png": "extreme aspect ratio 1:2500 (5000 x 2 pixels, limit 1:50)",
    }
    feats = res.features[emb.id]
    assert feats.shape == (3, emb.dim) and np.isfinite(feats).all()


_PEAK_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    from PIL import Image
    from collapse_audit import decode as D
    from collapse_audit.embedding import decode_and_preprocess
    from collapse_audit.embedders import _ClipPreprocess

    def vmdata():
        for line in open("/proc/self/status"):
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024

    pre = _ClipPreprocess("ViT-B-32", "openai")
    pre(Image.new("RGB", (64, 48)))  # build the transform, warm the allocators
    # guard: without the fix the resize asks for 4 GB; fail with MemoryError instead
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (vmdata() + (512 << 20), hard))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, reason = decode_and_preprocess(sys.argv[1], ["clip"], {"clip": pre}, D.DEFAULT_MAX_PIXELS)
    try:
        img = D.load_rgb(sys.argv[1], max_aspect_ratio=float("inf"))  # past the decoder's check
        pre(img)
        direct = None
    except Exception as exc:
        direct = f"{type(exc).__name__}: {exc}"
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    print(json.dumps({"reason": reason, "n_out": len(out), "direct": direct, "grew_kb": grew}))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory via /proc and RLIMIT_DATA")
@pytest.mark.timeout(120)
def test_peak_memory_of_decoding_and_preprocessing_the_sliver_stays_small(tmp_path):
    pytest.importorskip("open_clip")
    path = _sliver(tmp_path / "sliver.png")
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_SCRIPT, str(path)], capture_output=True, text=True, timeout=110
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["reason"] == "extreme aspect ratio 1:20000 (1 x 20000 pixels, limit 1:50)"
    assert got["n_out"] == 0
    assert got["direct"] == "ValueError: extreme aspect ratio 1:20000 (1 x 20000 pixels, limit 1:50)"
    assert got["grew_kb"] < 50 * 1024, got  # was ~4 GB


# =========================================================================== 2. huge features / thresholds

F32_MAX = float(np.finfo(np.float32).max)


def _check_thresholds(r: np.ndarray, dtype, s: np.ndarray) -> np.ndarray:
    """``s < t`` must equal ``sqrt(max(dtype(s), 0)) < r`` for every s (rows: radii)."""
    t = index._strict_thresholds(r, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        direct = np.sqrt(np.maximum(s.astype(dtype), 0)) < np.asarray(r, dtype)[:, None]
    assert np.array_equal(direct, s < t[:, None])
    return t


@pytest.mark.timeout(20)
def test_thresholds_for_overflowing_and_infinite_float32_radii():
    sqrt_max = float(np.sqrt(np.float32(F32_MAX)))  # 2**64 - 2**40, the largest finite sqrt
    r = np.array([1.9e19, 2.0**64, sqrt_max, 3e38, F32_MAX, np.inf, 1.0, 0.0, -1.0, np.nan], np.float32)
    edge = 2.0**128 - 2.0**103  # smallest float64 that rounds to float32 inf
    cand = [0.0, -1.0, 1.0, F32_MAX, np.nextafter(F32_MAX, 0), edge, np.nextafter(edge, -np.inf),
            np.nextafter(edge, np.inf), 1e39, 1e300, np.inf, np.nan, sqrt_max**2]
    s = np.tile(np.array(cand, np.float64), (r.size, 1))
    t = _check_thresholds(r, np.float32, s)
    # no finite float32 q has sqrt(q) >= r: every s whose float32 is finite passes
    assert list(t[[0, 1, 3, 4, 5]]) == [edge] * 5
    assert t[2] < edge  # sqrt(FLT_MAX) itself reaches this radius
    assert np.all(t[[7, 8, 9]] == -np.inf)


@pytest.mark.timeout(20)
def test_thresholds_for_overflowing_and_infinite_float64_radii():
    big = float(np.sqrt(np.finfo(np.float64).max))
    r = np.array([1e200, np.inf, big, np.nextafter(big, np.inf), 1e154, 1.0, 5e-324, 0.0], np.float64)
    cand = [0.0, 1.0, 1e308, np.finfo(np.float64).max, np.inf, -np.inf, 1e-320, 5e-324, 1e-300]
    s = np.tile(np.array(cand), (r.size, 1))
    t = _check_thresholds(r, np.float64, s)
    assert t[0] == np.inf and t[1] == np.inf


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threshold_loops_take_at_most_one_step(dtype, monkeypatch):
    """Random bit patterns over the whole positive range (subnormal, huge, inf) settle in one ulp step per loop."""
    rng = np.random.default_rng(12)
    if dtype == np.float32:
        r = rng.integers(1, 0x7F800001, 1 << 18, dtype=np.uint32).view(np.float32)  # up to +inf
    else:
        r = rng.integers(1, 0x7FF0000000000001, 1 << 18, dtype=np.uint64).view(np.float64)
    r = np.concatenate([r, (np.abs(rng.standard_normal(1 << 16)) * 40).astype(dtype)])
    monkeypatch.setattr(index, "_MAX_ULP_STEPS", 1)
    t = index._strict_thresholds(r, dtype)
    # and they are right: t fails the predicate, its predecessor passes
    with np.errstate(over="ignore"):
        at = np.sqrt(np.maximum(t.astype(dtype), 0)) < r
        below = np.sqrt(np.maximum(np.nextafter(t, -np.inf).astype(dtype), 0)) < r
    assert not at.any() and below.all()


def test_a_walk_that_does_not_settle_raises_instead_of_looping():
    with pytest.raises(RuntimeError, match="did not settle in 16 ulp steps"):
        index._ulp_walk(np.zeros(3), lambda v: np.ones(v.shape, bool), lambda v: v + 1, "test")


def _sets(scale=1.0, dtype=np.float32, n=60, d=8, seed=5):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * scale).astype(dtype), (rng.standard_normal((n, d)) * scale).astype(dtype)


@pytest.mark.timeout(20)
def test_prdc_refuses_features_whose_squared_distances_overflow_float32():
    from collapse_audit.metrics import prdc

    real, gen = _sets()
    gen[7, 3] = 1.9e19
    msg = r"^gen features have values up to 1\.9e\+19 whose squared distances can overflow float32; rescale the features"
    with pytest.raises(ValueError, match=msg):
        prdc(real, gen, k=3)
    with pytest.raises(ValueError, match=msg.replace("gen", "real")):
        prdc(gen, real, k=3)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("value", [1.9e19, 1e19, 3.4e38])
def test_neighbour_functions_refuse_overflowing_float32_features(value):
    real, gen = _sets()
    gen[0, 0] = value
    r = index.kth_neighbour_distance(real, 3)
    calls = [
        lambda: index.kth_neighbour_distance(gen, 3),
        lambda: index.radius_scan(real, gen, x_radii=r),
        lambda: index.radius_scan(gen, real, y_radii=r),
        lambda: index.count_within_radii(gen, real, r),
        lambda: index.knn(gen, real, 3),
        lambda: index.knn(real, gen, 3),
        lambda: index.knn(gen, gen, 3, exclude_self=True),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="overflow float32; rescale the features"):
            call()


@pytest.mark.timeout(20)
def test_float64_features_beyond_float32_range():
    real, gen = _sets(dtype=np.float64)
    gen *= 1e20
    # FAISS proposes kNN candidates in float32: refused
    with pytest.raises(ValueError, match=r"overflow float32; rescale the features.*FAISS searches in float32"):
        index.kth_neighbour_distance(gen, 3)
    with pytest.raises(ValueError, match="overflow float32"):
        index.knn(gen, gen, 3)
    # the blocked scans work in float64 and stay exact there
    scan = index.radius_scan(real * 1e20, gen, x_radii=np.full(60, 3e20), y_radii=np.full(60, np.inf))
    from prdc.prdc import compute_pairwise_distance

    dense = compute_pairwise_distance(real * 1e20, gen)
    assert np.array_equal(scan.y_counts, (dense < 3e20).sum(axis=0))
    assert np.array_equal(scan.x_counts, np.full(60, 60))
    assert np.array_equal(scan.x_nearest, dense.min(axis=1))
    with pytest.raises(ValueError, match="overflow float64"):
        index.radius_scan(real, gen * 1e140)


@pytest.mark.timeout(30)
def test_large_but_safe_features_are_computed_exactly():
    """Just inside the bound (norms ~3e18, squared distances ~1e38): radii and counts equal prdc's."""
    from prdc.prdc import compute_pairwise_distance

    real, gen = _sets(scale=1e18)
    k = 3
    full = compute_pairwise_distance(real)
    assert np.isfinite(full).all() and full.max() > 1e18
    r_real = index.kth_neighbour_distance(real, k)
    assert np.array_equal(r_real, np.partition(full, k, axis=1)[:, k])
    r_gen = index.kth_neighbour_distance(gen, k)
    scan = index.radius_scan(real, gen, x_radii=r_real, y_radii=r_gen)
    cross = compute_pairwise_distance(real, gen)
    assert np.array_equal(scan.y_counts, (cross < r_real[:, None]).sum(axis=0))
    assert np.array_equal(scan.x_counts, (cross < r_gen[None, :]).sum(axis=1))


@pytest.mark.timeout(20)
def test_radius_scan_with_infinite_and_huge_radii_on_ordinary_features():
    from prdc.prdc import compute_pairwise_distance

    real, gen = _sets()
    radii = np.abs(np.random.default_rng(1).standard_normal(60)).astype(np.float32) * 3
    radii[:5], radii[5:10], radii[10:12] = np.inf, 1.9e19, F32_MAX
    scan = index.radius_scan(real, gen, x_radii=radii, y_radii=radii)
    dense = compute_pairwise_distance(real, gen)
    assert np.array_equal(scan.y_counts, (dense < radii[:, None]).sum(axis=0))
    assert np.array_equal(scan.x_counts, (dense < radii[None, :]).sum(axis=1))


def test_knn_refuses_nan_and_inf():
    real, gen = _sets()
    gen[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.knn(gen, real, 3)
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.knn(real, gen.astype(np.float64) * 0 + np.inf, 3)


# =========================================================================== 3. Netpbm


def _pnm(path: Path, magic: bytes, w: int, h: int, maxval: int | None, data: bytes) -> Path:
    head = magic + b"\n# written by test_bombs\n%d %d\n" % (w, h)
    if maxval is not None:
        head += b"%d\n" % maxval
    path.write_bytes(head + data)
    return path


def _rgb(path) -> np.ndarray:
    im = load_rgb(path)
    assert im.mode == "RGB"
    arr = np.asarray(im)
    assert arr.dtype == np.uint8
    return arr


def _grey3(a: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(a, np.uint8)[:, :, None], 3, axis=2)


def test_8bit_pgm_ppm_pbm_binary_and_plain(tmp_path):
    rng = np.random.default_rng(30)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    grey = rgb[:, :, 0]
    bits = grey > 128
    Image.fromarray(rgb).save(tmp_path / "a.ppm")  # P6
    Image.fromarray(grey).save(tmp_path / "a.pgm")  # P5
    Image.fromarray(bits).convert("1").save(tmp_path / "a.pbm")  # P4
    assert (tmp_path / "a.pbm").read_bytes()[:2] == b"P4"
    assert np.array_equal(_rgb(tmp_path / "a.ppm"), rgb)
    assert np.array_equal(_rgb(tmp_path / "a.pgm"), _grey3(grey))
    assert np.array_equal(_rgb(tmp_path / "a.pbm"), _grey3(np.where(bits, 255, 0)))
    # plain (ASCII) variants; in PBM 1 is black
    txt = lambda a: b" ".join(b"%d" % v for v in np.asarray(a).ravel())  # noqa: E731
    assert np.array_equal(_rgb(_pnm(tmp_path / "p.ppm", b"P3", 17, 12, 255, txt(rgb))), rgb)
    assert np.array_equal(_rgb(_pnm(tmp_path / "p.pgm", b"P2", 17, 12, 255, txt(grey))), _grey3(grey))
    p1 = _pnm(tmp_path / "p.pbm", b"P1", 17, 12, None, txt(bits.astype(int)))
    assert np.array_equal(_rgb(p1), _grey3(np.where(bits, 0, 255)))


def test_16bit_pgm_scaled_like_a_16bit_png(tmp_path):
    rng = np.random.default_rng(31)
    g = rng.integers(0, 65536, (9, 14), dtype=np.uint16)
    g[0, :6] = [0, 128, 129, 32896, 65406, 65535]
    pgm = _pnm(tmp_path / "g16.pgm", b"P5", 14, 9, 65535, g.astype(">u2").tobytes())
    with Image.open(pgm) as im:
        assert im.mode in ("I", "I;16", "I;16B")  # 16 bits reach decode.py, not clipped to 8
    expected = _grey3((g.astype(np.int64) * 2 + 257) // 514)  # round(v / 257)
    assert list(expected[0, :6, 0]) == [0, 0, 1, 128, 254, 255]
    assert np.array_equal(_rgb(pgm), expected)
    Image.fromarray(g).save(tmp_path / "g16.png")  # mode I;16
    assert np.array_equal(_rgb(tmp_path / "g16.png"), expected)
    plain = _pnm(tmp_path / "g16p.pgm", b"P2", 14, 9, 65535, b"\n".join(b"%d" % v for v in g.ravel()))
    assert np.array_equal(_rgb(plain), expected)
    # Pillow's own writer of I;16 images gives the same file content
    Image.fromarray(g).save(tmp_path / "pillow16.pgm")
    assert np.array_equal(_rgb(tmp_path / "pillow16.pgm"), expected)


@pytest.mark.parametrize("maxval", [1, 15, 200, 1023, 4095, 65534, 65535])
@pytest.mark.parametrize("magic", [b"P5", b"P6"])
def test_other_maxvals_match_pillows_decoder(tmp_path, monkeypatch, magic, maxval):
    rng = np.random.default_rng(maxval)
    bands = 3 if magic == b"P6" else 1
    v = rng.integers(0, maxval + 1, (11, 13, bands))
    v.flat[:2] = [0, maxval]
    dtype = ">u2" if maxval > 255 else "u1"
    path = _pnm(tmp_path / "x.pnm", magic, 13, 11, maxval, v.astype(dtype).tobytes())
    fast = _rgb(path)
    monkeypatch.setattr(D, "_netpbm_raster", lambda im, fp: None)  # Pillow's Python decoder
    slow = _rgb(path)
    assert np.array_equal(fast, slow)
    if bands == 3 or maxval <= 255:  # Pillow's formula, straight to 8 bits
        assert np.array_equal(fast.reshape(11, 13, 3)[..., :bands], np.rint(v / maxval * 255).astype(np.uint8))
    samples = fast[..., :bands].reshape(-1)
    assert samples[0] == 0 and samples[1] == 255  # 0 -> 0, maxval -> 255


def test_16bit_ppm_does_not_go_through_pillows_python_loop(tmp_path, monkeypatch):
    from PIL import PpmImagePlugin

    def refuse(self, buffer):
        raise AssertionError("Pillow's per-sample Python decoder was used")

    monkeypatch.setattr(PpmImagePlugin.PpmDecoder, "decode", refuse)
    w, h = 1500, 1000
    v = np.random.default_rng(32).integers(0, 65536, (h, w, 3))
    path = _pnm(tmp_path / "big.ppm", b"P6", w, h, 65535, v.astype(">u2").tobytes())
    t0 = time.perf_counter()
    got = _rgb(path)
    assert time.perf_counter() - t0 < 5.0  # Pillow: ~6 s for these 1.5 M pixels
    assert np.array_equal(got, ((v * 2 + 257) // 514).astype(np.uint8))  # round(v / 257)


@pytest.mark.parametrize(
    "name,data,keyword",
    [
        ("t16.ppm", b"P6\n4 4\n65535\n" + b"\x00" * 40, "truncated"),  # numpy path
        ("t10.pgm", b"P5\n4 4\n1023\n" + b"\x00" * 5, "truncated"),  # numpy path
        ("t8.ppm", b"P6\n40 30\n255\n" + b"\x00" * 100, "truncated"),  # Pillow raw decoder
        ("t16.pgm", b"P5\n40 30\n65535\n" + b"\x00" * 100, "truncated"),
        ("t1.pbm", b"P1\n40 30\n0101", "truncated"),  # Pillow plain decoders
        ("t3.ppm", b"P3\n4 4\n255\n1 2 3", "truncated"),
        ("t4.pbm", b"P4\n40 30\n\x00\x00", "truncated"),
        ("text.ppm", b"Python notes, not an image\n" * 3, "not an image"),
        ("pillowpal.ppm", b"PyP\n2 2\n255\n" + b"\x00" * 4, "not an image"),  # Pillow's private variants
        ("pam.pam", b"P7\nWIDTH 1\nHEIGHT 1\n", "not an image"),
        ("bigpnm.pgm", b"P5\n30000 20000\n255\n" + b"\x00" * 16, "too large"),
        ("sliver.pgm", b"P5\n1 20000\n255\n" + b"\x00" * 20000, "extreme aspect ratio"),
    ],
)
def test_bad_netpbm_files_are_recorded_with_their_reason(tmp_path, name, data, keyword):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DecodeFailure) as e:
        load_rgb(tmp_path / name)
    assert keyword in e.value.reason, e.value.reason


def test_netpbm_content_behind_another_extension_and_ppm_as_last_resort(tmp_path):
    rgb = np.random.default_rng(33).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "x.ppm")
    (tmp_path / "x.png").write_bytes((tmp_path / "x.ppm").read_bytes())
    assert np.array_equal(_rgb(tmp_path / "x.png"), rgb)  # identified by content, as for other formats
    assert D.SUPPORTED_FORMATS[-1] == "PPM"
