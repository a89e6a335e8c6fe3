"""Where class labels and subgroup attributes come from.

Four sources, in the order a scan prefers them:

- a manifest CSV (:func:`read_manifest`): ``path`` plus optional ``label``,
  ``side`` and any number of attribute columns (``perceived_gender``,
  ``age_group``, ...);
- folder names (:func:`folder_labels`): ``real/cat/001.png`` is a ``cat``;
- CLIP zero-shot prompts (:func:`zero_shot_classify` for classes,
  :func:`zero_shot_subgroup` for attributes), Radford et al. (2021),
  "Learning Transferable Visual Models From Natural Language Supervision",
  ICML, section 3.1.4 (prompt ensembling);
- a k-nearest-neighbour classifier trained on the labelled real images
  (:func:`knn_classify`, checked by :func:`knn_agreement`), which works in
  any embedding space, including a user's own domain embedder.

A user-supplied TorchScript classifier is an embedder whose outputs are
logits; :func:`labels_from_logits` turns those into names.

Everything here takes arrays and lists and returns lists, arrays or small
dataclasses; user mistakes (bad manifest, empty class list, bad subgroup
spec) raise :class:`collapse_audit.errors.InputError` /
:class:`collapse_audit.errors.UsageError` with a one-line message.
"""
from __future__ import annotations

import csv
import io
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import InputError, UsageError
from .index import knn, normalise_rows

SIDES = ("real", "gen")

#: A subset of the 80 ImageNet prompt templates published with CLIP
#: (OpenAI, ``notebooks/Prompt_Engineering_for_ImageNet.ipynb``), used for
#: prompt ensembling (Radford et al. 2021, section 3.1.4).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a close-up photo of a {}.",
    "a drawing of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
    "a bright photo of a {}.",
    "a cropped photo of a {}.",
    "a good photo of a {}.",
    "a rendering of a {}.",
)

#: CLIP's learned logit scale at the end of training (exp(t) clipped at 100).
CLIP_LOGIT_SCALE = 100.0


# --------------------------------------------------------------------------- manifest


def _norm_rel(p: str) -> str:
    """POSIX-normalised relative path (``./a//b`` -> ``a/b``)."""
    p = p.strip()
    n = posixpath.normpath(p) if p else p
    return "" if n == "." else n


@dataclass
class Manifest:
    """A parsed manifest: labels and attributes per (side, relative path).

    ``attributes`` lists the attribute columns in file order; ``has_labels``
    says whether a ``label`` column exists; ``rows`` maps ``(side, path)``
    (side ``None`` for rows without a ``side``) to ``(label, {attr: value})``.
    Empty cells are ``None`` (unknown).
    """

    path: str
    attributes: list[str]
    has_labels: bool
    rows: dict[tuple[str | None, str], tuple[str | None, dict[str, str | None]]] = field(repr=False)

    def lookup(self, side: str, paths: Sequence[str]) -> tuple[list[str | None], dict[str, list[str | None]]]:
        """Labels and attributes for ``paths`` (relative to ``side``'s root, POSIX).

        A row whose ``side`` is set applies to that side only and wins over a
        row without ``side`` for the same path; a row without ``side`` applies
        to whichever side has that relative path. Paths not in the manifest
        get ``None`` everywhere.
        """
        if side not in SIDES:
            raise ValueError(f"side must be 'real' or 'gen', not {side!r}")
        empty: tuple[str | None, dict[str, str | None]] = (None, {})
        labels: list[str | None] = []
        attrs: dict[str, list[str | None]] = {a: [] for a in self.attributes}
        for p in paths:
            key = _norm_rel(str(p))
            lab, av = self.rows.get((side, key)) or self.rows.get((None, key)) or empty
            labels.append(lab)
            for a in self.attributes:
                attrs[a].append(av.get(a))
        return labels, attrs

    def n_matched(self, side: str, paths: Sequence[str]) -> int:
        """How many of ``paths`` have a row that applies to ``side``."""
        return sum(1 for p in paths if (side, _norm_rel(str(p))) in self.rows or (None, _norm_rel(str(p))) in self.rows)


def read_manifest(path) -> Manifest:
    """Read a manifest CSV (header row; UTF-8, a BOM is accepted).

    Columns: ``path`` (required; relative to the side's root, POSIX
    separators), ``label`` (optional class label), ``side`` (optional,
    ``real`` or ``gen``; empty = either side) and any other column = an
    attribute. Empty cells mean unknown. Errors (missing or empty file, no
    ``path`` column, an empty or absolute path, a bad ``side``, a row with
    too many cells, the same path twice for one side) raise
    :class:`InputError` naming the file and the row (1-based line number).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"manifest {p}: no such file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise InputError(f"manifest {p}: cannot be read ({(e.strerror or type(e).__name__).lower()})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # UTF-8 byte order mark (Excel's "CSV UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise InputError(f"manifest {p}: UTF-16 text; save it as UTF-8 (CSV UTF-8 in Excel)") from None
        line = raw[: e.start].count(b"\n") + 1
        raise InputError(f"manifest {p}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); "
                         "save it as UTF-8 (CSV UTF-8 in Excel)") from None
    if not text.strip():
        raise InputError(f"manifest {p}: the file is empty (expected a header row with a 'path' column)")
    # the csv module splits records itself (newline='': quoted cells may hold newlines, U+2028, ...);
    # str.splitlines would also split on U+2028, U+0085, \x0b, \x0c, \x1c-\x1e inside cells
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records = _csv_records(reader, p)
    try:
        _, header = next(records)
    except StopIteration:
        raise InputError(f"manifest {p}: the file is empty (expected a header row with a 'path' column)") from None
    header = [h.strip() for h in header]
    if "path" not in header:
        raise InputError(f"manifest {p}: no 'path' column in the header ({', '.join(header) or 'empty'})")
    if len(set(header)) != len(header) or "" in header:
        raise InputError(f"manifest {p}: header has empty or repeated column names ({', '.join(header)})")
    i_path = header.index("path")
    i_label = header.index("label") if "label" in header else None
    i_side = header.index("side") if "side" in header else None
    attr_cols = [(i, h) for i, h in enumerate(header) if h not in ("path", "label", "side")]
    rows: dict = {}
    n = 0
    for line_no, cells in records:
        if not cells or all(not c.strip() for c in cells):
            continue
        if len(cells) > len(header):
            raise InputError(f"manifest {p}, row {line_no}: {len(cells)} cells but the header has {len(header)} columns")
        cells = [c.strip() for c in cells] + [""] * (len(header) - len(cells))
        rel = cells[i_path]
        if not rel:
            raise InputError(f"manifest {p}, row {line_no}: empty path")
        if rel.startswith("/") or re.match(r"^[A-Za-z]:[\\/]", rel):
            raise InputError(f"manifest {p}, row {line_no}: path {rel!r} is absolute; give it relative to the side's folder")
        key = _norm_rel(rel)
        side = None
        if i_side is not None and cells[i_side]:
            side = cells[i_side].lower()
            if side not in SIDES:
                raise InputError(f"manifest {p}, row {line_no}: side must be 'real', 'gen' or empty, not {cells[i_side]!r}")
        if (side, key) in rows:
            where = f"side {side}" if side else "rows without a side"
            raise InputError(f"manifest {p}, row {line_no}: path {rel!r} appears twice ({where})")
        label = (cells[i_label] or None) if i_label is not None else None
        rows[(side, key)] = (label, {h: (cells[i] or None) for i, h in attr_cols})
        n += 1
    if n == 0:
        raise InputError(f"manifest {p}: the file has a header but no rows")
    return Manifest(path=str(p), attributes=[h for _, h in attr_cols], has_labels=i_label is not None, rows=rows)


def _csv_records(reader, p):
    """``(line, cells)`` per CSV record; ``line`` is the 1-based line on which the record starts.

    A malformed record (an unterminated quote, a NUL byte, a cell over the
    csv module's field size limit) is a one-line :class:`InputError`.
    """
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            hint = "a quoted cell is never closed" if "end of data" in str(e) else str(e)
            raise InputError(f"manifest {p}, line {start}: not valid CSV ({hint})") from None
        yield start, cells
        start = reader.line_num + 1


# --------------------------------------------------------------------------- folders


def folder_labels(paths: Sequence[str]) -> list[str | None]:
    """Class label = the top-level sub-folder of each relative path (``cat/x.png`` -> ``cat``).

    Files at the side's root get ``None`` (unknown). Paths are POSIX and
    relative to the side's root.
    """
    out: list[str | None] = []
    for p in paths:
        parts = [c for c in _norm_rel(str(p)).split("/") if c]
        out.append(parts[0] if len(parts) > 1 else None)
    return out


# --------------------------------------------------------------------------- zero-shot


def _l2n(x: np.ndarray) -> np.ndarray:
    return normalise_rows(np.asarray(x), dtype=np.float64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_text_embeddings(
    class_names: Sequence[str],
    text_encoder: Callable[[list[str]], np.ndarray],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> np.ndarray:
    """Prompt-ensembled zero-shot class embeddings (Radford et al. 2021, section 3.1.4).

    For each class c: ``w_c = normalize(mean_t normalize(T(template_t.format(c))))``
    where T is the text encoder. Returns float64 (C, D), unit rows. All
    prompts go to the encoder in one call (it batches).
    """
    names = list(class_names)
    tpl = list(templates)
    if not names:
        raise UsageError("zero-shot classification needs at least one class name")
    if not tpl or any("{}" not in t for t in tpl):
        raise UsageError("every zero-shot template must contain '{}' for the class name")
    prompts = [t.format(c) for c in names for t in tpl]
    emb = _l2n(np.asarray(text_encoder(prompts)))
    if emb.ndim != 2 or emb.shape[0] != len(prompts):
        raise ValueError(f"text encoder returned shape {emb.shape} for {len(prompts)} prompts")
    return _l2n(emb.reshape(len(names), len(tpl), -1).mean(axis=1))


def zero_shot_classify(
    image_feats: np.ndarray,
    class_names: Sequence[str],
    text_encoder: Callable[[list[str]], np.ndarray],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> tuple[list[str], np.ndarray]:
    """CLIP zero-shot classification with prompt ensembling (Radford et al. 2021, section 3.1.4).

    Class embeddings from :func:`class_text_embeddings`; image features are
    L2-normalised; ``probs = softmax(100 * cos(image, class))`` (CLIP's logit
    scale) and the label is the argmax.

    Parameters
    ----------
    image_feats : (N, D) CLIP image features (normalised or not).
    class_names : C names, each inserted into every template.
    text_encoder : list of prompts -> (P, D) text features, e.g.
        ``functools.partial(collapse_audit.embedders.clip_encode_text, clip_embedder)``.
    templates : format strings with one ``{}``.

    Returns
    -------
    labels : N class names.  probs : (N, C) float64, rows sum to 1.
    """
    names = list(class_names)
    w = class_text_embeddings(names, text_encoder, templates)
    x = np.asarray(image_feats)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"image features {x.shape} do not match text features of dimension {w.shape[1]}")
    probs = _softmax(CLIP_LOGIT_SCALE * (_l2n(x) @ w.T)) if x.shape[0] else np.zeros((0, len(names)))
    return [names[i] for i in probs.argmax(axis=1)], probs


def parse_classes(text: str | None, file: str | None) -> list[str]:
    """Class names from ``--classes "a,b,c"`` or ``--classes-file`` (one per line; ``#`` comments).

    Names are stripped and de-duplicated (first occurrence kept); an empty
    result, or both sources at once, is a usage error.
    """
    if text is not None and file is not None:
        raise UsageError("give the class names with --classes or --classes-file, not both")
    if file is not None:
        p = Path(file)
        try:
            raw = [ln for ln in p.read_text(encoding="utf-8-sig").splitlines() if not ln.lstrip().startswith("#")]
        except OSError:
            raise InputError(f"classes file {p}: cannot be read") from None
        where = f"classes file {p}"
    elif text is not None:
        raw = text.split(",")
        where = "--classes"
    else:
        raise UsageError("no class names given (use --classes \"cat,dog\" or --classes-file FILE)")
    out: list[str] = []
    for r in raw:
        r = r.strip()
        if r and r not in out:
            out.append(r)
    if not out:
        raise UsageError(f"{where}: no class names found")
    return out


# --------------------------------------------------------------------------- subgroups


@dataclass(frozen=True)
class SubgroupSpec:
    """A zero-shot attribute: its name, the group names and one CLIP prompt per group."""

    name: str
    groups: list[str]
    prompts: list[str]


_ARTICLES = {"a", "an", "the"}


def _derive_names(prompts: list[str]) -> list[str]:
    """Short group names from prompts: drop the words all prompts share at the start and end, then a leading article."""
    words = [re.sub(r"[\s.!?,;:]+$", "", p).split() for p in prompts]
    if len(words) < 2:
        return [" ".join(w) for w in words]
    pre_max = 0
    while all(len(w) > pre_max for w in words) and len({w[pre_max].lower() for w in words}) == 1:
        pre_max += 1
    # the longest shared prefix, then the longest shared suffix, that leave every name non-empty and distinct
    for pre in range(pre_max, -1, -1):
        suf_max = 0
        while all(len(w) > pre + suf_max for w in words) and len({w[-1 - suf_max].lower() for w in words}) == 1:
            suf_max += 1
        for suf in range(suf_max, -1, -1):
            mids = [w[pre : len(w) - suf] for w in words]
            mids = [m[1:] if len(m) > 1 and m[0].lower() in _ARTICLES else m for m in mids]
            names = [" ".join(m) for m in mids]
            if all(names) and len(set(names)) == len(names):
                return names
    return [" ".join(w) for w in words]


def parse_subgroup(spec: str) -> SubgroupSpec:
    """Parse ``ATTR=PROMPT|PROMPT|...`` or ``ATTR=NAME:PROMPT|NAME:PROMPT|...``.

    Examples: ``perceived_gender=a photo of a man|a photo of a woman`` gives
    groups ``man``, ``woman`` (the words shared by every prompt at the start
    and end are dropped, then a leading article);
    ``age=young:a photo of a young person|old:a photo of an old person``
    names them explicitly. An item is ``NAME:PROMPT`` when it contains a
    colon, so a prompt that contains a colon needs an explicit name. Needs
    at least two groups, distinct names and distinct prompts.
    """
    s = (spec or "").strip()
    if "=" not in s:
        raise UsageError(f"subgroup {spec!r}: expected ATTR=PROMPT|PROMPT (e.g. perceived_gender=a photo of a man|a photo of a woman)")
    attr, rest = (x.strip() for x in s.split("=", 1))
    if not attr or any(c in attr for c in "|:"):
        raise UsageError(f"subgroup {spec!r}: the attribute name before '=' is empty or contains '|' or ':'")
    items = [it.strip() for it in rest.split("|")]
    if any(not it for it in items):
        raise UsageError(f"subgroup {spec!r}: empty group between '|' separators")
    if len(items) < 2:
        raise UsageError(f"subgroup {spec!r}: needs at least two groups separated by '|'")
    names: list[str | None] = []
    prompts: list[str] = []
    for it in items:
        if ":" in it:
            n, pr = (x.strip() for x in it.split(":", 1))
            if not n or not pr:
                raise UsageError(f"subgroup {spec!r}: item {it!r} must be NAME:PROMPT with both parts non-empty")
            names.append(n)
            prompts.append(pr)
        else:
            names.append(None)
            prompts.append(it)
    if len(set(prompts)) != len(prompts):
        raise UsageError(f"subgroup {spec!r}: the same prompt is given twice")
    implicit = [i for i, n in enumerate(names) if n is None]
    if implicit:
        derived = _derive_names([prompts[i] for i in implicit]) if len(implicit) > 1 else [prompts[implicit[0]]]
        for i, d in zip(implicit, derived):
            names[i] = d
    if len(set(names)) != len(names):
        raise UsageError(f"subgroup {spec!r}: group names are not distinct ({', '.join(map(str, names))})")
    return SubgroupSpec(name=attr, groups=[str(n) for n in names], prompts=prompts)


def zero_shot_subgroup(
    image_feats: np.ndarray,
    spec: SubgroupSpec,
    text_encoder: Callable[[list[str]], np.ndarray],
) -> tuple[list[str], np.ndarray]:
    """Perceived attribute by CLIP zero-shot: argmax over the groups' prompt embeddings (Radford et al. 2021).

    One prompt per group (no template ensembling); ``probs = softmax(100 *
    cos)``. The result is a model's perception, not a ground-truth attribute.
    """
    w = _l2n(np.asarray(text_encoder(list(spec.prompts))))
    if w.ndim != 2 or w.shape[0] != len(spec.prompts):
        raise ValueError(f"text encoder returned shape {w.shape} for {len(spec.prompts)} prompts")
    x = np.asarray(image_feats)
    if x.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"image features {x.shape} do not match text features of dimension {w.shape[1]}")
    probs = _softmax(CLIP_LOGIT_SCALE * (_l2n(x) @ w.T)) if x.shape[0] else np.zeros((0, len(spec.groups)))
    return [spec.groups[i] for i in probs.argmax(axis=1)], probs


# --------------------------------------------------------------------------- kNN


def _labelled(real_feats: np.ndarray, real_labels: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x = np.asarray(real_feats)
    if x.ndim != 2 or x.shape[0] != len(real_labels):
        raise ValueError(f"real features {x.shape} and {len(real_labels)} labels do not match")
    keep = np.array([lab is not None for lab in real_labels], dtype=bool)
    names = sorted({lab for lab in real_labels if lab is not None})
    code = {n: i for i, n in enumerate(names)}
    y = np.array([code[lab] for lab in real_labels if lab is not None], dtype=np.int64)
    return x[keep], y, names


def _vote(neigh: np.ndarray, n_classes: int, block: int = 4096) -> np.ndarray:
    """Majority label per row of ``neigh`` (codes, nearest first); ties go to the label seen nearest."""
    m, k = neigh.shape
    out = np.empty(m, dtype=np.int64)
    for s in range(0, m, block):
        nb = neigh[s : s + block]
        r = np.arange(nb.shape[0])
        counts = np.zeros((nb.shape[0], n_classes), dtype=np.int64)
        first = np.full((nb.shape[0], n_classes), k, dtype=np.int64)
        for j in range(k - 1, -1, -1):
            np.add.at(counts, (r, nb[:, j]), 1)
            first[r, nb[:, j]] = j
        out[s : s + block] = np.argmax(counts * (k + 1) + (k - first), axis=1)
    return out


def knn_classify(real_feats: np.ndarray, real_labels: Sequence[str | None], query_feats: np.ndarray, k: int = 10) -> list[str]:
    """k-nearest-neighbour labels from the labelled real images (Cover & Hart 1967), exact search with FAISS.

    Euclidean neighbours (``IndexFlatL2``; on L2-normalised CLIP features the
    same order as cosine). Majority vote among the k nearest labelled real
    images; a tie goes to the tied label whose nearest member is closest.
    Real images with label ``None`` are ignored.
    """
    x, y, names = _labelled(real_feats, real_labels)
    if x.shape[0] == 0:
        raise ValueError("kNN classification needs at least one labelled real image")
    q = np.asarray(query_feats)
    if q.shape[0] == 0:
        return []
    _, idx = knn(q, x, min(int(k), x.shape[0]))
    return [names[i] for i in _vote(y[idx], len(names))]


def knn_agreement(real_feats: np.ndarray, real_labels: Sequence[str | None], k: int = 10) -> float:
    """Leave-one-out accuracy of :func:`knn_classify` on the labelled real images (self excluded).

    How far the kNN labels of generated images can be trusted in this
    embedding space: near 1 when classes are separable, near the majority
    class share when they are not. Needs at least two labelled real images.
    """
    x, y, names = _labelled(real_feats, real_labels)
    if x.shape[0] < 2:
        raise ValueError("kNN agreement needs at least two labelled real images")
    _, idx = knn(x, x, min(int(k), x.shape[0] - 1), exclude_self=True)
    return float(np.mean(_vote(y[idx], len(names)) == y))


def labels_from_logits(logits: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Argmax class names for a (N, C) array of classifier logits (or probabilities)."""
    z = np.asarray(logits)
    names = list(class_names)
    if z.ndim != 2 or z.shape[1] != len(names):
        raise UsageError(f"the classifier gives {z.shape[-1] if z.ndim else 0} outputs but {len(names)} class names were given")
    return [names[i] for i in z.argmax(axis=1)]
