"""Content-addressed feature cache.

Key: (embedder id, SHA-256 of the file's bytes). A second scan of an
unchanged folder therefore does no decoding and no model work, a renamed or
moved file is still a hit, and a changed file is a miss.

Failures are cached too, so a broken file is not re-read on every scan, in
the ``failures`` table under a key (column ``decoder``) and the content
hash. Two kinds are kept apart:

- a *decode* failure (the bytes are not a usable image) is a property of the
  bytes and of the decoder, so it is keyed by the decoder id alone
  (``pillow-rgb-v1:max<pixels>``) and shared by every embedder;
- a *preprocessing* failure (the image decoded, but one embedder's
  preprocessing rejected it) is keyed by ``<decoder id>|preprocess:<embedder
  id>``: it marks the file failed for that embedder only, never for another
  embedder whose preprocessing accepts it. (Rows written by older versions
  under the bare decoder id with a "preprocessing failed for" reason are
  ignored.)

Stat shortcut. To avoid re-hashing every file on every run, the SHA-256 of a
path is memoised in ``filehash_v2`` with the file's ``size``, ``mtime_ns``,
``ctime_ns`` and inode as the stat saw them just before the file was read,
and ``hashed_ns``, the wall-clock time (``time.time_ns()``) just before the
file was read. The memoised hash is used only when all of these hold:

1. the path's current size, ``mtime_ns``, ``ctime_ns`` and inode all equal
   the recorded ones. The change time is in the key because any write, and
   also ``os.utime``, sets it to "now" and no user call can set it back: an
   in-place edit that keeps the size and restores the modification time is
   still seen (on POSIX; on Windows ``st_ctime`` is the creation time and
   only size, mtime and inode protect the shortcut);
2. the entry is not "racy": ``max(mtime_ns, ctime_ns) < hashed_ns -
   RACY_MARGIN_NS`` (2 s). A file whose timestamp is within the
   filesystem's timestamp granularity (up to 2 s on FAT, 1 s on some network
   filesystems and older ext3/HFS+) of the moment it was hashed may have
   been written again within the same timestamp tick, after it was read,
   without any stat field changing; such an entry is distrusted and the file
   is re-hashed next time (when, normally, it is no longer racy). Files with
   timestamps in the future are therefore always re-hashed;
3. re-hashing is not forced: ``FeatureCache(..., rehash=True)``,
   ``hash_files(..., rehash=True)`` (and ``embed_files``/``embed_folder``'s
   ``rehash=True``) or the environment variable ``COLLAPSE_AUDIT_REHASH=1``
   (also ``true``/``yes``/``on``) hash every file and refresh its entry.

A hash is stored only when a second stat taken after reading the file
equals the first (a file changing while it is read is re-hashed next
time). Rows of the old ``filehash`` table (no change time) are not used.

Damage. The cache is disposable: nothing in it is needed for a correct
result, so damage never stops a scan. A database that SQLite reports as
corrupt (``sqlite3.DatabaseError`` "file is not a database" / "database disk
image is malformed" on open or on any query, or ``PRAGMA quick_check`` not
``ok`` on open) is closed, renamed with its ``-wal``/``-shm`` files to
``features.sqlite.corrupt-<YYYYmmdd-HHMMSS>`` (kept for inspection) and
replaced by an empty one; everything is then recomputed. A cached feature
row is ignored (and deleted) when its blob is not ``dim * 4`` bytes (legacy
rows) or ``dim * 4 + 4`` bytes whose last 4 bytes are the little-endian
CRC-32 of the vector (rows written by this version), when its dimension is
not the embedder's, or when it holds a NaN or infinity; those files are
recomputed. A cache location that cannot be used (the path is a file, a
read-only or uncreatable folder) makes :func:`open_feature_cache` return
``None``, so the scan runs without the cache; any other SQLite error during
a run (disk full, a lock held for over a minute) switches the cache off for
the rest of the run. Each of these is reported by one
:class:`~collapse_audit.errors.CollapseAuditWarning` line; the library never
prints.

Storage is one SQLite database (WAL mode, safe for concurrent readers and a
writer) under ``<cache dir>/features.sqlite``.
"""
from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .decode import file_sha256
from .errors import CollapseAuditWarning

SCHEMA = """
CREATE TABLE IF NOT EXISTS features (embedder TEXT NOT NULL, sha TEXT NOT NULL, dim INTEGER NOT NULL,
    vec BLOB NOT NULL, PRIMARY KEY (embedder, sha));
CREATE TABLE IF NOT EXISTS failures (decoder TEXT NOT NULL, sha TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (decoder, sha));
CREATE TABLE IF NOT EXISTS filehash_v2 (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, sha TEXT NOT NULL, hashed_ns INTEGER NOT NULL);
"""

#: An entry whose file timestamp is this close to (or after) the time it was hashed is re-hashed.
RACY_MARGIN_NS = 2_000_000_000
#: Environment variable forcing every file to be re-hashed (``1``, ``true``, ``yes`` or ``on``).
ENV_REHASH = "COLLAPSE_AUDIT_REHASH"
#: Reason prefix of a preprocessing failure (see ``collapse_audit.embedding.decode_and_preprocess``).
PREPROCESS_FAILURE_PREFIX = "preprocessing failed for "

_SHA_RE = re.compile(r"[0-9a-f]{64}\Z")
# SQLite primary result codes meaning the file itself is damaged: CORRUPT, FORMAT, NOTADB.
_CORRUPT_CODES = {11, 24, 26}


class CacheUnavailable(Exception):
    """The cache location cannot be used (not a folder, not writable, cannot be created)."""


class _Corrupt(Exception):
    """``PRAGMA quick_check`` found damage."""


def preprocess_failure_key(decoder_id: str, embedder_id: str) -> str:
    """The ``failures.decoder`` key of a failure in ``embedder_id``'s preprocessing."""
    return f"{decoder_id}|preprocess:{embedder_id}"


def rehash_from_env() -> bool:
    return os.environ.get(ENV_REHASH, "").strip().lower() in ("1", "true", "yes", "on")


def open_feature_cache(path: str | os.PathLike, *, rehash: bool | None = None) -> "FeatureCache | None":
    """A :class:`FeatureCache` at ``path``, or ``None`` (after one warning) when the location cannot be used."""
    try:
        return FeatureCache(path, rehash=rehash)
    except CacheUnavailable as e:
        warnings.warn(f"{e}; running without the feature cache", CollapseAuditWarning, stacklevel=2)
        return None


class FeatureCache:
    """SQLite-backed store of feature vectors and failures by content hash.

    ``rehash``: ``True`` ignores the stat shortcut (every file is hashed
    again), ``False`` uses it, ``None`` (default) follows
    ``$COLLAPSE_AUDIT_REHASH``. Raises :class:`CacheUnavailable` when the
    location cannot be used; a corrupt database is moved aside and replaced
    (see the module docstring).
    """

    def __init__(self, path: str | os.PathLike, *, rehash: bool | None = None):
        self._memory = str(path) == ":memory:"
        self.path = Path(path)
        self.rehash = rehash
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._ino: int | None = None
        if not self._memory:
            parent = self.path.parent
            if parent.exists() and not parent.is_dir():
                raise CacheUnavailable(f"feature cache folder {parent} is a file, not a folder")
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CacheUnavailable(f"feature cache folder {parent} cannot be created ({_os_reason(e)})") from None
            if self.path.is_dir():
                raise CacheUnavailable(f"feature cache {self.path} is a folder, not a database file")
        try:
            self._db = self._connect(check=True)
        except (sqlite3.DatabaseError, _Corrupt) as e:
            if isinstance(e, _Corrupt) or _is_corrupt(e):
                self._replace_corrupt(_one_line(e))
                if self._db is None:
                    raise CacheUnavailable(f"feature cache {self.path} is corrupt ({_one_line(e)}) and could not be replaced") from None
            else:
                raise CacheUnavailable(f"feature cache {self.path} cannot be opened ({_one_line(e)})") from None
        except OSError as e:
            raise CacheUnavailable(f"feature cache {self.path} cannot be opened ({_os_reason(e)})") from None

    # -- connection ---------------------------------------------------------
    def _connect(self, check: bool) -> sqlite3.Connection:
        if not self._memory:  # the file this connection opens: only that one may be moved aside
            try:
                self._ino = os.stat(self.path).st_ino
            except FileNotFoundError:
                self._ino = None
        db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            if check:
                rows = db.execute("PRAGMA quick_check(1)").fetchall()
                if rows != [("ok",)]:
                    raise _Corrupt("PRAGMA quick_check: " + " ".join(str(r[0]) for r in rows).replace("\n", " ").strip())
            db.executescript(SCHEMA)
            db.commit()
            if not self._memory:
                self._ino = os.stat(self.path).st_ino
        except BaseException:
            db.close()
            raise
        return db

    def _replace_corrupt(self, reason: str) -> None:
        """Close, move the damaged database aside, open an empty one (or switch the cache off)."""
        self._close_db()
        if self._memory:
            self._warn(f"in-memory feature cache is corrupt ({reason}); continuing without it")
            return
        try:
            moved = self._move_aside()
        except OSError as e:
            self._warn(f"feature cache {self.path} is corrupt ({reason}); could not move it aside "
                       f"({_os_reason(e)}); continuing without the cache")
            return
        try:
            self._db = self._connect(check=False)
        except (sqlite3.Error, OSError) as e:
            self._warn(f"feature cache {self.path} is corrupt ({reason}); moved it to {moved} but could not create "
                       f"a new one ({_one_line(e)}); continuing without the cache")
            return
        where = f"moved it to {moved}" if moved else "another process already replaced it"
        self._warn(f"feature cache {self.path} is corrupt ({reason}); {where}; recomputing")

    def _move_aside(self) -> Path | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        if self._ino is not None and st.st_ino != self._ino:
            return None  # someone else moved the damaged file and created a fresh one already
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while dest.exists():
            dest = self.path.with_name(f"{self.path.name}.corrupt-{stamp}.{n}")
            n += 1
        os.replace(self.path, dest)
        for suffix in ("-wal", "-shm"):  # a stale WAL must not be replayed into the new database
            side = Path(f"{self.path}{suffix}")
            try:
                os.replace(side, f"{dest}{suffix}")
            except FileNotFoundError:
                pass
            except OSError:
                side.unlink(missing_ok=True)
        self._ino = None
        return dest

    def _disable(self, reason: str) -> None:
        self._close_db()
        self._warn(f"feature cache {self.path} failed ({reason}); continuing without the cache for this run")

    def _close_db(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None

    def _warn(self, message: str) -> None:
        warnings.warn(message, CollapseAuditWarning, stacklevel=3)

    def _run(self, fn, default, retry: bool = False):
        """``fn(db)`` under the lock; on a SQLite error: replace a corrupt database, else switch the cache off."""
        with self._lock:
            for attempt in range(2):
                if self._db is None:
                    return default
                try:
                    return fn(self._db)
                except sqlite3.Error as e:
                    try:
                        self._db.rollback()
                    except sqlite3.Error:
                        pass
                    if _is_corrupt(e):
                        self._replace_corrupt(_one_line(e))
                        if retry and attempt == 0:
                            continue
                    else:
                        self._disable(_one_line(e))
                    return default
            return default

    @property
    def enabled(self) -> bool:
        """False once the cache has been switched off for this run (after a warning)."""
        return self._db is not None

    def close(self) -> None:
        with self._lock:
            self._close_db()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- file hashes --------------------------------------------------------
    def hash_files(self, paths: Sequence[str], workers: int = 4, *, rehash: bool | None = None) -> list[str | None]:
        """SHA-256 of each file (None if unreadable), memoised by the stat shortcut of the module docstring.

        ``rehash``: ``True`` hashes every file again; ``None`` follows the
        cache's ``rehash`` and then ``$COLLAPSE_AUDIT_REHASH``.
        """
        if rehash is None:
            rehash = self.rehash
        if rehash is None:
            rehash = rehash_from_env()
        abs_paths = [os.path.abspath(p) for p in paths]
        stats: list[os.stat_result | None] = []
        for p in abs_paths:
            try:
                stats.append(os.stat(p))
            except OSError:
                stats.append(None)

        def lookup(db):
            found: dict[str, tuple] = {}
            for chunk in _chunks(abs_paths, 500):
                q = ("SELECT path, size, mtime_ns, ctime_ns, ino, sha, hashed_ns FROM filehash_v2 "
                     f"WHERE path IN ({','.join('?' * len(chunk))})")
                for row in db.execute(q, chunk):
                    found[row[0]] = row[1:]
            return found

        known = {} if rehash else self._run(lookup, {})
        out: list[str | None] = [None] * len(paths)
        todo = []
        for i, (p, st) in enumerate(zip(abs_paths, stats)):
            if st is None:
                continue
            k = known.get(p)
            if k and _shortcut_ok(k, st):
                out[i] = k[4]
            else:
                todo.append(i)

        def work(i):
            t = time.time_ns()
            try:
                sha = file_sha256(abs_paths[i])
                after = os.stat(abs_paths[i])
            except OSError:
                return i, None, t, None
            return i, sha, t, after

        rows = []
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
                for i, sha, t, after in ex.map(work, todo):
                    out[i] = sha
                    st = stats[i]
                    if sha is not None and _stat_key(after) == _stat_key(st):
                        rows.append((abs_paths[i], *_stat_key(st), sha, t))
        if rows:
            def write(db):
                db.executemany("INSERT OR REPLACE INTO filehash_v2 VALUES (?,?,?,?,?,?,?)", rows)
                db.commit()

            self._run(write, None, retry=True)
        return out

    # -- features -----------------------------------------------------------
    def get_features(self, embedder_id: str, shas: Iterable[str], dim: int | None = None) -> dict[str, np.ndarray]:
        """Cached vectors of ``embedder_id`` by content hash; damaged rows are dropped (and deleted) with a warning.

        ``dim``: the embedder's output dimension; rows of another dimension
        are damaged. When it is not known (0 or ``None``), the most common
        dimension among the rows found is kept.
        """
        shas = list(dict.fromkeys(s for s in shas if s))
        wanted = set(shas)

        def read(db):
            rows = []
            for chunk in _chunks(shas, 500):
                q = f"SELECT sha, dim, vec FROM features WHERE embedder=? AND sha IN ({','.join('?' * len(chunk))})"
                rows.extend(db.execute(q, [embedder_id, *chunk]).fetchall())
            return rows

        found: dict[str, np.ndarray] = {}
        bad: dict[str, str] = {}
        for sha, d, blob in self._run(read, []):
            if sha not in wanted:
                continue
            vec, why = _decode_vec(d, blob, dim)
            if vec is None:
                bad[sha] = why
            else:
                found[sha] = vec
        if not dim and found:
            dims = Counter(len(v) for v in found.values())
            if len(dims) > 1:
                keep = dims.most_common(1)[0][0]
                for sha in [s for s, v in found.items() if len(v) != keep]:
                    bad[sha] = f"dimension {len(found.pop(sha))}, others {keep}"
        if bad:
            first = next(iter(bad.values()))
            self._warn(f"feature cache {self.path}: {len(bad)} cached feature row(s) of {embedder_id} are damaged "
                       f"({first}); ignored them and recomputing those files")

            def delete(db):
                db.executemany("DELETE FROM features WHERE embedder=? AND sha=?", [(embedder_id, s) for s in bad])
                db.commit()

            self._run(delete, None)
        return found

    def put_features(self, embedder_id: str, shas: Sequence[str], feats: np.ndarray) -> None:
        """Store rows (float32, with a CRC-32); rows holding NaN or infinity are not stored."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        if feats.ndim != 2:
            return
        finite = np.isfinite(feats).all(axis=1)
        rows = []
        for i, s in enumerate(shas):
            if s and finite[i]:
                b = feats[i].tobytes()
                rows.append((embedder_id, s, int(feats.shape[1]), b + zlib.crc32(b).to_bytes(4, "little")))
        if not rows:
            return

        def write(db):
            db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?)", rows)
            db.commit()

        self._run(write, None, retry=True)

    # -- failures -----------------------------------------------------------
    def get_failures(self, decoder_id: str, shas: Iterable[str]) -> dict[str, str]:
        """Cached failure reasons under the key ``decoder_id`` (a decoder id or :func:`preprocess_failure_key`)."""
        shas = list(dict.fromkeys(s for s in shas if s))

        def read(db):
            found: dict[str, str] = {}
            for chunk in _chunks(shas, 500):
                q = f"SELECT sha, reason FROM failures WHERE decoder=? AND sha IN ({','.join('?' * len(chunk))})"
                for sha, reason in db.execute(q, [decoder_id, *chunk]):
                    if isinstance(reason, str) and reason.strip():
                        found[sha] = reason
            return found

        return self._run(read, {})

    def put_failures(self, decoder_id: str, items: Sequence[tuple[str, str]]) -> None:
        rows = [(decoder_id, sha, reason) for sha, reason in items if sha]
        if not rows:
            return

        def write(db):
            db.executemany("INSERT OR REPLACE INTO failures VALUES (?,?,?)", rows)
            db.commit()

        self._run(write, None, retry=True)


def _stat_key(st: os.stat_result | None) -> tuple | None:
    if st is None:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _shortcut_ok(known: tuple, st: os.stat_result) -> bool:
    size, mtime_ns, ctime_ns, ino, sha, hashed_ns = known
    if (size, mtime_ns, ctime_ns, ino) != _stat_key(st):
        return False
    if not isinstance(sha, str) or not _SHA_RE.match(sha) or not isinstance(hashed_ns, int):
        return False
    return max(mtime_ns, ctime_ns) < hashed_ns - RACY_MARGIN_NS


def _decode_vec(dim, blob, expected: int | None) -> tuple[np.ndarray | None, str]:
    if not isinstance(dim, int) or dim <= 0 or not isinstance(blob, bytes):
        return None, "malformed row"
    if expected and dim != expected:
        return None, f"dimension {dim}, expected {expected}"
    n = dim * 4
    if len(blob) == n + 4:
        if zlib.crc32(blob[:n]) != int.from_bytes(blob[n:], "little"):
            return None, "checksum mismatch"
    elif len(blob) != n:
        return None, f"blob of {len(blob)} bytes for dimension {dim}"
    vec = np.frombuffer(blob, dtype=np.float32, count=dim)
    if not np.isfinite(vec).all():
        return None, "NaN or infinite values"
    return vec, ""


def _is_corrupt(e: BaseException) -> bool:
    """True when SQLite says the database file itself is damaged (not locked, read-only, full, ...)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in _CORRUPT_CODES
    return type(e) is sqlite3.DatabaseError


def _one_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def _os_reason(e: OSError) -> str:
    return e.strerror or _one_line(e)


def _chunks(seq: Sequence, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
