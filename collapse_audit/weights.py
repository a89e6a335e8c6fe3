"""Model weights: where they come from, where they live, how they are verified.

Weights are downloaded on first use from the same public locations the
reference tools use, verified by SHA-256 before use, and cached. The cache
directory is, in order of precedence: the ``cache_dir`` argument (the CLI's
``--cache-dir``), the ``COLLAPSE_AUDIT_CACHE`` environment variable, and the
platform's user cache directory (``platformdirs.user_cache_dir``).

Machines without internet import a file copied by hand
(``collapse-audit models import inception FILE``); when weights are missing
and cannot be downloaded, :class:`~collapse_audit.errors.WeightsError` names
the URL, the expected hash and the path to put the file at.

Hash verification: pytorch-fid publishes the FID Inception weights with the
first 8 hex digits of the file's SHA-256 in its name
(``pt_inception-2015-12-05-6726825d.pth``), the torch.hub convention. Where
the registry knows the full SHA-256 it is checked in full; otherwise the
published prefix is checked, and the full SHA-256 of the file that was used
is recorded in every output, so two runs can be compared exactly.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import WeightsError

ENV_CACHE = "COLLAPSE_AUDIT_CACHE"


@dataclass(frozen=True)
class WeightsSpec:
    """A downloadable weights file and how to check it."""

    name: str
    filename: str
    url: str
    sha256_prefix: str
    description: str
    sha256: str | None = None  # full digest, when published

    def matches(self, digest: str) -> bool:
        if self.sha256:
            return digest == self.sha256
        return digest.startswith(self.sha256_prefix)

    @property
    def expected(self) -> str:
        return self.sha256 or f"starting {self.sha256_prefix}, the prefix published in the file name"


REGISTRY: dict[str, WeightsSpec] = {
    "inception": WeightsSpec(
        name="inception",
        filename="pt_inception-2015-12-05-6726825d.pth",
        url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth",
        sha256_prefix="6726825d",
        description="FID Inception-v3 (TensorFlow 2015-12-05 graph, PyTorch port by pytorch-fid), 2048-d pool3 features",
    ),
}


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The weights and feature cache root (``--cache-dir`` > ``$COLLAPSE_AUDIT_CACHE`` > user cache)."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("collapse-audit"))


def weights_dir(override: str | os.PathLike | None = None) -> Path:
    return cache_dir(override) / "weights"


def spec(name: str) -> WeightsSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise WeightsError(
            f"unknown model '{name}'; known: {', '.join(sorted(REGISTRY))} "
            "(CLIP weights are managed by open_clip: see 'collapse-audit models list')"
        ) from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def expected_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """Where the weights file for ``name`` lives (or must be put) in the cache."""
    return weights_dir(cache) / spec(name).filename


def missing_message(s: WeightsSpec, dest: Path, why: str) -> str:
    return (
        f"{s.name} weights are not available ({why}). Download {s.url} "
        f"(SHA-256 {s.expected}) on a machine with internet and put it at {dest} "
        f"or run 'collapse-audit models import {s.name} FILE'; "
        f"or run with '--weights random' for an offline baseline"
    )


def verify(name: str, path: str | os.PathLike) -> str:
    """Check a weights file against the registry; return its full SHA-256."""
    s = spec(name)
    digest = sha256_file(path)
    if not s.matches(digest):
        raise WeightsError(
            f"{path}: SHA-256 {digest} does not match the expected {s.expected} for {name} weights; "
            f"the file is corrupt or not {s.filename}"
        )
    return digest


ProgressHook = Callable[[int, int | None], None]


def download(url: str, dest: Path, progress: ProgressHook | None = None, timeout: float = 30.0) -> None:
    """Stream ``url`` to ``dest`` atomically (temp file + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total_i = int(total) if total and total.isdigit() else None
            done = 0
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total_i)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch(
    name: str,
    cache: str | os.PathLike | None = None,
    *,
    allow_download: bool = True,
    progress: ProgressHook | None = None,
) -> tuple[Path, str]:
    """Return ``(path, sha256)`` of verified weights, downloading them if needed.

    Raises :class:`WeightsError` with the URL, expected hash and destination
    when the file is absent and cannot be downloaded, or fails verification.
    """
    s = spec(name)
    dest = expected_path(name, cache)
    if dest.exists():
        return dest, verify(name, dest)
    if not allow_download or os.environ.get("COLLAPSE_AUDIT_OFFLINE") == "1":
        raise WeightsError(missing_message(s, dest, "offline"))
    try:
        download(s.url, dest, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise WeightsError(missing_message(s, dest, f"download failed: {reason}")) from None
    try:
        return dest, verify(name, dest)
    except WeightsError:
        bad = dest.with_suffix(dest.suffix + ".corrupt")
        os.replace(dest, bad)
        raise


def import_file(name: str, file: str | os.PathLike, cache: str | os.PathLike | None = None) -> tuple[Path, str]:
    """Copy a hand-carried weights file into the cache after verifying it."""
    src = Path(file)
    if not src.is_file():
        raise WeightsError(f"{src}: no such file")
    digest = verify(name, src)
    dest = expected_path(name, cache)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dest.resolve():
        shutil.copyfile(src, dest)
    return dest, digest


def load_state_dict(path: str | os.PathLike) -> dict:
    """Load a state dict safely (``torch.load(..., weights_only=True)``)."""
    import torch

    import warnings

    try:
        with warnings.catch_warnings():  # torch warns (several lines) before refusing an unsafe pickle
            warnings.simplefilter("ignore")
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such weights file") from None
    except Exception as e:  # pickle errors, zip errors, unsafe globals
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a loadable PyTorch state dict ({msg})") from None
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict (a mapping of tensor names), got {type(sd).__name__}")
    return sd


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``url``'s host (port 443/80) opens within ``timeout`` seconds.

    Used before a download that a library would otherwise retry for a minute
    on a machine with no network: offline is detected at once.
    """
    import socket
    from urllib.parse import urlparse

    u = urlparse(url if "://" in url else f"https://{url}")
    if not u.hostname:
        return False
    port = u.port or (80 if u.scheme == "http" else 443)
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False
