"""Decoding and resizing on the model's device: JPEGs in batches through nvJPEG, Pillow for the rest.

On a GPU, Inception-v3 costs ~6 GMACs per image and PIL decoding and resizing
in worker processes become the bottleneck. This path keeps the workers to
reading bytes and checking headers, and does the rest on the device:

1. A worker reads each file and looks at its header (:func:`probe_jpeg`). A
   plain JPEG (``FF D8 FF`` magic, Pillow reads it as JPEG in mode RGB or L,
   no EXIF rotation, an end-of-image marker, within the pixel and
   aspect-ratio limits) goes on as bytes. Anything else, a PNG, a CMYK JPEG,
   a rotated or truncated one, a PNG named ``.jpg``, goes through the usual
   Pillow path in the worker (:func:`collapse_audit.embedding.decode_and_preprocess`),
   with the same failure records as without this path.
2. The main process decodes the batch's JPEG bytes with
   ``torchvision.io.decode_jpeg(..., device=...)`` (nvJPEG on CUDA,
   libjpeg-turbo on CPU); a batch the decoder rejects is retried file by file,
   and a file it still rejects is decoded by Pillow, which gives the same
   pixels or the same failure reason as the usual path.
3. Each embedder's device preprocessing (:meth:`Embedder.device_preprocess`:
   the clean resize as two matrix products, :mod:`collapse_audit.resize`, or
   pytorch-fid's bilinear resize) runs on the decoded batch, grouped by size.

On CPU, libjpeg-turbo through torchvision gives the same pixels as Pillow
(tested), and the matrices reproduce Pillow's resize to float32 rounding, so
the features equal the usual path's to ~1e-5. nvJPEG's IDCT may differ from
libjpeg-turbo by a level or two on some pixels; those features are then not
bit-equal to the CPU path's (the GPU figures are measured on a GPU, not here).

torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they
still work in the pinned torchvision, and moving to TorchCodec's decoder is a
change of this module alone.
"""
from __future__ import annotations

import io
import os
import stat
from typing import Callable, Sequence


from . import decode as D

__all__ = ["probe_jpeg", "decode_jpegs", "DeviceDecodeDataset", "device_batches", "keep_items"]

_JPEG_MAGIC = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"
_ORIENTATION = 0x0112


def probe_jpeg(path: str, max_pixels: int, max_aspect_ratio: float = D.DEFAULT_MAX_ASPECT_RATIO) -> bytes | None:
    """The file's bytes when the device decoder can take it as is, else None (the Pillow path decides).

    Header only: nothing is decoded here. ``None`` for anything that is not a
    plain 8-bit RGB/greyscale JPEG within the limits, has an EXIF orientation
    other than 1, or does not end with an end-of-image marker (truncated).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < 4:
            return None
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if not data.startswith(_JPEG_MAGIC) or _EOI not in data[-64:]:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
            w, h = im.size
            if im.format != "JPEG" or im.mode not in ("RGB", "L") or w <= 0 or h <= 0:
                return None
            if w * h > max_pixels or max(w, h) > max_aspect_ratio * min(w, h):
                return None
            if im.getexif().get(_ORIENTATION, 1) not in (None, 1):
                return None
    except Exception:
        return None
    return data


def decode_jpegs(datas: Sequence[bytes], device: str) -> list:
    """CHW uint8 RGB tensors on ``device`` (None where the decoder rejects a file): one batched call, then one by one."""
    import warnings

    import torch

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    if not tensors:
        return []
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its image codecs in favour of TorchCodec; they still work, and the
        # warning on every call would reach the user once per batch
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            out = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
            return list(out)
        except Exception:
            res = []
            for t in tensors:
                try:
                    res.append(decode_jpeg(t, mode=ImageReadMode.RGB, device=device))
                except Exception:
                    res.append(None)
            return res


class DeviceDecodeDataset:
    """Map-style dataset: item -> (index, needs, ("jpeg", bytes) | ("tensors", {id: CHW}), failure reason or None)."""

    def __init__(self, files: Sequence[str], indices: Sequence[int], needs: Sequence[tuple[str, ...]], preprocess: dict,
                 max_pixels: int, fallback: Callable):
        self.files, self.indices, self.needs = list(files), list(indices), list(needs)
        self.preprocess, self.max_pixels = preprocess, max_pixels
        self.fallback = fallback  # (path, needs, preprocess, max_pixels) -> ({id: CHW}, reason): the Pillow path

    def __len__(self):
        return len(self.files)

    def __getitem__(self, k):
        data = probe_jpeg(self.files[k], self.max_pixels)
        if data is not None:
            return self.indices[k], self.needs[k], ("jpeg", data), None
        out, reason = self.fallback(self.files[k], self.needs[k], self.preprocess, self.max_pixels)
        return self.indices[k], self.needs[k], ("tensors", out), reason


def keep_items(items):
    """The DataLoader's collate function here: the items as they are (decoding happens after)."""
    return items


def device_batches(items, files_by_index: dict, embedders: dict, device: str, max_pixels: int, fallback: Callable,
                   stats: dict | None = None):
    """One DataLoader batch of :class:`DeviceDecodeDataset` items -> ``({id: (indices, preprocessed batch)}, failures)``.

    ``stats["n_device_decoded"]`` / ``stats["n_pillow_decoded"]`` count where each image was decoded.

    Decoded JPEGs are preprocessed on ``device`` per embedder and per image size;
    JPEGs the decoder rejects fall back to Pillow in this process.
    """
    import torch

    fails: list[tuple[int, str]] = []
    per_e: dict[str, list[tuple[list[int], object]]] = {}
    jpeg = [(i, needs, payload[1]) for i, needs, payload, reason in items if reason is None and payload[0] == "jpeg"]
    for i, needs, payload, reason in items:
        if reason is not None:
            fails.append((i, reason))
        elif payload[0] == "tensors":
            for eid, t in payload[1].items():
                per_e.setdefault(eid, []).append(([i], t[None].to(device)))
    decoded = decode_jpegs([d for _, _, d in jpeg], device)
    if stats is not None:
        n_dev = sum(img is not None for img in decoded)
        stats["n_device_decoded"] = stats.get("n_device_decoded", 0) + n_dev
        stats["n_pillow_decoded"] = stats.get("n_pillow_decoded", 0) + len(items) - n_dev
    groups: dict[tuple, list[tuple[int, tuple, object]]] = {}
    for (i, needs, _), img in zip(jpeg, decoded):
        if img is None:  # the decoder said no: Pillow decides (pixels or the usual failure reason)
            out, reason = fallback(files_by_index[i], needs, {e: embedders[e].preprocess_fn for e in needs}, max_pixels)
            if reason is not None:
                fails.append((i, reason))
            for eid, t in out.items():
                per_e.setdefault(eid, []).append(([i], t[None].to(device)))
            continue
        groups.setdefault((tuple(img.shape), needs), []).append((i, needs, img))
    for (shape, needs), members in groups.items():
        x = torch.stack([m[2] for m in members])
        idx = [m[0] for m in members]
        for eid in needs:
            per_e.setdefault(eid, []).append((idx, embedders[eid].device_preprocess()(x)))
    batches = {}
    for eid, parts in per_e.items():
        idx = [j for p in parts for j in p[0]]
        batches[eid] = (idx, torch.cat([p[1] for p in parts]) if len(parts) > 1 else parts[0][1])
    return batches, fails
