"""A small, deterministic corpus of good, bad and ignored image files for tests.

``write_corpus(root)`` writes the files and returns a :class:`Corpus` that
says what each one is, so tests of discovery, decoding, embedding and the
scan can share one set of awkward inputs::

    from corpus import write_corpus          # tests/ is on sys.path under pytest

    corpus = write_corpus(tmp_path / "gen")
    assert discover_images(corpus.root) == corpus.discovered
    for rel in corpus.good: load_rgb(corpus.root / rel)            # decodes
    for rel, keyword in corpus.bad.items(): ...                    # DecodeFailure, reason has keyword

Everything is generated (no binary fixtures), seeded, and takes well under
a second; the two "bombs" are valid PNGs whose headers declare huge sizes
but whose pixel data is a few kilobytes of compressed zeros.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, features

__all__ = ["Corpus", "write_corpus", "png_bytes", "GRAY16_VALUES"]

W, H = 64, 48

#: The 16-bit grey levels of ``gray16.png``, one vertical stripe of 16 px each,
#: and the 8-bit values they must decode to (round(v / 257)).
GRAY16_VALUES: tuple[tuple[int, int], ...] = ((0, 0), (257, 1), (32896, 128), (65535, 255))


@dataclass
class Corpus:
    """What :func:`write_corpus` wrote under ``root`` (paths relative, POSIX)."""

    root: Path
    #: files that must decode to RGB
    good: list[str] = field(default_factory=list)
    #: files that must raise DecodeFailure -> keyword expected in ``reason``
    bad: dict[str, str] = field(default_factory=dict)
    #: files discovery must skip (hidden, in hidden folders, not images)
    ignored: list[str] = field(default_factory=list)
    #: decoded (width, height) of every good file (EXIF orientation applied)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def discovered(self) -> list[str]:
        """What ``discover_images(root)`` must return: good and bad files, sorted."""
        return sorted([*self.good, *self.bad], key=lambda p: tuple(p.split("/")))

    def path(self, rel: str) -> Path:
        return self.root / rel


def write_corpus(root: Path | str) -> Corpus:
    """Write the corpus into ``root`` (created if needed) and describe it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root=root)
    rng = np.random.default_rng(1234)
    noise = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)

    def good(rel: str, im: Image.Image, size: tuple[int, int] | None = None, **save) -> None:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        im.save(target, **save)
        corpus.good.append(rel)
        corpus.sizes[rel] = size or im.size

    def bad(rel: str, data: bytes, keyword: str) -> None:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        corpus.bad[rel] = keyword

    def ignored(rel: str, data: bytes) -> None:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        corpus.ignored.append(rel)

    # ---- good -------------------------------------------------------------
    rgb = Image.fromarray(noise, "RGB")
    good("rgb.png", rgb)
    good("rgb.jpg", rgb, quality=90)

    ramp = np.tile((np.arange(W) * 4).astype(np.uint8), (H, 1))
    good("gray.png", Image.fromarray(ramp, "L"))

    checker = ((np.indices((H, W)) // 8).sum(axis=0) % 2).astype(bool)
    good("bilevel.png", Image.fromarray(checker).convert("1"))

    # palette: three vertical stripes red | green | blue
    stripes = np.repeat(np.array([0, 1, 2], np.uint8), [W // 3, W // 3, W - 2 * (W // 3)])
    pal = Image.fromarray(np.tile(stripes, (H, 1)), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    good("palette.png", pal)

    # palette with transparency: left half index 0 (green, transparent), right half index 1 (red)
    halves = np.zeros((H, W), np.uint8)
    halves[:, W // 2 :] = 1
    ptr = Image.fromarray(halves, "P")
    ptr.putpalette([0, 255, 0, 255, 0, 0])
    good("palette_transparent.png", ptr, transparency=0)

    # RGBA: left third transparent over hidden green, middle opaque red,
    # right third half-transparent blue (alpha 128) -> (127, 127, 255) on white
    rgba = np.zeros((H, W, 4), np.uint8)
    t = W // 3
    rgba[:, :t] = (0, 255, 0, 0)
    rgba[:, t : 2 * t] = (255, 0, 0, 255)
    rgba[:, 2 * t :] = (0, 0, 255, 128)
    good("rgba.png", Image.fromarray(rgba, "RGBA"))

    # LA: left half black & transparent (-> white), right half black & opaque
    la = np.zeros((H, W, 2), np.uint8)
    la[:, W // 2 :, 1] = 255
    good("la.png", Image.fromarray(la, "LA"))

    # 16-bit grey: four stripes of known values
    g16 = np.repeat(np.array([v for v, _ in GRAY16_VALUES], np.uint16), W // 4)
    good("gray16.png", Image.fromarray(np.tile(g16, (H, 1))))  # mode I;16

    # 32-bit float TIFF in 0..1 (0.5 -> 128)
    good("float32.tif", Image.fromarray(np.full((H, W), 0.5, np.float32), "F"))

    # CMYK JPEG, pure red (C=0, M=Y=255, K=0); Pillow writes an Adobe marker
    good("cmyk.jpg", Image.new("CMYK", (32, 24), (0, 255, 255, 0)), quality=95)

    # EXIF orientation 6 (rotate 90 deg clockwise to display): stored 64 x 32,
    # left half red, right half blue -> shown 32 x 64, top red, bottom blue
    stored = Image.new("RGB", (64, 32), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 32, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    good("exif_rotated.jpg", stored, size=(32, 64), exif=exif, quality=95)

    # animated GIF: red frame then blue frame; the first frame counts
    frames = [Image.new("RGB", (40, 30), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    good("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)

    # multi-page TIFF: page 1 green 40 x 30, page 2 magenta 20 x 10
    pages = [Image.new("RGB", (40, 30), (0, 255, 0)), Image.new("RGB", (20, 10), (255, 0, 255))]
    good("multipage.tif", pages[0], save_all=True, append_images=pages[1:])

    if features.check("webp"):
        good("image.webp", rgb, lossless=True)
    good("image.bmp", rgb)
    good("sub/dir/nested.png", Image.fromarray(noise[::-1].copy(), "RGB"))
    good("UPPER.PNG", Image.fromarray(255 - noise, "RGB"))
    # a PNG behind a .jpg name: identified by content, decodes fine
    good("png_named.jpg", Image.fromarray(noise[:, ::-1].copy(), "RGB"), format="PNG")

    # ---- bad --------------------------------------------------------------
    bad("empty.png", b"", "zero-byte")
    png_full = (root / "rgb.png").read_bytes()
    bad("truncated.png", png_full[: len(png_full) // 2], "truncated")
    jpg_full = (root / "rgb.jpg").read_bytes()
    bad("truncated.jpg", jpg_full[: len(jpg_full) // 2], "truncated")
    bad("text.jpg", b"This is not an image, just some notes.\n" * 4, "not an image")
    bad("random.png", np.random.default_rng(99).integers(0, 256, 4096, np.uint8).tobytes(), "not an image")
    bad("page.gif", b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n", "not an image")
    # valid PNG with a damaged (but correctly checksummed) compressed stream
    bad("corrupt.png", png_bytes(W, H, idat=b"\x78\x9c" + b"\xff" * 64), "corrupt")
    # decompression bombs: above Pillow's own hard limit, and between the
    # default max_pixels (100 M) and Pillow's limit (~179 M)
    bad("bomb.png", png_bytes(20000, 20000), "too large")
    bad("huge.png", png_bytes(11000, 10000), "too large")

    # ---- ignored ----------------------------------------------------------
    ignored(".hidden.png", png_full)
    ignored(".cache/x.png", png_full)
    ignored("notes.txt", b"not an image extension\n")
    ignored("sub/.DS_Store", b"\x00\x00\x00\x01Bud1")

    return corpus


def png_bytes(width: int, height: int, *, idat: bytes | None = None) -> bytes:
    """A valid 1-bit greyscale PNG of ``width x height`` zeros, built by hand.

    The pixel data compresses about 1000:1, so even a 20000 x 20000 image
    is ~50 kB on disk and takes a fraction of a second to build. ``idat``
    replaces the compressed pixel data (to make a corrupt stream).
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    if idat is None:
        row = 1 + (width + 7) // 8  # filter byte + packed bits
        rows_per_block = max(1, (1 << 20) // row)
        block = bytes(row * rows_per_block)
        comp = zlib.compressobj(9)
        parts = []
        left = height
        while left > 0:
            n = min(left, rows_per_block)
            parts.append(comp.compress(block[: row * n]))
            left -= n
        parts.append(comp.flush())
        idat = b"".join(parts)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
