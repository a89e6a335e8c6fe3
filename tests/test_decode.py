"""Discovery and decoding: every awkward file is either decoded right or recorded with its reason."""
from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from collapse_audit.decode import (
    DEFAULT_MAX_PIXELS,
    DecodeFailure,
    file_sha256,
    load_rgb,
)
from collapse_audit.discover import IMAGE_EXTENSIONS, discover_images
from collapse_audit.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))  # harmless under pytest's default rootdir insertion
from corpus import GRAY16_VALUES, Corpus, png_bytes, write_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


def px(im: Image.Image, x: int, y: int) -> np.ndarray:
    return np.asarray(im, dtype=np.int16)[y, x]


def close(a, b, tol=6) -> bool:
    return bool(np.all(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)) <= tol))


# ---------------------------------------------------------------- discovery


def test_discovery_finds_good_and_bad_skips_ignored(corpus):
    found = discover_images(corpus.root)
    assert found == corpus.discovered
    assert "sub/dir/nested.png" in found and "UPPER.PNG" in found
    for rel in corpus.ignored:
        assert rel not in found


def test_discovery_accepts_str_root(corpus):
    assert discover_images(str(corpus.root)) == corpus.discovered


def test_discovery_order_is_by_components_not_filesystem(tmp_path):
    names = ["b.png", "a.png", "a/z.png", "B.png", "a-b/c.png", "a/b/c.jpg", "10.png", "9.png"]
    for name in reversed(names):  # creation order must not matter
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert discover_images(tmp_path) == [
        "10.png", "9.png", "B.png", "a/b/c.jpg", "a/z.png", "a-b/c.png", "a.png", "b.png",
    ]


def test_discovery_extensions_case_insensitive(tmp_path):
    for ext in sorted(IMAGE_EXTENSIONS):
        (tmp_path / f"x{ext.upper()}").write_bytes(b"x")
        (tmp_path / f"y{ext}").write_bytes(b"x")
    for other in ("z.txt", "z.svg", "z.png.bak", "png", "z.npz"):
        (tmp_path / other).write_bytes(b"x")
    found = discover_images(tmp_path)
    assert len(found) == 2 * len(IMAGE_EXTENSIONS)
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm"} == set(IMAGE_EXTENSIONS)


def test_discovery_hidden_dirs_and_files(tmp_path):
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "objects" / "a.png").write_bytes(b"x")
    (tmp_path / "ok" / ".thumbs").mkdir(parents=True)
    (tmp_path / "ok" / ".thumbs" / "t.jpg").write_bytes(b"x")
    (tmp_path / "ok" / ".t.jpg").write_bytes(b"x")
    (tmp_path / "ok" / "t.jpg").write_bytes(b"x")
    assert discover_images(tmp_path) == ["ok/t.jpg"]
    # a hidden root is fine: only entries below it are filtered
    assert discover_images(tmp_path / ".git") == ["objects/a.png"]


def test_discovery_empty_folder(tmp_path):
    assert discover_images(tmp_path) == []


def test_discovery_errors_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        discover_images(tmp_path / "missing")
    f = tmp_path / "file.png"
    f.write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder") as err:
        discover_images(f)
    assert "\n" not in str(err.value)


def test_discovery_folder_named_like_image_is_walked_not_listed(tmp_path):
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "dir.png" / "in.png").write_bytes(b"x")
    assert discover_images(tmp_path) == ["dir.png/in.png"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_discovery_symlinks_files_followed_loops_guarded(tmp_path):
    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    (real / "sub" / "a.png").write_bytes(b"x")
    os.symlink(real / "sub" / "a.png", real / "link.png")  # symlinked file: followed
    os.symlink(real, real / "sub" / "loop")  # loop back to the root
    os.symlink(real / "nowhere.png", real / "broken.png")  # dangling
    t0 = time.perf_counter()
    found = discover_images(real)
    assert time.perf_counter() - t0 < 5
    assert found == ["link.png", "sub/a.png"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_discovery_and_decode_skip_fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.png")
    assert discover_images(tmp_path) == []
    with pytest.raises(DecodeFailure, match="not a regular file"):
        load_rgb(tmp_path / "pipe.png")  # must not block on open()


# ---------------------------------------------------------------- good files


def test_every_good_file_decodes_to_rgb_of_the_right_size(corpus):
    for rel in corpus.good:
        im = load_rgb(corpus.path(rel))
        assert im.mode == "RGB", rel
        assert im.size == corpus.sizes[rel], rel
        assert np.asarray(im).shape == (im.height, im.width, 3), rel


def test_lossless_formats_keep_pixels(corpus):
    ref = np.asarray(load_rgb(corpus.path("rgb.png")))
    for rel in ("image.bmp", "image.webp"):
        if rel in corpus.good:
            assert np.array_equal(np.asarray(load_rgb(corpus.path(rel))), ref), rel
    assert np.array_equal(np.asarray(load_rgb(corpus.path("png_named.jpg"))), ref[:, ::-1])


def test_exif_orientation_applied(corpus):
    im = load_rgb(corpus.path("exif_rotated.jpg"))
    assert im.size == (32, 64)  # stored 64 x 32, orientation 6
    assert close(px(im, 16, 8), (255, 0, 0))  # stored left half is now on top
    assert close(px(im, 16, 56), (0, 0, 255))
    with Image.open(corpus.path("exif_rotated.jpg")) as raw:
        assert raw.size == (64, 32)


def test_16bit_grey_is_scaled_not_clipped(corpus):
    arr = np.asarray(load_rgb(corpus.path("gray16.png")))
    stripe = arr.shape[1] // len(GRAY16_VALUES)
    for i, (_, expected) in enumerate(GRAY16_VALUES):
        block = arr[:, i * stripe : (i + 1) * stripe]
        assert (block == expected).all(), (i, np.unique(block))
    # 65535 -> 255, 32896 -> 128, 257 -> 1: Pillow's convert("L") would give 255 for all three


def test_16bit_scaling_exact_round_trip(tmp_path):
    values = np.arange(0, 65536, 257, dtype=np.uint16)  # 0, 257, ..., 65535 -> 0..255
    p = tmp_path / "levels.png"
    Image.fromarray(values.reshape(16, 16)).save(p)
    out = np.asarray(load_rgb(p))[..., 0].ravel()
    assert np.array_equal(out, np.arange(256, dtype=np.uint8))


def test_float_tiff(corpus, tmp_path):
    assert (np.asarray(load_rgb(corpus.path("float32.tif"))) == 128).all()
    p = tmp_path / "f255.tif"
    Image.fromarray(np.full((4, 4), 200.0, np.float32), "F").save(p)
    assert (np.asarray(load_rgb(p)) == 200).all()
    for name, value in (("neg.tif", -3.0), ("big.tif", 1000.0), ("nan.tif", np.nan)):
        Image.fromarray(np.full((4, 4), value, np.float32), "F").save(tmp_path / name)
        with pytest.raises(DecodeFailure, match="unsupported pixel data"):
            load_rgb(tmp_path / name)


def test_alpha_composited_on_white(corpus):
    im = load_rgb(corpus.path("rgba.png"))
    assert tuple(px(im, 2, 2)) == (255, 255, 255)  # transparent over hidden green
    assert tuple(px(im, 32, 2)) == (255, 0, 0)
    assert close(px(im, 60, 2), (127, 127, 255), tol=1)  # half-transparent blue
    la = load_rgb(corpus.path("la.png"))
    assert tuple(px(la, 2, 2)) == (255, 255, 255)
    assert tuple(px(la, 60, 2)) == (0, 0, 0)


def test_palette_and_palette_transparency(corpus):
    pal = load_rgb(corpus.path("palette.png"))
    assert tuple(px(pal, 2, 2)) == (255, 0, 0)
    assert tuple(px(pal, 32, 2)) == (0, 255, 0)
    assert tuple(px(pal, 62, 2)) == (0, 0, 255)
    ptr = load_rgb(corpus.path("palette_transparent.png"))
    assert tuple(px(ptr, 2, 2)) == (255, 255, 255)  # index 0 (green) is transparent
    assert tuple(px(ptr, 60, 2)) == (255, 0, 0)


def test_grey_and_bilevel(corpus):
    g = np.asarray(load_rgb(corpus.path("gray.png")))
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    assert g[0, 10, 0] == 40
    b = np.asarray(load_rgb(corpus.path("bilevel.png")))
    assert set(np.unique(b)) == {0, 255}


def test_cmyk_jpeg_is_plausibly_red(corpus):
    with Image.open(corpus.path("cmyk.jpg")) as raw:
        assert raw.mode == "CMYK"
    im = load_rgb(corpus.path("cmyk.jpg"))
    assert close(px(im, 10, 10), (255, 0, 0), tol=12)


def test_first_frame_of_gif_and_first_page_of_tiff(corpus):
    gif = load_rgb(corpus.path("animated.gif"))
    assert close(px(gif, 5, 5), (255, 0, 0), tol=2)
    with Image.open(corpus.path("animated.gif")) as raw:
        assert raw.n_frames == 2
    tif = load_rgb(corpus.path("multipage.tif"))
    assert tif.size == (40, 30) and tuple(px(tif, 5, 5)) == (0, 255, 0)


def test_result_is_detached_from_file(corpus, tmp_path):
    src = corpus.path("rgb.png")
    copy = tmp_path / "copy.png"
    copy.write_bytes(src.read_bytes())
    im = load_rgb(copy)
    copy.unlink()  # the returned image must not need the file any more
    assert im.resize((8, 8)).size == (8, 8)


# ---------------------------------------------------------------- bad files


def test_every_bad_file_is_recorded_with_its_reason(corpus):
    for rel, keyword in corpus.bad.items():
        with pytest.raises(DecodeFailure) as err:
            load_rgb(corpus.path(rel))
        reason = err.value.reason
        assert keyword in reason, (rel, reason)
        assert "\n" not in reason and len(reason) <= 300
        assert err.value.path == os.fspath(corpus.path(rel))


def test_decode_failure_str_and_pickle(corpus):
    import pickle

    with pytest.raises(DecodeFailure) as err:
        load_rgb(corpus.path("empty.png"))
    assert str(err.value) == f"{corpus.path('empty.png')}: zero-byte file"
    back = pickle.loads(pickle.dumps(err.value))
    assert (back.reason, back.path) == (err.value.reason, err.value.path)
    assert DecodeFailure("a\nb").reason == "a b" and str(DecodeFailure("x")) == "x"


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 0.97])
def test_truncated_jpeg_and_png_rejected_at_any_cut(corpus, tmp_path, fraction):
    for name in ("rgb.jpg", "rgb.png", "exif_rotated.jpg", "cmyk.jpg"):
        data = corpus.path(name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(DecodeFailure, match="truncated|not an image|corrupt"):
            load_rgb(cut)


def test_truncated_rejected_even_if_someone_enabled_load_truncated(corpus, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    for rel in ("truncated.jpg", "truncated.png"):
        with pytest.raises(DecodeFailure, match="truncated"):
            load_rgb(corpus.path(rel))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored afterwards


def test_bomb_rejected_from_header_without_decoding(corpus, monkeypatch):
    calls = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    t0 = time.perf_counter()
    for rel in ("bomb.png", "huge.png"):
        with pytest.raises(DecodeFailure, match="too large"):
            load_rgb(corpus.path(rel))
    assert calls == []  # never decoded
    assert time.perf_counter() - t0 < 5.0  # decoding 400 M pixels would take far longer
    assert corpus.path("bomb.png").stat().st_size < 200_000


def test_max_pixels_is_respected(corpus):
    with pytest.raises(DecodeFailure, match=r"too large \(64 x 48 = 3072 pixels > limit 3000\)"):
        load_rgb(corpus.path("rgb.png"), max_pixels=3000)
    assert load_rgb(corpus.path("rgb.png"), max_pixels=3072).size == (64, 48)
    assert DEFAULT_MAX_PIXELS == 100_000_000


def test_pillow_bomb_limit_becomes_a_failure_and_warning_is_swallowed(corpus, monkeypatch):
    # 3072 pixels: between MAX_IMAGE_PIXELS and 2x -> Pillow warns; we must not leak it
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_rgb(corpus.path("rgb.png")).size == (64, 48)
    # above 2x -> Pillow raises DecompressionBombError; we turn it into a failure
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DecodeFailure, match="too large"):
        load_rgb(corpus.path("rgb.png"))


def test_no_warnings_leak_and_filters_unchanged(corpus):
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for rel in [*corpus.good, *corpus.bad]:
            try:
                load_rgb(corpus.path(rel))
            except DecodeFailure:
                pass
    assert caught == []
    assert warnings.filters == before


def test_unreadable_paths(tmp_path):
    (tmp_path / "dir.jpg").mkdir()
    with pytest.raises(DecodeFailure, match="not a regular file"):
        load_rgb(tmp_path / "dir.jpg")
    with pytest.raises(DecodeFailure, match="not found"):
        load_rgb(tmp_path / "missing.png")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read anything")
def test_permission_denied(corpus, tmp_path):
    p = tmp_path / "locked.png"
    p.write_bytes(corpus.path("rgb.png").read_bytes())
    p.chmod(0)
    try:
        with pytest.raises(DecodeFailure, match="permission denied"):
            load_rgb(p)
    finally:
        p.chmod(0o644)


def test_permission_denied_even_as_root(corpus, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("collapse_audit.decode.open", denied, raising=False)
    with pytest.raises(DecodeFailure, match="permission denied"):
        load_rgb(corpus.path("rgb.png"))


def test_zero_size_header_is_a_failure(tmp_path):
    p = tmp_path / "zero.png"
    p.write_bytes(png_bytes(0, 48, idat=b"\x78\x9c\x03\x00\x00\x00\x00\x01"))
    with pytest.raises(DecodeFailure):
        load_rgb(p)


def test_only_decodefailure_escapes_for_random_garbage(tmp_path):
    rng = np.random.default_rng(7)
    png_head = b"\x89PNG\r\n\x1a\n"
    jpeg_head = b"\xff\xd8\xff\xe0"
    for i in range(60):
        head = (png_head, jpeg_head, b"GIF89a", b"BM", b"II*\x00", b"RIFF")[i % 6]
        p = tmp_path / f"g{i}.png"
        p.write_bytes(head + rng.integers(0, 256, int(rng.integers(0, 400)), np.uint8).tobytes())
        with pytest.raises(DecodeFailure):
            load_rgb(p)


# ---------------------------------------------------------------- hashing & corpus


def test_file_sha256(tmp_path):
    import hashlib

    p = tmp_path / "data.bin"
    data = os.urandom(3 * 1024 + 7)
    p.write_bytes(data)
    assert file_sha256(p) == hashlib.sha256(data).hexdigest()
    assert file_sha256(p, chunk=1000) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_corpus_is_deterministic_and_fast(tmp_path):
    t0 = time.perf_counter()
    a = write_corpus(tmp_path / "a")
    assert time.perf_counter() - t0 < 5.0  # ~0.4 s on 2 cores; loose so CI load cannot flake it
    b = write_corpus(tmp_path / "b")
    assert a.good == b.good and a.bad == b.bad and a.ignored == b.ignored
    for rel in [*a.good, *a.bad, *a.ignored]:
        assert file_sha256(a.path(rel)) == file_sha256(b.path(rel)), rel
    assert not set(a.good) & set(a.bad)
