"""Writing output files safely: checked before the work, atomic, and never half-written.

Every file the tool writes (``results.json``, ``report.html``, JUnit XML, the
GitHub step summary, ``.npz`` features) goes through here, so that

- a destination that cannot be written (a folder where a file is wanted, a
  file where a folder is wanted, a read-only folder, a missing parent) is
  refused *before* any decoding or embedding, with one line that says what to
  change (:func:`check_output_dir`, :func:`check_output_file`);
- a write that fails part-way (a full disk) leaves no temporary file behind
  and reaches the user as one line (:class:`~collapse_audit.errors.EnvironmentFault`,
  exit 2), never as an internal error (:func:`write_atomic`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import EnvironmentFault

__all__ = ["ARTEFACTS", "append_text", "check_output_dir", "check_output_file", "describe_os_error", "remove_stale_artefacts", "write_atomic", "write_npz_atomic"]

# The files a scan writes into its --out folder; a new scan into the same folder
# replaces them all, so nothing there is left from an earlier run.
ARTEFACTS = ("results.json", "report.html", "report_data.json")


def describe_os_error(e: OSError) -> str:
    """``'No space left on device'`` and the like: the OS reason without the Python noise."""
    return e.strerror or (errno.errorcode.get(e.errno or 0) if e.errno else None) or type(e).__name__


def _probe_dir(d: Path, what: str, option: str) -> None:
    try:
        fd, probe = tempfile.mkstemp(prefix=".collapse-audit-probe-", dir=d)
    except OSError as e:
        raise EnvironmentFault(f"{option} {d}: cannot write {what} there ({describe_os_error(e)}); choose a writable folder") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:  # pragma: no cover - the probe is ours; nothing to lose
        pass


def check_output_dir(path: str | os.PathLike, *, what: str = "results", option: str = "--out") -> Path:
    """Create ``path`` if needed and check a file can be written in it; raise :class:`EnvironmentFault` if not."""
    d = Path(path)
    if d.exists() and not d.is_dir():
        raise EnvironmentFault(f"{option} {d}: is a file, not a folder; give a folder for the {what}")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFault(f"{option} {d}: cannot create the folder ({describe_os_error(e)}); choose a writable folder") from None
    _probe_dir(d, what, option)
    return d


def check_output_file(path: str | os.PathLike, *, what: str = "the file", option: str = "-o", create_parent: bool = True) -> Path:
    """Check ``path`` can be (re)written as a file; raise :class:`EnvironmentFault` if not.

    Refuses a path that is a folder, and a parent that is not a folder or is
    not writable. With ``create_parent`` a missing parent folder is created.
    """
    p = Path(path)
    if p.is_dir():
        raise EnvironmentFault(f"{option} {p}: is a folder; give a file name for {what}")
    parent = p.parent if str(p.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise EnvironmentFault(f"{option} {p}: {parent} is a file, not a folder")
    if not parent.exists():
        if not create_parent:
            raise EnvironmentFault(f"{option} {p}: the folder {parent} does not exist; create it first")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EnvironmentFault(f"{option} {p}: cannot create {parent} ({describe_os_error(e)})") from None
    if p.exists() and not os.access(p, os.W_OK):
        raise EnvironmentFault(f"{option} {p}: the file is not writable; choose another path")
    _probe_dir(parent, what, option)
    return p


@contextlib.contextmanager
def _atomic_file(path: Path, what: str):
    """A binary file object whose content replaces ``path`` by rename when the block ends without error.

    On an OS error the temporary file is removed and :class:`EnvironmentFault` says what could not be written.
    """
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        raise EnvironmentFault(f"cannot write {what} to {path} ({describe_os_error(e)}); free space or choose another folder") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def write_atomic(path: str | os.PathLike, data: str | bytes, *, what: str | None = None) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    Readers see the old file or the new one, never a half-written one. On any
    OS error (disk full, permissions) the temporary file is removed and an
    :class:`EnvironmentFault` says what could not be written.
    """
    p = Path(path)
    with _atomic_file(p, what or str(p)) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def append_text(path: str | os.PathLike, text: str, *, what: str, option: str) -> Path:
    """Append ``text`` to ``path`` (for ``GITHUB_STEP_SUMMARY``); :class:`EnvironmentFault` on OS errors."""
    p = Path(path)
    try:
        with p.open("a", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise EnvironmentFault(f"{option} {p}: cannot append {what} ({describe_os_error(e)})") from None
    return p


def remove_stale_artefacts(out_dir: str | os.PathLike, keep: tuple[str, ...] = ()) -> list[str]:
    """Delete the files an earlier scan wrote into ``out_dir`` (:data:`ARTEFACTS`) except ``keep``; return their names."""
    removed = []
    for name in ARTEFACTS:
        if name in keep:
            continue
        f = Path(out_dir) / name
        if f.is_file() or f.is_symlink():
            try:
                f.unlink()
                removed.append(name)
            except OSError as e:
                raise EnvironmentFault(f"--out {out_dir}: cannot remove the earlier run's {name} ({describe_os_error(e)})") from None
    return removed


def write_npz_atomic(path: str | os.PathLike, arrays: dict, *, what: str) -> Path:
    """``np.savez(path, **arrays)`` (uncompressed, so features can be memory-mapped) through a temporary
    file and a rename; on an OS error the temporary file is removed and :class:`EnvironmentFault` raised."""
    import numpy as np

    p = Path(path)
    with _atomic_file(p, what) as f:
        np.savez(f, **arrays)
    return p
