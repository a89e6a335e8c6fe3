"""Content-addressed feature cache.

Key: (embedder id, SHA-256 of the file's bytes). A second scan of an
unchanged folder therefore does no decoding and no model work, a renamed or
moved file is still a hit, and a changed file is a miss. Decode failures are
cached too, keyed by content and decoder version, so a broken file is not
re-read on every scan.

To avoid re-hashing every file on every run, the SHA-256 of a path is
memoised against its (size, mtime_ns, inode); any change to those re-hashes it.

Storage is one SQLite database (WAL mode, safe for concurrent readers and a
writer) under ``<cache dir>/features.sqlite``.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .decode import file_sha256

SCHEMA = """
CREATE TABLE IF NOT EXISTS features (embedder TEXT NOT NULL, sha TEXT NOT NULL, dim INTEGER NOT NULL,
    vec BLOB NOT NULL, PRIMARY KEY (embedder, sha));
CREATE TABLE IF NOT EXISTS failures (decoder TEXT NOT NULL, sha TEXT NOT NULL, reason TEXT NOT NULL,
    PRIMARY KEY (decoder, sha));
CREATE TABLE IF NOT EXISTS filehash (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, sha TEXT);
"""


class FeatureCache:
    """SQLite-backed store of feature vectors and decode failures by content hash."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- file hashes --------------------------------------------------------
    def hash_files(self, paths: Sequence[str], workers: int = 4) -> list[str | None]:
        """SHA-256 of each file (None if unreadable), memoised by size/mtime/inode."""
        abs_paths = [os.path.abspath(p) for p in paths]
        stats: list[os.stat_result | None] = []
        for p in abs_paths:
            try:
                stats.append(os.stat(p))
            except OSError:
                stats.append(None)
        known: dict[str, tuple] = {}
        with self._lock:
            for chunk in _chunks(abs_paths, 500):
                q = f"SELECT path, size, mtime_ns, ino, sha FROM filehash WHERE path IN ({','.join('?' * len(chunk))})"
                for row in self._db.execute(q, chunk):
                    known[row[0]] = row[1:]
        out: list[str | None] = [None] * len(paths)
        todo = []
        for i, (p, st) in enumerate(zip(abs_paths, stats)):
            if st is None:
                continue
            k = known.get(p)
            if k and k[0] == st.st_size and k[1] == st.st_mtime_ns and k[2] == st.st_ino:
                out[i] = k[3]
            else:
                todo.append(i)

        def work(i):
            try:
                return i, file_sha256(abs_paths[i])
            except OSError:
                return i, None

        rows = []
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
                for i, sha in ex.map(work, todo):
                    out[i] = sha
                    st = stats[i]
                    if sha is not None:
                        rows.append((abs_paths[i], st.st_size, st.st_mtime_ns, st.st_ino, sha))
        if rows:
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO filehash VALUES (?,?,?,?,?)", rows)
                self._db.commit()
        return out

    # -- features -----------------------------------------------------------
    def get_features(self, embedder_id: str, shas: Iterable[str]) -> dict[str, np.ndarray]:
        shas = list(dict.fromkeys(s for s in shas if s))
        found: dict[str, np.ndarray] = {}
        with self._lock:
            for chunk in _chunks(shas, 500):
                q = f"SELECT sha, dim, vec FROM features WHERE embedder=? AND sha IN ({','.join('?' * len(chunk))})"
                for sha, dim, blob in self._db.execute(q, [embedder_id, *chunk]):
                    found[sha] = np.frombuffer(blob, dtype=np.float32, count=dim)
        return found

    def put_features(self, embedder_id: str, shas: Sequence[str], feats: np.ndarray) -> None:
        feats = np.ascontiguousarray(feats, dtype=np.float32)
        rows = [(embedder_id, s, int(feats.shape[1]), feats[i].tobytes()) for i, s in enumerate(shas) if s]
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO features VALUES (?,?,?,?)", rows)
            self._db.commit()

    # -- failures -----------------------------------------------------------
    def get_failures(self, decoder_id: str, shas: Iterable[str]) -> dict[str, str]:
        shas = list(dict.fromkeys(s for s in shas if s))
        found: dict[str, str] = {}
        with self._lock:
            for chunk in _chunks(shas, 500):
                q = f"SELECT sha, reason FROM failures WHERE decoder=? AND sha IN ({','.join('?' * len(chunk))})"
                for sha, reason in self._db.execute(q, [decoder_id, *chunk]):
                    found[sha] = reason
        return found

    def put_failures(self, decoder_id: str, items: Sequence[tuple[str, str]]) -> None:
        rows = [(decoder_id, sha, reason) for sha, reason in items if sha]
        if not rows:
            return
        with self._lock:
            self._db.executemany("INSERT OR REPLACE INTO failures VALUES (?,?,?)", rows)
            self._db.commit()


def _chunks(seq: Sequence, n: int):
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
