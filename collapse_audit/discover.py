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
- Sub-folders that cannot be listed (permission denied) are skipped; only a
  root that does not exist, is not a folder or cannot be listed raises
  :class:`~collapse_audit.errors.InputError`.
- Order: sorted by the tuple of path components, comparing names by Unicode
  code point (plain ``str`` ordering, no locale, no case folding). So
  ``a/z.png`` sorts before ``a.png`` (``"a" < "a.png"``) and ``B.png``
  before ``a.png``: the order of a depth-first walk that lists each folder's
  entries sorted by name.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InputError

__all__ = ["IMAGE_EXTENSIONS", "discover_images", "is_image_name"]

#: Lower-case file extensions (with the dot) treated as images.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
)


def is_image_name(name: str) -> bool:
    """True when ``name`` has an image extension (case-insensitive) and is not hidden."""
    if name.startswith("."):
        return False
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def discover_images(root: Path | str) -> list[str]:
    """Return the image files under ``root``, recursively, as sorted relative POSIX paths.

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
    visited: set[tuple[int, int]] = {(st.st_dev, st.st_ino)}
    _walk(os.fspath(root_path), (), visited, found)
    found.sort()
    return ["/".join(parts) for parts in found]


def _walk(
    folder: str,
    prefix: tuple[str, ...],
    visited: set[tuple[int, int]],
    found: list[tuple[str, ...]],
) -> None:
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return  # unreadable sub-folder: skip it, keep the scan going
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        try:
            # follows symlinks; a broken link raises or reports neither kind
            st = entry.stat(follow_symlinks=True)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key in visited:
                continue  # symlink loop or second link to the same folder
            visited.add(key)
            _walk(entry.path, prefix + (name,), visited, found)
        elif stat.S_ISREG(st.st_mode) and is_image_name(name):
            found.append(prefix + (name,))
