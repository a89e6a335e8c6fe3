"""Decode one image file into a plain 8-bit RGB image, or say why not (stage 2, DESIGN.md).

Everything downstream (Inception, CLIP) wants 8-bit RGB, and FID depends on
preprocessing, so this module is fussy (in the spirit of clean-fid) about
turning whatever a folder holds into the pixels a viewer would show:

- EXIF orientation is applied (``ImageOps.exif_transpose``): a portrait
  phone photo stored sideways is embedded upright, as it is displayed.
- Transparency (RGBA, LA, PA, palette or grey/RGB with a ``tRNS`` colour)
  is composited onto a **white** background. Dropping alpha would expose
  whatever RGB values happen to sit under transparent pixels (often black,
  sometimes garbage, and different between two encoders of the same
  picture); white is how viewers and browsers usually show transparency.
  It is one fixed choice, so real and generated images are treated alike.
- 16-bit greyscale (``I;16*``, or ``I`` holding 0..65535 as 16-bit PNGs
  decode) is scaled with ``round(v / 257)``, so 65535 -> 255 and 32896 -> 128.
  Pillow's own ``convert("L")`` clips every value above 255 to white, which
  is wrong. (16-bit RGB PNGs are reduced to 8 bits by Pillow itself when it
  opens them, taking the high byte; that differs from ``v / 257`` by at most
  one level and is kept.)
- 32-bit float images (``F``, e.g. float TIFF) holding values in 0..1 are
  scaled by 255; values in 0..255 are rounded; anything else (negative,
  above 255, NaN or infinite) is recorded as a failure rather than
  normalised per image, which would silently change what the image means.
  32-bit integer images (``I``) outside 0..65535 are recorded likewise.
- CMYK (including Adobe's inverted CMYK JPEGs, which Pillow's JPEG reader
  un-inverts) and YCbCr are converted by Pillow; 1-bit, greyscale and
  palette images are expanded to RGB. ICC profiles are not applied (the
  stored values are used, as pytorch-fid and clean-fid do).
- Animated GIF/PNG/WebP and multi-page TIFF: the first frame/page only.
- Netpbm (PBM, PGM, PPM: ``P1``..``P6``, plain and binary, any ``maxval``)
  is decoded by Pillow's rules: samples scaled with
  ``round(v / maxval * 255)``, except 16-bit PGM (``maxval`` > 255, mode
  ``I``), which Pillow scales to 0..65535 and which then gets the 16-bit
  rule above (``maxval`` 65535: ``round(v / 257)``). Pillow decodes binary
  files whose ``maxval`` is not 255 in pure Python (~4 s per megapixel), so
  those rasters are read here with numpy instead, giving the same values.

A file that cannot be decoded raises :class:`DecodeFailure` with a short
``reason``; nothing else escapes for a bad file, so a scan records the
failure and carries on. Covered: missing, unreadable and non-regular files
(folders named like images, FIFOs), zero-byte files, files that are not
images, truncated data (never silently accepted), corrupt data, zero-size
images, images larger than ``max_pixels`` and images whose aspect ratio
(long side / short side) exceeds ``max_aspect_ratio``. Both are checked
from the header before any pixel is decoded, so a decompression bomb costs
a header read, not gigabytes, and so does a 1 x 20000 sliver, whose CLIP
preprocessing (short side resized to 224, then a centre crop) would
otherwise build a 224 x 4,480,000 image (4 GB) from a 166-byte file.

Pillow global state. ``load_rgb`` does not change ``Image.MAX_IMAGE_PIXELS``;
Pillow's own bomb guard still applies on top of ``max_pixels`` (it refuses
images above ``2 * Image.MAX_IMAGE_PIXELS``, about 179 M pixels by default;
raise that global in your application to go further), and its
``DecompressionBombWarning`` is swallowed because ``max_pixels`` is the
limit that counts. ``ImageFile.LOAD_TRUNCATED_IMAGES`` must be ``False``
for truncated files to be caught; if some other code in the process set it
to ``True``, ``load_rgb`` sets it back to ``False`` while any ``load_rgb``
call is running (reference-counted under a lock) and restores the old value
when the last one finishes. Code in *other* threads that decodes images in
that window sees ``False`` too. Warnings raised while decoding are captured
with ``warnings.catch_warnings`` (not thread-safe before Python 3.14: in a
multi-threaded process a warning from another thread may be swallowed
during that window); none of them reach the caller.

Only the formats in :data:`SUPPORTED_FORMATS` are tried, whatever the file's
extension says (a ``.jpg`` that holds a PNG is decoded as the PNG it is).
Formats that need external programs or have weak signatures (EPS,
which runs Ghostscript; TGA; DIB) are never tried.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
import struct
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

__all__ = [
    "DEFAULT_MAX_ASPECT_RATIO",
    "DEFAULT_MAX_PIXELS",
    "SUPPORTED_FORMATS",
    "DecodeFailure",
    "load_rgb",
    "file_sha256",
]

#: Largest image accepted by default, in pixels (width x height): 100 M
#: pixels, e.g. 10000 x 10000. Far beyond any generator output or dataset
#: photo, small enough that one image cannot exhaust a worker's memory
#: (100 M RGB pixels = 300 MB once decoded). Note Pillow's own guard refuses
#: more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (~179 M) whatever this says.
DEFAULT_MAX_PIXELS: int = 100_000_000

#: Largest aspect ratio (long side / short side) accepted by default: 1:50.
#: Embedders that resize the *short* side (open_clip's CLIP transform: short
#: side to 224, then a 224 x 224 centre crop) do work and allocate memory in
#: proportion to it: a 1 x 20000 PNG of 166 bytes becomes a 224 x 4,480,000
#: image (4 GB) before the crop. At 1:50 the worst case is 224 x 11,200
#: (2.5 M pixels, ~10 MB; 40 MB for a 448-pixel CLIP), like one ordinary
#: photo. Real pictures stay far below it (phone panoramas ~1:4 to 1:10,
#: banners 1:8, generator outputs 1:1 to 1:4); beyond 1:50 a centre crop
#: keeps under 2% of the picture, so its features would say little anyway.
DEFAULT_MAX_ASPECT_RATIO: float = 50.0

#: Pillow format ids ``load_rgb`` will try, identified by content (MPO, the
#: multi-picture JPEG of some cameras, is opened by Pillow's JPEG reader).
#: Those this Pillow build lacks (WEBP without libwebp) are left out.
#: "PPM" (Pillow's reader of PBM, PGM and PPM) is tried only when the file
#: starts with a Netpbm magic number ``P1``..``P6`` and a whitespace byte:
#: Pillow's own test (``P`` and one of ``0123456fy``) would claim any text
#: file that starts "Python", "Pfizer" or "P0..." and its private ``Py``
#: variants, reporting them as corrupt images rather than as non-images.
SUPPORTED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
_available_formats: tuple[str, ...] | None = None

_WHITE = (255, 255, 255)


class DecodeFailure(Exception):
    """A file could not be decoded into an RGB image.

    ``reason`` is a short, one-line, human-readable explanation such as
    ``"zero-byte file"``, ``"truncated image data"``,
    ``"not an image (unrecognised format)"``,
    ``"image too large (20000 x 20000 = 400000000 pixels > limit 100000000)"``,
    ``"extreme aspect ratio 1:20000 (1 x 20000 pixels, limit 1:50)"``
    or ``"corrupt image data: <Pillow's message>"``; ``path`` is the file,
    when known. It goes into ``results.json`` as ``failures[].reason``.
    """

    def __init__(self, reason: str, path: str | os.PathLike[str] | None = None):
        self.reason = _one_line(reason)
        self.path = os.fspath(path) if path is not None else None
        super().__init__(self.reason, self.path)  # args round-trip through pickle (workers)

    def __reduce__(self):
        return (type(self), (self.reason, self.path))

    def __str__(self) -> str:
        return self.reason if self.path is None else f"{self.path}: {self.reason}"


def load_rgb(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> Image.Image:
    """Decode ``path`` into a fully loaded 8-bit ``RGB`` :class:`PIL.Image.Image`.

    See the module docstring for the conversions applied (EXIF orientation,
    alpha onto white, 16-bit and float scaling, CMYK, first frame).

    Parameters
    ----------
    path:
        The image file.
    max_pixels:
        Refuse images with more than this many pixels (width x height),
        checked from the header before decoding.
    max_aspect_ratio:
        Refuse images whose long side is more than this many times their
        short side, checked from the header before decoding (``math.inf``
        turns the check off).

    Returns
    -------
    PIL.Image.Image
        Mode ``RGB``, loaded, detached from the file (which is closed).

    Raises
    ------
    DecodeFailure
        For any file that cannot be decoded; no other exception escapes for
        a bad file.
    """
    try:
        with _strict_truncation(), warnings.catch_warnings():
            # Pillow's warnings (decompression bomb, odd EXIF, palette
            # transparency, APNG...) are about data we either check ourselves
            # or can ignore; none of them may leak to the caller.
            warnings.simplefilter("ignore")
            return _load_rgb(path, max_pixels, max_aspect_ratio)
    except DecodeFailure as exc:
        if exc.path is None:
            exc.path = os.fspath(path)
        raise
    except Exception as exc:  # one bad file must never abort a scan
        raise DecodeFailure(_reason_for(exc, max_pixels), path) from exc


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of the file's bytes (the key of the content-addressed feature cache)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------
# internals


def _load_rgb(path: str | os.PathLike[str], max_pixels: int, max_aspect_ratio: float) -> Image.Image:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DecodeFailure("file not found") from None
    except PermissionError:
        raise DecodeFailure("unreadable file: permission denied") from None
    if stat.S_ISDIR(st.st_mode):
        raise DecodeFailure("not a regular file (directory)")
    if not stat.S_ISREG(st.st_mode):
        # a FIFO would block open() forever; devices and sockets are not images
        raise DecodeFailure("not a regular file")
    if st.st_size == 0:
        raise DecodeFailure("zero-byte file")

    try:
        fp = open(path, "rb")
    except PermissionError:
        raise DecodeFailure("unreadable file: permission denied") from None
    with fp:
        formats = _formats()
        if "PPM" in formats and not _NETPBM_MAGIC.match(fp.read(3)):
            formats = tuple(f for f in formats if f != "PPM")
        fp.seek(0)
        try:
            im = Image.open(fp, formats=formats)
        except UnidentifiedImageError:
            raise DecodeFailure("not an image (unrecognised format)") from None
        with im:
            width, height = im.size
            if width <= 0 or height <= 0:
                raise DecodeFailure(f"zero-size image ({width} x {height})")
            if width * height > max_pixels:
                raise DecodeFailure(
                    f"image too large ({width} x {height} = {width * height} pixels"
                    f" > limit {max_pixels})"
                )
            long_side, short_side = max(width, height), min(width, height)
            if long_side > max_aspect_ratio * short_side:
                raise DecodeFailure(
                    f"extreme aspect ratio 1:{_ratio(long_side / short_side)}"
                    f" ({width} x {height} pixels, limit 1:{_ratio(max_aspect_ratio)})"
                )
            if im.format == "PPM":
                raster = _netpbm_raster(im, fp)
                if raster is not None:
                    return _array_to_rgb(raster)
            im.load()  # decode now: truncation and corrupt data surface here
            try:
                upright = ImageOps.exif_transpose(im)
            except Exception:
                # unreadable EXIF must not cost a good image; keep it as stored
                upright = im.copy()
    # exif_transpose returned a new image, detached from the (now closed) file
    rgb = _to_rgb(upright)
    rgb.load()
    return rgb


def _formats() -> tuple[str, ...]:
    global _available_formats
    if _available_formats is None:
        Image.init()
        _available_formats = tuple(f for f in SUPPORTED_FORMATS if f in Image.OPEN)
    return _available_formats


_NETPBM_MAGIC = re.compile(rb"P[1-6][ \t\n\v\f\r]")
_NETPBM_CHUNK = 1 << 22  # samples converted at a time (bounds the temporaries)


def _netpbm_raster(im: Image.Image, fp) -> np.ndarray | None:
    """Pixels of a binary PGM/PPM that Pillow would decode in pure Python, as uint8.

    Pillow's ``"ppm"`` decoder (binary data with a ``maxval`` other than 255,
    except 16-bit PGM at 65535) loops in Python per sample, ~4 s per
    megapixel of RGB. This computes the same numbers with numpy: each sample
    (1 byte, or 2 bytes big-endian when ``maxval`` > 255) becomes
    ``min(out_max, round(v / maxval * out_max))`` in float64 with ties to
    even, exactly Pillow's formula, with ``out_max`` 255, or 65535 for grey
    images with ``maxval`` > 255 (Pillow's mode ``I``), which then get the
    16-bit rule ``round(v / 257)`` like every 16-bit image. ``None`` for files
    Pillow decodes fast itself (raw 8-bit, 16-bit PGM, PBM, plain text).
    """
    if len(im.tile) != 1 or im.tile[0][0] != "ppm" or im.mode not in ("L", "I", "RGB"):
        return None
    offset, args = im.tile[0][2], im.tile[0][3]
    maxval = int(args[-1])
    bands = 3 if im.mode == "RGB" else 1
    out_max = 65535 if im.mode == "I" else 255
    sample = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
    width, height = im.size
    total = width * height * bands
    out = np.empty(total, dtype=np.uint8)
    fp.seek(offset)
    for start in range(0, total, _NETPBM_CHUNK):
        n = min(_NETPBM_CHUNK, total - start)
        data = fp.read(n * sample.itemsize)
        if len(data) < n * sample.itemsize:
            raise DecodeFailure("truncated image data")
        v = np.frombuffer(data, dtype=sample).astype(np.float64)
        v = np.minimum(np.rint(v / maxval * out_max), out_max)
        if out_max == 255:
            out[start : start + n] = v
        else:
            out[start : start + n] = _scale_16bit(v, "I")
    return out.reshape((height, width, bands) if bands == 3 else (height, width))


def _ratio(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _array_to_rgb(pixels: np.ndarray) -> Image.Image:
    if pixels.ndim == 2:
        return _grey_array_to_rgb(pixels)
    return Image.fromarray(np.ascontiguousarray(pixels), mode="RGB")


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode == "RGB" and "transparency" not in im.info:
        return im
    if mode.startswith("I;16") or mode == "I":
        return _grey_array_to_rgb(_scale_16bit(np.asarray(im), mode))
    if mode == "F":
        return _grey_array_to_rgb(_scale_float(np.asarray(im)))
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        "transparency" in im.info and mode in ("P", "L", "RGB", "1")
    ):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DecodeFailure(f"unsupported colour mode {mode}: {exc}") from None


def _scale_16bit(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.int64, copy=False)
    if values.size and (values.min() < 0 or values.max() > 65535):
        lo, hi = int(values.min()), int(values.max())
        raise DecodeFailure(
            f"unsupported pixel data: {mode} values {lo}..{hi} outside 0..65535"
        )
    # round(v / 257) in integers: exact, 65535 -> 255, 32896 -> 128
    return ((values * 2 + 257) // 514).astype(np.uint8)


def _scale_float(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64, copy=False)
    if values.size == 0:
        return values.astype(np.uint8)
    if not np.isfinite(values).all():
        raise DecodeFailure("unsupported pixel data: float image contains NaN or infinity")
    lo, hi = float(values.min()), float(values.max())
    if lo >= 0.0 and hi <= 1.0:
        values = values * 255.0
    elif lo < 0.0 or hi > 255.0:
        raise DecodeFailure(
            f"unsupported pixel data: float values {lo:g}..{hi:g} outside 0..1 and 0..255"
        )
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _grey_array_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(grey), mode="L").convert("RGB")


def _reason_for(exc: BaseException, max_pixels: int) -> str:
    if isinstance(exc, Image.DecompressionBombError):
        # Pillow's own guard fired while opening (above 2 * MAX_IMAGE_PIXELS)
        pixels = _pixels_in_message(str(exc))
        if pixels is not None and pixels > max_pixels:
            return f"image too large ({pixels} pixels > limit {max_pixels})"
        return (
            f"image too large for Pillow's decompression-bomb limit ({_one_line(str(exc))});"
            " raise PIL.Image.MAX_IMAGE_PIXELS to allow it"
        )
    if isinstance(exc, MemoryError):
        return "image too large (out of memory while decoding)"
    if isinstance(exc, PermissionError):
        return "unreadable file: permission denied"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return f"unreadable file: {exc.strerror.lower()}"  # from the OS, not Pillow
    message = _one_line(str(exc)) or type(exc).__name__
    # "not enough image data": Pillow's Python decoders (plain PBM/PGM/PPM) stopping at EOF
    if (
        isinstance(exc, (EOFError, struct.error))
        or "truncated" in message.lower()
        or "not enough image data" in message.lower()
    ):
        return "truncated image data"
    return f"corrupt image data: {message}"


def _pixels_in_message(message: str) -> int | None:
    # "Image size (400000000 pixels) exceeds limit of ..."
    start = message.find("(")
    end = message.find(" pixels)")
    if 0 <= start < end:
        try:
            return int(message[start + 1 : end])
        except ValueError:
            return None
    return None


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ImageFile.LOAD_TRUNCATED_IMAGES must be False while we decode (see module
# docstring). Reference-counted so concurrent load_rgb calls agree.
_truncation_lock = threading.Lock()
_truncation_users = 0
_truncation_saved: bool = False


@contextmanager
def _strict_truncation() -> Iterator[None]:
    global _truncation_users, _truncation_saved
    with _truncation_lock:
        if _truncation_users == 0:
            _truncation_saved = ImageFile.LOAD_TRUNCATED_IMAGES
            if _truncation_saved:
                ImageFile.LOAD_TRUNCATED_IMAGES = False
        _truncation_users += 1
    try:
        yield
    finally:
        with _truncation_lock:
            _truncation_users -= 1
            if _truncation_users == 0 and _truncation_saved:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved

