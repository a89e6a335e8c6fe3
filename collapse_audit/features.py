"""The embeddings file (``.npz``) written by ``collapse-audit embed`` and read by ``scan``.

Arrays (all loadable with ``allow_pickle=False``):

- ``features``: float32, N x D
- ``paths``: str, N (relative to the embedded folder)
- ``shas``: str, N (SHA-256 of each file's bytes; optional)
- ``labels``: str, N (optional)
- ``embedder_id``, ``preprocess_id``, ``weights_sha256``: str scalars
- ``random_weights``: bool scalar
- ``meta``: JSON str scalar (an object): format version, embedder description, root, failures

A user-made file needs only ``features`` (and optionally ``paths``/``labels``);
its embedder is then unknown and a scan says so. ``features`` may be any real
float or integer dtype (converted to float32); complex, boolean, string and
object arrays are refused.

Reading is defensive (:func:`read_npz`): the ZIP directory and the ``.npy``
header of every member are checked before any array is inflated, so a
decompression bomb (a few MB that deflate to many GB) or a member whose
header lies about its size is refused with one line instead of filling
memory.
"""
from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import InputError
from .outputs import write_npz_atomic

FORMAT = "collapse-audit-features/1"
UNKNOWN_EMBEDDER = "unknown"

#: Largest numeric array named ``features`` inflated into memory (bytes, as declared by its
#: ``.npy`` header). Memory-mapped (uncompressed float32) features are not bounded by it.
#: The effective limit is also at most half the memory available (see :func:`member_limit`).
MAX_FEATURES_BYTES = 64 << 30
#: Largest string / bytes array (``paths``, ``labels``, ``shas``, ``meta``, ids) read into memory.
MAX_STRING_BYTES = 1 << 30
#: Largest other numeric array (e.g. a statistics file's ``sigma``) read into memory.
MAX_ARRAY_BYTES = 16 << 30
#: A compressed member that inflates to more than :data:`RATIO_CHECK_BYTES` may not
#: inflate more than this many times its compressed size (deflate's ceiling is ~1032x;
#: real embeddings compress by 1.1-3x, zeros by ~1000x).
MAX_COMPRESSION_RATIO = 100
RATIO_CHECK_BYTES = 64 << 20
#: Refuse feature rows with an entry above this magnitude ...
MAX_FEATURE_ABS = 1e18
#: ... or whose squared L2 norm exceeds this: squared distances ``|x - y|^2 <= 4 max(|x|^2, |y|^2)``
#: must stay well inside float32 (max 3.4e38), with a 4x margin for rounding and dot-product forms.
MAX_FEATURE_SQNORM = float(np.finfo(np.float32).max) / 16

_COMPRESSIONS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}


@dataclass
class FeatureSet:
    """Features of one side plus where they came from.

    ``warnings``: one-line notes about what was ignored while reading a file
    (malformed failure records, a bad ``n_files``, ...), for the scan's notes.
    """

    features: np.ndarray
    paths: list[str]
    embedder_id: str = UNKNOWN_EMBEDDER
    preprocess_id: str = ""
    weights_sha256: str | None = None
    random_weights: bool = False
    labels: list[str] | None = None
    shas: list[str] | None = None
    failures: list[dict] = field(default_factory=list)
    embedder: dict = field(default_factory=dict)
    root: str | None = None
    n_files: int | None = None
    warnings: list[str] = field(default_factory=list)


def save_features(path: str | os.PathLike, fs: FeatureSet) -> Path:
    """Write a :class:`FeatureSet` to ``path`` (``.npz`` appended if missing)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT,
        "embedder": fs.embedder,
        "root": fs.root,
        "failures": fs.failures,
        "n_files": fs.n_files,
    }
    arrays = {
        "features": np.ascontiguousarray(fs.features, dtype=np.float32),
        "paths": np.array(fs.paths, dtype=str),
        "embedder_id": np.array(fs.embedder_id),
        "preprocess_id": np.array(fs.preprocess_id),
        "weights_sha256": np.array(fs.weights_sha256 or ""),
        "random_weights": np.array(bool(fs.random_weights)),
        "meta": np.array(json.dumps(meta)),
    }
    if fs.shas is not None:
        arrays["shas"] = np.array(fs.shas, dtype=str)
    if fs.labels is not None:
        arrays["labels"] = np.array(fs.labels, dtype=str)

    write_npz_atomic(path, arrays, what="the embeddings file")
    return path


# --------------------------------------------------------------------------- safe .npz reading
@dataclass(frozen=True)
class NpzMember:
    """One ``NAME.npy`` member of an ``.npz``, as its ZIP directory entry and ``.npy`` header declare it."""

    name: str  # array name (``features``)
    member: str  # ZIP member name (``features.npy``)
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    nbytes: int  # declared data size: prod(shape) * itemsize
    compressed: bool
    compress_size: int  # bytes in the archive


class _Counting:
    """A read-only stream wrapper that counts the bytes read (the ``.npy`` header's length)."""

    def __init__(self, f):
        self._f, self.n = f, 0

    def read(self, size=-1):
        b = self._f.read(size)
        self.n += len(b)
        return b


def _first_line(e: BaseException) -> str:
    s = str(e)
    return s.splitlines()[0] if s.strip() else type(e).__name__


def _available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def member_limit(name: str, dtype: np.dtype) -> int:
    """Largest declared size (bytes) of member ``name`` with ``dtype`` that may be read into memory."""
    if dtype.kind in "USV":
        limit = MAX_STRING_BYTES
    elif name == "features":
        limit = MAX_FEATURES_BYTES
    else:
        limit = MAX_ARRAY_BYTES
    avail = _available_memory()
    if avail:
        limit = min(limit, max(avail // 2, 256 << 20))
    return limit


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.3g} MiB"


def inspect_npz(path: str | os.PathLike, *, what: str = ".npz file") -> dict[str, NpzMember]:
    """The ``.npy`` members of an ``.npz`` with their declared shape, dtype and size; nothing is inflated.

    Reads the ZIP central directory and the first bytes (magic and header,
    NEP 1) of every ``*.npy`` member. Raises a one-line :class:`InputError`
    when the file is not a ZIP archive, a member is encrypted or uses an
    unknown compression, a header is unreadable, declares a negative
    dimension or Python objects, or when the uncompressed size in the ZIP
    directory differs from the size the header declares (header plus
    ``prod(shape) * itemsize``): the directory is then lying about one of
    them. Members that are not ``.npy`` are ignored (never read).
    """
    path = Path(path)
    out: dict[str, NpzMember] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy") or info.is_dir():
                    continue
                name = info.filename[: -len(".npy")]
                where = f"{path}: member {info.filename}"
                if info.flag_bits & 0x1:
                    raise InputError(f"{where} is encrypted; write the file with np.savez")
                if info.compress_type not in _COMPRESSIONS:
                    raise InputError(f"{where} uses an unsupported compression (method {info.compress_type}); write the file with np.savez")
                with zf.open(info) as raw:
                    f = _Counting(raw)
                    try:
                        version = np.lib.format.read_magic(f)
                        if version == (1, 0):
                            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                        elif version in ((2, 0), (3, 0)):
                            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                        else:
                            raise ValueError(f"unknown .npy format version {version}")
                    except (ValueError, EOFError, SyntaxError, TypeError) as e:
                        raise InputError(f"{where} is not a readable .npy array ({_first_line(e)})") from None
                    header_len = f.n
                if dtype.hasobject:
                    raise InputError(f"{where} holds Python objects (pickled data), which are never loaded; store numbers or strings")
                if any(int(s) < 0 for s in shape):
                    raise InputError(f"{where} declares a negative dimension {tuple(shape)}")
                nbytes = math.prod(int(s) for s in shape) * dtype.itemsize
                if info.file_size != header_len + nbytes:
                    raise InputError(
                        f"{where}: its .npy header declares shape {tuple(shape)} {dtype} ({header_len + nbytes} bytes) but the ZIP "
                        f"directory says {info.file_size} bytes uncompressed: the file is corrupt or crafted; write it again with np.savez"
                    )
                out[name] = NpzMember(name=name, member=info.filename, shape=tuple(int(s) for s in shape), dtype=dtype,
                                      fortran_order=bool(fortran), nbytes=nbytes,
                                      compressed=info.compress_type != zipfile.ZIP_STORED, compress_size=info.compress_size)
    except InputError:
        raise
    except zipfile.BadZipFile as e:
        raise InputError(f"{path}: not a readable {what} (not a ZIP archive as np.savez writes: {_first_line(e)})") from None
    except (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.LargeZipFile) as e:
        raise InputError(f"{path}: not a readable {what} ({_first_line(e)})") from None
    return out


def check_member_size(path, m: NpzMember) -> None:
    """Refuse (one-line :class:`InputError`) to inflate a member whose declared size is over its limit or a bomb's ratio."""
    limit = member_limit(m.name, m.dtype)
    if m.nbytes > limit:
        raise InputError(
            f"{path}: '{m.name}' declares shape {m.shape} {m.dtype} = {_gib(m.nbytes)}, over the {_gib(limit)} this machine "
            "allows for it in memory (decompression bomb, or too large: save features uncompressed with np.savez so they "
            "can be memory-mapped)"
        )
    if m.compressed and m.nbytes > RATIO_CHECK_BYTES and m.nbytes > MAX_COMPRESSION_RATIO * max(m.compress_size, 1):
        raise InputError(
            f"{path}: '{m.name}' would inflate from {_gib(m.compress_size)} to {_gib(m.nbytes)} "
            f"({m.nbytes / max(m.compress_size, 1):.0f}x; real embeddings compress < {MAX_COMPRESSION_RATIO}x): "
            "refused as a decompression bomb; save the file with np.savez (uncompressed)"
        )


def read_npz(
    path: str | os.PathLike,
    *,
    skip: Iterable[str] = (),
    only: Iterable[str] | None = None,
    what: str = ".npz file",
    members: dict[str, NpzMember] | None = None,
) -> dict[str, np.ndarray]:
    """Load the arrays of an ``.npz`` safely: headers and sizes are checked first (:func:`inspect_npz`,
    :func:`check_member_size`), then each array is read with ``allow_pickle=False``.

    ``skip``: names not to load (e.g. a memory-mapped ``features``); ``only``:
    load just these names (when present). Any failure is a one-line
    :class:`InputError` naming ``path``.
    """
    path = Path(path)
    if members is None:
        members = inspect_npz(path, what=what)
    skip = set(skip)
    names = [n for n in members if n not in skip and (only is None or n in set(only))]
    for n in names:
        check_member_size(path, members[n])
    data: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for n in names:
                with zf.open(members[n].member) as f:
                    data[n] = np.lib.format.read_array(f, allow_pickle=False)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{path}: not enough memory to read it") from None
    except Exception as e:  # noqa: BLE001 - zipfile/zlib/numpy raise many types for a corrupt member
        raise InputError(f"{path}: not a readable {what} ({_first_line(e)})") from None
    return data


def npz_member_memmap(path: str | os.PathLike, name: str = "features") -> np.memmap | None:
    """Memory-map one array of an uncompressed ``.npz`` file read-only, or return None.

    ``np.savez`` stores each array as a ``NAME.npy`` member of a ZIP archive
    without compression (``ZIP_STORED``), so the raw bytes of the array lie
    contiguously in the file: the member's local file header (PKWARE
    APPNOTE 4.3.7: 30 fixed bytes, then the file name and the *local* extra
    field, whose lengths are the little-endian uint16 at offsets 26 and 28)
    starts at ``ZipInfo.header_offset``; the ``.npy`` header (NEP 1, read
    with ``np.lib.format.read_magic`` / ``read_array_header_1_0|2_0``)
    follows; the C-ordered data follow that.  Returns None (the caller then
    loads normally) when the member is missing, compressed or encrypted, in
    Fortran order, holds objects, or is not float32 (a cast would copy it
    anyway).
    """
    member = name if name.endswith(".npy") else name + ".npy"
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
            return None
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                return None
            n_name = int.from_bytes(local[26:28], "little")
            n_extra = int.from_bytes(local[28:30], "little")
            start = info.header_offset + 30 + n_name + n_extra
            f.seek(start)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:  # pragma: no cover - future .npy versions
                return None
            offset = f.tell()
    except (KeyError, OSError, ValueError, EOFError, SyntaxError, zipfile.BadZipFile):
        return None
    if fortran or dtype != np.dtype(np.float32) or len(shape) != 2 or 0 in shape:
        return None
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if offset - start + nbytes != info.file_size or offset + nbytes > os.path.getsize(path):
        return None
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape), order="C")


# --------------------------------------------------------------------------- feature values
def check_feature_values(x: np.ndarray, name: str = "features", *, chunk_elements: int = 1 << 22) -> None:
    """Refuse features a scan cannot use; one-line :class:`InputError`, nothing returned.

    Checks, in this order: ``x`` is 2-D and non-empty; its dtype is real
    (float or integer; complex, bool, strings, objects, structured and
    datetime arrays are refused); no row holds NaN or infinity; no row has
    an entry with ``|x| > MAX_FEATURE_ABS`` (1e18) or a squared L2
    norm above ``MAX_FEATURE_SQNORM`` (float32 max / 16): float32 squared
    distances between such rows overflow, and the nearest-neighbour search
    then never ends. Values are examined in chunks of about
    ``chunk_elements`` entries, so a memory-mapped ``x`` costs no N x D
    temporary. ``name`` starts every message (e.g. ``"gen.npz: 'features'"``).

    Call it on any array that becomes a side's features (files and arrays
    alike) before casting to float32: a float64 value above float32's range
    would otherwise turn into infinity first.
    """
    x = x if isinstance(x, np.ndarray) else np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty N x D array, got shape {x.shape}")
    k = x.dtype.kind
    if k == "c":
        raise InputError(f"{name} is complex ({x.dtype}); features must be real numbers (store the real and imaginary "
                         "parts as separate columns if both matter)")
    if k == "b":
        raise InputError(f"{name} is boolean; features must be real numbers: cast with .astype(np.float32) if 0/1 features are meant")
    if k not in "fiu":
        raise InputError(f"{name} must be a float or integer array, got {x.dtype}")
    n, d = x.shape
    rows = max(1, chunk_elements // d)
    # float32 is exact enough for a threshold far below its range (an overflow shows as inf, which is refused);
    # float16 would overflow on squaring, integers and float64 need float64
    work = np.float32 if x.dtype in (np.float16, np.float32) else np.float64
    n_nan = n_big = 0
    worst = 0.0
    for s in range(0, n, rows):
        b = np.asarray(x[s : s + rows], dtype=work)
        finite = np.isfinite(b).all(axis=1)
        if not finite.all():
            n_nan += int((~finite).sum())
            b = b[finite]
        if b.shape[0] == 0:
            continue
        amax = np.abs(b).max(axis=1)
        with np.errstate(over="ignore", invalid="ignore"):
            sq = np.einsum("ij,ij->i", b, b)
        big = (amax > MAX_FEATURE_ABS) | ~(sq <= MAX_FEATURE_SQNORM)
        if big.any():
            n_big += int(big.sum())
            worst = max(worst, float(amax.max()))
    if n_nan:
        raise InputError(f"{name} has {n_nan} rows with NaN or infinite values")
    if n_big:
        raise InputError(
            f"{name} has {n_big} of {n} rows too large for float32 distances (max |x| = {worst:.3g}; entries must stay "
            f"below {MAX_FEATURE_ABS:.0e} and squared norms below {MAX_FEATURE_SQNORM:.2g}): rescale or L2-normalise the features"
        )


# --------------------------------------------------------------------------- loading
def load_features_mmap(path: str | os.PathLike) -> FeatureSet:
    """:func:`load_features` with the ``features`` array memory-mapped read-only from the file.

    For files written by :func:`save_features` (``np.savez``, uncompressed)
    the returned ``features`` is a read-only ``np.memmap`` into the ``.npz``
    itself (see :func:`npz_member_memmap`): pages are read on first use, so
    a 1M x 512 float32 side costs no heap memory until touched.  Compressed
    files, or feature arrays that are not C-ordered float32, fall back to a
    normal in-memory load (same result, same checks).
    """
    return load_features(path, mmap=True)


def _strings(path, key: str, arr: np.ndarray, n: int) -> list[str]:
    if arr.dtype.kind not in "USiuf":
        raise InputError(f"{path}: '{key}' must be an array of strings, got {arr.dtype}")
    flat = arr.reshape(-1)
    if arr.dtype.kind == "S":
        v = [bytes(x).decode("utf-8", "replace") for x in flat]
    else:
        v = [str(x) for x in flat]
    if len(v) != n:
        raise InputError(f"{path}: '{key}' has {len(v)} entries but 'features' has {n} rows")
    return v


def _scalar(path, data: dict, key: str, default: str = "") -> str:
    if key not in data:
        return default
    a = data[key]
    if a.size != 1 or a.dtype.kind not in "USiufb":
        raise InputError(f"{path}: '{key}' must be a single string, got a {a.dtype} array of shape {a.shape}")
    v = a.reshape(())[()]
    return bytes(v).decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _read_meta(path, text: str) -> dict:
    try:
        meta = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InputError(f"{path}: 'meta' is not valid JSON; it must be a JSON object (or leave it out)") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: 'meta' must be a JSON object, got a JSON {type(meta).__name__}; write a dict (or leave it out)")
    return meta


_EMBEDDER_STR_KEYS = ("id", "name", "path", "preprocess_id", "weights", "weights_sha256", "arch", "pretrained", "device")


def _clean_meta(path, meta: dict, n: int, warnings: list[str]) -> tuple[list[dict], dict, str | None, int | None]:
    """failures, embedder, root and n_files from ``meta``; malformed parts are dropped with a warning."""
    raw = meta.get("failures")
    failures: list[dict] = []
    if raw is not None and not isinstance(raw, list):
        warnings.append(f"{path}: meta.failures is a {type(raw).__name__}, not a list; ignored")
        raw = []
    bad = 0
    for r in raw or []:
        if isinstance(r, dict) and isinstance(r.get("path"), str) and r.get("path") and "reason" in r and r["reason"] is not None:
            rec = dict(r)
            rec["reason"] = str(rec["reason"])
            failures.append(rec)
        else:
            bad += 1
    if bad:
        warnings.append(f"{path}: {bad} failure record(s) in meta.failures are not objects with 'path' and 'reason'; ignored")

    emb = meta.get("embedder")
    embedder: dict = {}
    if isinstance(emb, dict):
        dropped = []
        for k, v in emb.items():
            if k in _EMBEDDER_STR_KEYS and v is not None and not isinstance(v, str):
                dropped.append(k)
            elif k in ("seed", "dim") and v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                dropped.append(k)
            elif k == "random_weights" and not isinstance(v, bool):
                dropped.append(k)
            else:
                embedder[str(k)] = v
        if dropped:
            warnings.append(f"{path}: meta.embedder fields of the wrong type ignored: {', '.join(map(str, dropped))}")
    elif emb is not None:
        warnings.append(f"{path}: meta.embedder is a {type(emb).__name__}, not an object; ignored")

    root = meta.get("root")
    if root is not None and not isinstance(root, str):
        warnings.append(f"{path}: meta.root is not a string; ignored")
        root = None

    n_files = meta.get("n_files")
    if n_files is not None:
        if isinstance(n_files, bool) or not isinstance(n_files, int) or n_files < n + len(failures):
            warnings.append(f"{path}: meta.n_files ({n_files!r}) is not a count of at least {n + len(failures)} "
                            "(rows plus failures); ignored")
            n_files = None
    return failures, embedder, root, n_files


def load_features(path: str | os.PathLike, *, mmap: bool = False) -> FeatureSet:
    """Read an embeddings file; raises :class:`InputError` with one line on bad input.

    ``mmap=True``: memory-map ``features`` instead of reading it (see
    :func:`load_features_mmap`); other arrays are read normally.

    Refused: anything :func:`inspect_npz` / :func:`check_member_size` refuse
    (decompression bombs, lying headers), features that fail
    :func:`check_feature_values`, ``paths``/``labels``/``shas`` whose length
    differs from the rows, duplicate ``paths``, non-scalar id fields, and a
    ``meta`` that is not a JSON object. Malformed parts of ``meta``
    (failure records without path/reason, a bad ``n_files``) are ignored and
    listed in :attr:`FeatureSet.warnings`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    what = ".npz embeddings file"
    members = inspect_npz(path, what=what)
    if "features" not in members:
        raise InputError(f"{path}: has no 'features' array (found: {', '.join(sorted(members)) or 'nothing'})")
    fm = members["features"]
    if len(fm.shape) != 2 or 0 in fm.shape:
        raise InputError(f"{path}: 'features' must be a non-empty N x D array, got shape {fm.shape}")
    mapped = npz_member_memmap(path) if mmap else None
    data = read_npz(path, skip=("features",) if mapped is not None else (), what=what, members=members)
    feats = mapped if mapped is not None else data["features"]
    check_feature_values(feats, f"{path}: 'features'")
    if mapped is None:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
    n = feats.shape[0]

    def strs(key):
        return _strings(path, key, data[key], n) if key in data else None

    warnings: list[str] = []
    meta = _read_meta(path, _scalar(path, data, "meta")) if "meta" in data else {}
    failures, embedder, root, n_files = _clean_meta(path, meta, n, warnings)
    paths = strs("paths")
    if paths is not None:
        seen: dict[str, int] = {}
        for i, p in enumerate(paths):
            if p in seen:
                raise InputError(f"{path}: 'paths' lists {p!r} twice (rows {seen[p]} and {i}); each row must be a distinct file")
            seen[p] = i
    else:
        paths = [f"#{i}" for i in range(n)]
    if "random_weights" in data:
        rw = data["random_weights"]
        if rw.size != 1 or rw.dtype.kind not in "biu":
            raise InputError(f"{path}: 'random_weights' must be a single boolean, got a {rw.dtype} array of shape {rw.shape}")
        random_weights = bool(rw.reshape(())[()])
    else:
        random_weights = False
    return FeatureSet(
        features=feats,
        paths=paths,
        embedder_id=_scalar(path, data, "embedder_id", UNKNOWN_EMBEDDER) or UNKNOWN_EMBEDDER,
        preprocess_id=_scalar(path, data, "preprocess_id"),
        weights_sha256=_scalar(path, data, "weights_sha256") or None,
        random_weights=random_weights,
        labels=strs("labels"),
        shas=strs("shas"),
        failures=failures,
        embedder=embedder,
        root=root,
        n_files=n_files,
        warnings=warnings,
    )
