"""Find the image files under a folder (pipeline stage 1, DESIGN.md).

``discover_images`` walks a folder recursively and returns the image files it
holds as POSIX-style paths relative to that folder, in an order that depends
only on the names (never on the filesystem's directory order or the locale),
so the same folder always gives the same list, on any machine.

Rules:

- An image is a regular file (or a symlink to one) whose extension is in
  :data:`IMAGE_EXTENSIONS`, compared case-insensitively (``a.PNG`` counts).
  Discovery looks at names only; whether the bytes really are an image is
  decided later by :func:`collapse_audit.decode.load_rgb`, which records bad
  files instead of aborting the scan.
- Hidden entries (name starts with ``.``) are skipped, files and folders
  alike: ``.DS_Store``, ``.cache/``, ``.ipynb_checkpoints/``, ``.git/``.
  The root itself may be hidden; only entries below it are filtered.
- Symlinks to files are followed. Symlinks to folders are followed too, but
  each real folder is walked at most once (tracked by device and inode), so
  a symlink loop, or two links to the same folder, cannot repeat or hang the
  walk; the first path in sorted order wins.
- Entries with an image name that cannot be used are not dropped silently:
  :func:`discover` lists them in ``Discovery.unreadable`` with a reason --
  a dangling symlink, a symlink loop, a FIFO (never opened: ``open`` would
  block forever), a socket or device, an entry whose ``stat`` fails -- so
  the caller records them as failures and counts them in ``n_files``.
  :func:`discover_images` returns the usable candidates only.
- Sub-folders that cannot be listed (permission denied) are skipped and
  listed in ``Discovery.skipped_folders``; only a root that does not exist,
  is not a folder or cannot be listed raises
  :class:`~collapse_audit.errors.InputError`.
- Order: sorted by the tuple of path components, comparing names by Unicode
  code point (plain ``str`` ordering, no locale, no case folding). So
  ``a/z.png`` sorts before ``a.png`` (``"a" < "a.png"``) and ``B.png``
  before ``a.png``: the order of a depth-first walk that lists each folder's
  entries sorted by name.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "Discovery", "discover", "discover_images", "is_image_name"]

#: Lower-case file extensions (with the dot) treated as images: pytorch-fid's
#: set plus gif, and the whole Netpbm family (pbm/pgm/ppm/pnm) that Pillow reads.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".pbm", ".pgm", ".ppm", ".pnm"}
)


@dataclass
class Discovery:
    """What :func:`discover` found under a folder (all paths relative, POSIX, sorted by components).

    ``files``: image files to decode. ``unreadable``: ``(path, reason)`` of
    entries with an image name that cannot be read at all (dangling
    symlink, symlink loop, FIFO, socket, device, failing ``stat``): record
    them as failures; they count in ``n_files``. ``skipped_folders``:
    ``(path, reason)`` of sub-folders that could not be listed.
    """

    files: list[str] = field(default_factory=list)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped_folders: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        """Candidate files: readable ones plus unreadable ones."""
        return len(self.files) + len(self.unreadable)

    def failures(self) -> list[dict]:
        """``unreadable`` as failure records ``{"path", "reason"}``."""
        return [{"path": p, "reason": r} for p, r in self.unreadable]

    def empty_message(self, root) -> str:
        """The one-line InputError message for a folder with no usable image file (``files`` empty)."""
        if self.unreadable:
            p, reason = self.unreadable[0]
            return f"{root}: none of the {self.n_files} image files could be read (e.g. {p}: {reason})"
        return f"{root}: no image files found (looked for {' '.join(sorted(IMAGE_EXTENSIONS))}, recursively)"

    def merge_into(self, result):
        """Add ``unreadable`` to an embedding result's ``failures`` and ``n_files``; returns ``result``.

        ``result`` is anything with ``failures`` (list of ``{"path", "reason"}``)
        and ``n_files`` (int), e.g. :class:`collapse_audit.embedding.EmbedResult`,
        and optionally a ``stats`` dict (its ``n_files``/``n_failed`` are
        updated). The failures end up in discovery order (sorted by path
        components), as the embedder's own are.
        """
        if not self.unreadable:
            return result
        merged = [*result.failures, *self.failures()]
        merged.sort(key=lambda f: tuple(str(f["path"]).split("/")))
        result.failures = merged
        result.n_files = int(result.n_files) + len(self.unreadable)
        stats = getattr(result, "stats", None)
        if isinstance(stats, dict):
            stats["n_files"] = result.n_files
            stats["n_failed"] = len(merged)
        return result


def is_image_name(name: str) -> bool:
    """True when ``name`` has an image extension (case-insensitive) and is not hidden."""
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def discover_images(root: Path | str) -> list[str]:
    """Return the image files under ``root``, recursively, as sorted relative POSIX paths.

    The usable candidates of :func:`discover` (``discover(root).files``);
    entries that cannot be read at all are left out -- use :func:`discover`
    to record them.

    Parameters
    ----------
    root:
        The folder to walk.

    Returns
    -------
    list[str]
        Paths relative to ``root`` with ``/`` separators (``"cats/001.png"``),
        sorted by path components; ``[]`` when the folder holds no images
        (the caller decides whether that is an error).

    Raises
    ------
    InputError
        ``root`` does not exist, is not a folder, or cannot be listed.
    """
    return discover(root).files


def discover(root: Path | str) -> Discovery:
    """Walk ``root`` recursively: image files, unreadable image-named entries and unlistable folders.

    Same walk, rules and order as :func:`discover_images` (see the module
    docstring); raises :class:`InputError` for a root that does not exist,
    is not a folder or cannot be listed. Never opens a file.
    """
    root_path = Path(root)
    try:
        st = os.stat(root_path)
    except FileNotFoundError:
        raise InputError(f"folder not found: {root_path}") from None
    except OSError as exc:
        raise InputError(f"cannot read folder {root_path}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InputError(f"not a folder: {root_path} (give a folder of images)")
    try:
        with os.scandir(root_path):
            pass
    except OSError as exc:
        raise InputError(f"cannot read folder {root_path}: {exc.strerror or exc}") from None

    found: list[tuple[str, ...]] = []
    bad: list[tuple[tuple[str, ...], str]] = []
    skipped: list[tuple[tuple[str, ...], str]] = []
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    _walk(os.fspath(root_path), (), visited, found, bad, skipped)
    found.sort()
    bad.sort()
    skipped.sort()
    return Discovery(
        files=["/".join(parts) for parts in found],
        unreadable=[("/".join(parts), reason) for parts, reason in bad],
        skipped_folders=[("/".join(parts), reason) for parts, reason in skipped],
    )


def _stat_failure(entry: os.DirEntry, exc: OSError) -> str:
    """Why an image-named entry cannot even be stat'ed, in a few words."""
    try:
        link = entry.is_symlink()
    except OSError:
        link = False
    if exc.errno == errno.ELOOP:
        return "unreadable: symlink loop"
    if link and isinstance(exc, FileNotFoundError):
        return "unreadable: dangling symlink (its target does not exist)"
    if isinstance(exc, FileNotFoundError):
        return "unreadable: file vanished during discovery"
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    return f"unreadable: {(exc.strerror or str(exc)).lower()}"


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _walk(
    folder: str,
    prefix: tuple[str, ...],
    visited: set[tuple[int, int]],
    found: list[tuple[str, ...]],
    bad: list[tuple[tuple[str, ...], str]],
    skipped: list[tuple[tuple[str, ...], str]],
) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        # unreadable sub-folder: skip it, keep the scan going, say so
        skipped.append((prefix, f"folder cannot be listed: {(exc.strerror or str(exc)).lower()}"))
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            # follows symlinks; never opens the entry (a FIFO would block)
            st = entry.stat(follow_symlinks=True)
        except OSError as exc:
            if is_image_name(name):
                bad.append((prefix + (name,), _stat_failure(entry, exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                continue  # symlink loop or second link to the same folder
            visited.add(key)
            _walk(entry.path, prefix + (name,), visited, found, bad, skipped)
        elif is_image_name(name):
            if stat.S_ISREG(st.st_mode):
                found.append(prefix + (name,))
            else:
                bad.append((prefix + (name,), f"not a regular file: a {_kind(st.st_mode)}, not opened"))
