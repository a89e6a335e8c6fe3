"""The CI gate: ``--fail-on`` rules, policy files, JUnit XML and the GitHub step summary.

A rule reads ``NAME OP NUMBER`` and names the **failing** condition: the gate
fails when the condition is true.  ``--fail-on "coverage<0.8"`` fails the scan
when coverage is below 0.8 and lets it pass at 0.85 (DESIGN.md, Contracts).

Grammar (spaces are allowed anywhere between the three parts)::

    rule    := NAME OP NUMBER
    OP      := "<" | "<=" | ">" | ">="          (no ==, =, !=: metrics are floats)
    NUMBER  := a decimal float: 0.8, -1, .5, 1e-3, 2.5E+2   (not nan/inf)
    NAME    := ALIAS | KEY
    ALIAS   := one of ALIASES below (fid, coverage, dropped_classes, ...; case-insensitive)
    KEY     := a dotted path into results.json, e.g. metrics.fid or inputs.gen.n_images
               segment  := [A-Za-z0-9_-]+            (after a ".")
                         | [ "quoted" ] | [ 'quoted' ]  (any characters; \\" and \\\\ escape)
                         | [ 0 ]                       (a list index)

A segment holding other characters (an embedder id such as
``clip:ViT-B-32/openai``) is written in brackets with quotes::

    by_embedder["clip:ViT-B-32/openai"].metrics.recall < 0.5

Before the scan (``check_rules_static``, called by the CLI right after parsing):
a KEY must be one the JSON Schema of results.json documents as a number (free
keys where a map has them: ``by_embedder["<id>"]``, ``metrics.ci.<name>``),
else a usage error suggesting the closest key; a rule on ``classes`` needs a
label source, one on ``subgroups`` needs attributes, and ``--no-analysis``
allows neither nor clusters/duplicates. Aliases come from the one table of
metrics, ``keys.METRICS``; renamed ones (``ndb``, ``class_max_gap``,
``subgroup_max_gap``) still work, with a ``CollapseAuditWarning``.

Evaluation (``evaluate``), after the scan:

- a KEY that does not exist, or whose value is not a number (a string, list,
  object or a bool) is a usage error (exit 2), never a pass;
- an ALIAS whose section is null because that analysis did not run (say
  ``dropped_classes`` with no class labels) is a usage error that names what
  enables it;
- a value that is null or NaN (the metric could not be computed) is a
  **violation** with a message saying so: a gate never passes silently on a
  number it does not have.

Policy files (``load_policy``) are TOML::

    # gate.toml
    fail_on = ["coverage<0.8", "dropped_classes>0"]

    [[rule]]                       # the same thing, one table per rule
    metric = "fid"                 # an ALIAS or a KEY
    op = ">"
    value = 50
    description = "FID regression"  # optional, shown in messages and JUnit

Nothing here prints or exits; errors are ``UsageError`` with a one-line message.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import operator
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from . import keys as K
from .errors import CollapseAuditWarning, EnvironmentFault, UsageError
from .outputs import append_text, check_output_file, write_atomic
from .schema import results_schema

__all__ = [
    "ALIASES",
    "TRACK_ALIASES",
    "TRACK_CLASS_ALIASES",
    "OPERATORS",
    "SECTION_HINTS",
    "Alias",
    "GateResult",
    "Rule",
    "RuleOutcome",
    "alias_help",
    "append_github_summary",
    "available_keys",
    "check_rules_static",
    "evaluate",
    "format_key",
    "github_step_summary",
    "load_policy",
    "parse_key",
    "parse_rule",
    "resolve",
    "schema_allows",
    "validate_rules",
    "write_junit",
]

Segment = Union[str, int]

# --------------------------------------------------------------------------- aliases


@dataclass(frozen=True)
class Alias:
    """A documented short name for a number in results.json.

    ``paths`` are dotted keys; ``reduce`` says how they become one number:
    ``"value"`` (the single path's value), ``"len"`` (length of the list at the
    single path), ``"sum"`` (sum of all paths' values) or ``"approx"`` (the
    value; 0 when exact PRDC left no approximation section). Built from
    ``keys.METRICS``; ``name`` is always the canonical alias.
    """

    name: str
    paths: tuple[str, ...]
    reduce: str
    description: str

    @property
    def key(self) -> str:
        """How the alias reads as an expression over results.json (for messages and results)."""
        return K.expression(self.paths, self.reduce)


def _alias_of(spec: K.MetricSpec) -> Alias:
    return Alias(spec.alias, spec.paths, spec.reduce, spec.meaning)


#: Every gate alias, from the one table of metrics (``keys.METRICS``): the canonical
#: names first, then the deprecated spellings (each maps to its canonical Alias,
#: so a rule written with one resolves exactly like the canonical name).
ALIASES: dict[str, Alias] = {s.alias: _alias_of(s) for s in K.METRICS if s.alias}
ALIASES.update({old: ALIASES[new] for old, new in K.DEPRECATED_ALIASES.items()})

#: The aliases of track.json (``collapse-audit track --fail-on``), from ``keys.TRACK_METRICS``.
TRACK_ALIASES: dict[str, Alias] = {s.alias: _alias_of(s) for s in K.TRACK_METRICS}
assert not set(TRACK_ALIASES) & set(ALIASES), "track and scan aliases must differ"
#: Track aliases that read ``run.classes`` (the run needs class labels).
TRACK_CLASS_ALIASES: frozenset = frozenset(a for a, al in TRACK_ALIASES.items() if any(p.startswith("run.classes.") for p in al.paths))


def _alias(name: str) -> Alias:
    return ALIASES[name] if name in ALIASES else TRACK_ALIASES[name]

#: What fills each optional top-level section; used in "section is null" errors.
#: (The CLI may overwrite these strings with its exact option names.)
SECTION_HINTS: dict[str, str] = {
    "clusters": "cluster dropout needs at least 20 real images and runs unless --no-analysis is given",
    "classes": "class dropout needs labels: --labels folders, --manifest FILE with a label column, --classes 'a,b,c' or --classes-file FILE (zero-shot CLIP), --classifier MODEL.pt, or labels in an .npz features file",
    "subgroups": "subgroup gaps need attributes: --manifest FILE with attribute columns for both sides, or --subgroup 'name=prompt A|prompt B'",
    "duplicates": "the duplicate analysis runs unless --no-analysis is given",
}


def alias_help() -> str:
    """One line per alias, ``name  key  description``: for ``--help`` and the README.

    Deprecated spellings come last, each pointing to its canonical alias.
    """
    width = max(len(n) for n in ALIASES)
    kwidth = max(len(a.key) for a in ALIASES.values())
    return "\n".join(
        f"{n:<{width}}  {a.key:<{kwidth}}  "
        + (a.description if n == a.name else f"deprecated spelling of {a.name}; still accepted")
        for n, a in ALIASES.items()
    )


# --------------------------------------------------------------------------- keys

_IDENT = re.compile(r"[A-Za-z0-9_-]+")
_SAFE_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _parse_key_prefix(text: str, pos: int) -> tuple[list[Segment], int]:
    """Parse a KEY starting at ``pos``; return its segments and the index after it.

    Stops at the first character that cannot continue the key (an operator,
    a space, anything else); raises UsageError on a malformed bracket.
    """
    segments: list[Segment] = []
    first = True
    while pos < len(text):
        ch = text[pos]
        if ch == "[":
            seg, pos = _parse_bracket(text, pos)
            segments.append(seg)
        elif ch == "." and not first:
            m = _IDENT.match(text, pos + 1)
            if not m:
                raise UsageError(
                    f"bad key in {text!r}: expected a name after '.' at position {pos + 1}; "
                    f'quote segments with other characters: a["b:c/d"].e'
                )
            segments.append(m.group())
            pos = m.end()
        elif first:
            m = _IDENT.match(text, pos)
            if not m:
                break
            segments.append(m.group())
            pos = m.end()
        else:
            break
        first = False
    return segments, pos


def _parse_bracket(text: str, pos: int) -> tuple[Segment, int]:
    assert text[pos] == "["
    i = pos + 1
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] in "\"'":
        quote = text[i]
        i += 1
        out = []
        while i < len(text) and text[i] != quote:
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            out.append(text[i])
            i += 1
        if i >= len(text):
            raise UsageError(f"bad key in {text!r}: unterminated quote starting at position {pos + 1}")
        seg: Segment = "".join(out)
        i += 1
    else:
        m = re.compile(r"\d+").match(text, i)
        if not m:
            raise UsageError(
                f"bad key in {text!r}: brackets at position {pos} must hold a quoted name or a list index, "
                f'e.g. by_embedder["clip:ViT-B-32/openai"] or gate.rules[0]'
            )
        seg = int(m.group())
        i = m.end()
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "]":
        raise UsageError(f"bad key in {text!r}: missing ']' after position {pos}")
    return seg, i + 1


def parse_key(key: str) -> tuple[Segment, ...]:
    """Split a KEY (``a.b["c:d"].e``, ``gate.rules[0].value``) into its segments."""
    segments, end = _parse_key_prefix(key.strip(), 0)
    if not segments or end != len(key.strip()):
        raise UsageError(f'bad key {key!r}: expected dotted names, with ["quoted"] segments for other characters')
    return tuple(segments)


def format_key(segments: Iterable[Segment]) -> str:
    """The canonical text of a key: plain names dotted, others as ``["..."]``, indexes as ``[0]``."""
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _SAFE_SEGMENT.match(seg):
            out += ("." if out else "") + seg
        else:
            out += "[" + json.dumps(seg) + "]"
    return out


# --------------------------------------------------------------------------- rules

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_NEGATION = {"<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_OP_RE = re.compile(r"\s*(<=|>=|==|=<|=>|!=|<>|<|>|=)\s*")
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\Z")


@dataclass(frozen=True)
class Rule:
    """One ``--fail-on`` rule: the gate fails when ``value OP threshold`` is true.

    ``text`` is what the user wrote, ``name`` the NAME part as written, ``key``
    the canonical key (an alias's expression, e.g. ``len(classes.dropped)``).
    """

    text: str
    name: str
    key: str
    op: str
    threshold: float
    alias: str | None = None
    description: str | None = None

    @property
    def segments(self) -> tuple[Segment, ...]:
        """Segments of a KEY rule (empty for an alias rule)."""
        return () if self.alias else parse_key(self.key)

    def matches(self, value: float) -> bool:
        """True when the failing condition holds for ``value``."""
        return OPERATORS[self.op](value, self.threshold)


def _known_names(aliases: Mapping[str, Alias] | None = None) -> str:
    return ", ".join(n for n, a in (ALIASES if aliases is None else aliases).items() if n == a.name)


def _did_you_mean(name: str, candidates: Iterable[str], canonical: Callable[[str], str] = str) -> str:
    """``" (did you mean 'x'?)"`` for the closest candidate (difflib), or ``""``.

    ``canonical`` maps the match to what to suggest (a deprecated alias to its canonical name).
    """
    close = difflib.get_close_matches(name, list(dict.fromkeys(candidates)), n=1, cutoff=0.6)
    return f" (did you mean {canonical(close[0])!r}?)" if close else ""


def parse_rule(text: str, *, description: str | None = None, aliases: Mapping[str, Alias] | None = None) -> Rule:
    """Parse ``NAME OP NUMBER`` (see the module docstring); raise UsageError when it is not one.

    Checks syntax, and that NAME is an alias or a dotted key, before any
    expensive work; whether a KEY can exist is checked against the schema by
    ``check_rules_static``, whether it does only after the scan (``evaluate``).
    A deprecated alias parses as its canonical one, with a ``CollapseAuditWarning``.
    ``aliases``: the table NAME is looked up in (default :data:`ALIASES`;
    ``track`` passes :data:`TRACK_ALIASES`).
    """
    table = ALIASES if aliases is None else aliases
    if not isinstance(text, str) or not text.strip():
        raise UsageError("empty gate rule; write NAME OP NUMBER, e.g. --fail-on \"coverage<0.8\"")
    raw = text
    text = text.strip()
    segments, end = _parse_key_prefix(text, 0)
    name = text[:end].strip()
    if not segments:
        raise UsageError(f"bad rule {raw!r}: it must start with a metric name; write NAME OP NUMBER, e.g. \"coverage<0.8\"")
    m = _OP_RE.match(text, end)
    if not m:
        ch = text[end] if end < len(text) else None
        if ch is None:
            raise UsageError(f"bad rule {raw!r}: missing operator and number; write NAME OP NUMBER, e.g. \"{name}<0.8\"")
        raise UsageError(
            f"bad rule {raw!r}: unexpected {ch!r} at position {end}; OP must be one of < <= > >=, "
            f'and key segments with other characters go in quoted brackets: by_embedder["clip:ViT-B-32/openai"].metrics.fid'
        )
    op = m.group(1)
    if op not in OPERATORS:
        hint = {"=<": "<=", "=>": ">="}.get(op)
        number_hint = text[m.end():].strip() or "0"
        if hint:
            raise UsageError(f"bad rule {raw!r}: operator {op!r} is not supported; did you mean {hint!r}?")
        raise UsageError(
            f"bad rule {raw!r}: operator {op!r} is not supported; use one of < <= > >= "
            f"(metrics are floats: state the failing bound, e.g. \"{name}<{number_hint}\" or \"{name}>{number_hint}\")"
        )
    number = text[m.end():].strip()
    if not number:
        raise UsageError(f"bad rule {raw!r}: missing number after {op!r}")
    if not _NUMBER_RE.match(number):
        raise UsageError(f"bad rule {raw!r}: {number!r} is not a number (examples: 0.8, -1, 1e-3)")
    threshold = float(number)
    if not math.isfinite(threshold):
        raise UsageError(f"bad rule {raw!r}: threshold must be a finite number")

    is_plain = len(segments) == 1 and isinstance(segments[0], str) and not text.startswith("[")
    if is_plain:
        alias = table.get(segments[0].lower())
        if alias is None:
            example = "metrics.fid" if table is ALIASES else "run.final.coverage"
            raise UsageError(
                f"unknown metric {segments[0]!r} in rule {raw!r}{_did_you_mean(segments[0].lower(), table, lambda n: table[n].name)}; "
                f"known: {_known_names(table)}; or a dotted key of {'results' if table is ALIASES else 'track'}.json such as {example}"
            )
        if segments[0].lower() != alias.name:
            warnings.warn(
                f"gate alias {segments[0]!r} (rule {raw!r}) is deprecated; write {alias.name!r} "
                f"(same number: {alias.key})", CollapseAuditWarning, stacklevel=2,
            )
        return Rule(text=text, name=name, key=alias.key, op=op, threshold=threshold, alias=alias.name, description=description)
    return Rule(text=text, name=name, key=format_key(segments), op=op, threshold=threshold, description=description)


def load_policy(path: str | os.PathLike[str]) -> list[Rule]:
    """Read gate rules from a TOML policy file (format in the module docstring).

    Raises UsageError naming the file and the problem: missing or unreadable
    file, bad TOML, unknown keys, a bad rule, or no rules at all.
    """
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise UsageError(f"policy {path}: reading TOML needs Python 3.11+ or the 'tomli' package") from None

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"policy file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read policy file {p}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"policy {p} is not valid TOML: {e}") from None

    unknown = sorted(set(data) - {"fail_on", "rule"})
    if unknown:
        raise UsageError(f"policy {p}: unknown key(s) {', '.join(unknown)}; expected fail_on = [\"coverage<0.8\", ...] and/or [[rule]] tables")

    def bad(msg: str) -> UsageError:
        return UsageError(f"policy {p}: {msg}")

    rules: list[Rule] = []
    fail_on = data.get("fail_on", [])
    if not isinstance(fail_on, list) or not all(isinstance(r, str) for r in fail_on):
        raise bad('fail_on must be a list of strings, e.g. fail_on = ["coverage<0.8"]')
    for text in fail_on:
        try:
            rules.append(parse_rule(text))
        except UsageError as e:
            raise bad(str(e)) from None

    tables = data.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise bad("rules must be [[rule]] tables with metric, op and value")
    for i, t in enumerate(tables, 1):
        extra = sorted(set(t) - {"metric", "op", "value", "description"})
        if extra:
            raise bad(f"[[rule]] #{i}: unknown key(s) {', '.join(extra)}; allowed: metric, op, value, description")
        missing = [k for k in ("metric", "op", "value") if k not in t]
        if missing:
            raise bad(f"[[rule]] #{i}: missing {', '.join(missing)}")
        metric, op, value, desc = t["metric"], t["op"], t["value"], t.get("description")
        if not isinstance(metric, str) or not isinstance(op, str):
            raise bad(f"[[rule]] #{i}: metric and op must be strings")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"[[rule]] #{i}: value must be a number, got {value!r}")
        if desc is not None and not isinstance(desc, str):
            raise bad(f"[[rule]] #{i}: description must be a string")
        try:
            rules.append(parse_rule(f"{metric.strip()} {op.strip()} {value!r}", description=desc))
        except UsageError as e:
            raise bad(f"[[rule]] #{i}: {e}") from None

    if not rules:
        raise bad('it defines no rules; add fail_on = ["coverage<0.8"] or a [[rule]] table')
    return rules


# --------------------------------------------------------------------------- resolving


def _walk(results: Mapping[str, Any], segments: tuple[Segment, ...], rule: Rule) -> Any:
    """Follow ``segments`` into ``results``; UsageError for a missing key or a null section."""
    node: Any = results
    for i, seg in enumerate(segments):
        where = format_key(segments[:i]) or "results.json"
        if node is None:
            raise UsageError(_null_section_message(segments, i, rule))
        if isinstance(seg, int):
            if not isinstance(node, list) or not (-len(node) <= seg < len(node)):
                raise UsageError(f"rule {rule.text!r}: {where} has no item [{seg}]")
            node = node[seg]
            continue
        if not isinstance(node, Mapping) or seg not in node:
            have = ""
            if isinstance(node, Mapping) and node:
                names = [format_key([k]) for k in list(node)[:12]]
                have = f"; it has: {', '.join(names)}" + (", ..." if len(node) > 12 else "")
            raise UsageError(f"unknown metric in rule {rule.text!r}: results.json has no key {format_key(segments[: i + 1])}{have}")
        node = node[seg]
    return node


def _null_section_message(segments: tuple[Segment, ...], i: int, rule: Rule) -> str:
    section = format_key(segments[:i])
    hint = SECTION_HINTS.get(str(segments[0])) if i == 1 else None
    msg = f"rule {rule.text!r} needs {section}, which is null in results.json"
    if hint:
        msg += f": {hint}"
    return msg


def _number(value: Any, rule: Rule, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        kind = {dict: "an object", list: "a list", str: "a string", bool: "a bool"}.get(type(value), type(value).__name__)
        tip = ""
        if isinstance(value, list):
            lens = [a.name for a in ALIASES.values() if a.reduce == "len" and a.paths[0] == key]
            if lens:
                tip = f" (use the alias {lens[0]} for its length)"
        raise UsageError(f"rule {rule.text!r}: {key} is {kind}, not a number{tip}")
    v = float(value)
    return None if math.isnan(v) else v


def resolve(results: Mapping[str, Any], rule: Rule) -> float | None:
    """The number ``rule`` tests in ``results``; None when it is null or NaN.

    Raises UsageError when the key does not exist, is not numeric, or the
    alias's section is null because that analysis did not run.
    """
    if rule.alias:
        alias = _alias(rule.alias)
        if alias.reduce == "approx":  # exact PRDC has no approximation section: its error is 0
            metrics = results.get("metrics") if isinstance(results, Mapping) else None
            if isinstance(metrics, Mapping) and metrics.get("approximation") is None:
                if metrics.get("prdc_method") == "exact":
                    return 0.0
                if metrics.get("precision") is None:
                    return None  # PRDC not computed (statistics-only real side, too few samples)
        values = []
        for path in alias.paths:
            segs = parse_key(path)
            parent = _walk(results, segs[:-1], rule)
            if parent is None:
                raise UsageError(_null_section_message(segs, len(segs) - 1, rule))
            if not isinstance(parent, Mapping) or segs[-1] not in parent:
                section = format_key(segs[:-1])
                raise UsageError(f"rule {rule.text!r} needs {path}, but {section} in results.json has no {segs[-1]!r}")
            leaf = parent[segs[-1]]
            if alias.reduce == "len":
                if leaf is None:
                    values.append(None)
                elif isinstance(leaf, list):
                    values.append(float(len(leaf)))
                else:
                    raise UsageError(f"rule {rule.text!r}: {path} is not a list")
            else:
                values.append(_number(leaf, rule, path))
        if any(v is None for v in values):
            return None
        return float(sum(values))  # type: ignore[arg-type]
    segs = rule.segments
    return _number(_walk(results, segs, rule), rule, rule.key)


def available_keys(results: Mapping[str, Any]) -> list[str]:
    """Every key of ``results`` that holds a number (or a null metric): what a KEY rule may name."""
    out: list[str] = []

    def rec(node: Any, prefix: tuple[Segment, ...]) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                rec(v, prefix + (str(k),))
        elif isinstance(node, list):
            for i, v in enumerate(node):
                rec(v, prefix + (i,))
        elif (node is None and len(prefix) > 1) or (isinstance(node, (int, float)) and not isinstance(node, bool)):
            out.append(format_key(prefix))  # a null top-level value is a section that did not run

    rec(results, ())
    return out


def validate_rules(rules: Iterable[Rule], available: Mapping[str, Any] | Iterable[str]) -> None:
    """Raise UsageError for the first rule that cannot be evaluated.

    ``available`` is either a results dict (every rule is resolved against it,
    exactly as ``evaluate`` would) or, before a scan, a collection of keys or
    key prefixes the scan will produce (e.g. ``{"metrics", "inputs", "classes"}``):
    a rule passes when each of its keys equals or lies under one of them.
    """
    rules = list(rules)
    if isinstance(available, Mapping):
        for rule in rules:
            resolve(available, rule)
        return
    prefixes = [format_key(parse_key(a)) for a in available]

    def covered(key: str) -> bool:
        return any(key == a or key.startswith(a + ".") or key.startswith(a + "[") for a in prefixes)

    for rule in rules:
        paths = ALIASES[rule.alias].paths if rule.alias else (rule.key,)
        for path in paths:
            if not covered(path):
                top = str(parse_key(path)[0])
                hint = SECTION_HINTS.get(top)
                if rule.alias and hint:
                    raise UsageError(f"rule {rule.text!r} needs {top}, which this scan will not produce: {hint}")
                raise UsageError(f"unknown metric in rule {rule.text!r}: this scan does not produce {path}")


# --------------------------------------------------------------------------- before the work

#: Sections that ``--no-analysis`` leaves null.
ANALYSIS_SECTIONS = ("clusters", "classes", "subgroups", "duplicates")
_STRUCTURE = ("properties", "patternProperties", "items", "prefixItems", "allOf", "anyOf", "oneOf", "$ref")
_KIND = {"object": "an object", "array": "a list", "string": "a string", "boolean": "a bool", "null": "always null"}


def _schema_nodes(node: Any, root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """``node`` with its ``$ref`` followed, plus its allOf/anyOf/oneOf branches: the alternatives a value may match."""
    for _ in range(64):
        if not (isinstance(node, Mapping) and "$ref" in node):
            break
        target: Any = root
        for part in str(node["$ref"]).lstrip("#/").split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    if node is True:
        return [{}]
    if not isinstance(node, Mapping):
        return []
    out = [node]
    for kw in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(kw) or []:
            out += _schema_nodes(sub, root)
    return out


def _may_be(node: Mapping[str, Any], kind: str) -> bool:
    t = node.get("type")
    return t is None or t == kind or (isinstance(t, list) and kind in t)


def _open(node: Mapping[str, Any], kind: str) -> bool:
    """An object (or list) the schema says nothing about: any key (or index) below it may exist."""
    return (not any(k in node for k in _STRUCTURE) and node.get("additionalProperties") is not False
            and not isinstance(node.get("additionalProperties"), Mapping) and _may_be(node, kind))


def _schema_child(nodes: list[Mapping[str, Any]], seg: Segment, root: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for n in nodes:
        if isinstance(seg, int):
            prefix = n.get("prefixItems") or []
            if 0 <= seg < len(prefix):
                out += _schema_nodes(prefix[seg], root)
            elif "items" in n:
                out += _schema_nodes(n["items"], root)
            elif _open(n, "array"):
                out.append({})
            continue
        props = n.get("properties") or {}
        if seg in props:
            out += _schema_nodes(props[seg], root)
            continue
        matched = [sub for pat, sub in (n.get("patternProperties") or {}).items() if re.search(pat, seg)]
        for sub in matched:
            out += _schema_nodes(sub, root)
        if matched:
            continue
        extra = n.get("additionalProperties")
        if isinstance(extra, Mapping) and _may_be(n, "object"):
            out += _schema_nodes(extra, root)  # a map with free keys: by_embedder.<id>, metrics.ci.<name>, timings.<stage>
        elif _open(n, "object"):
            out.append({})
    return out


def _schema_keys(nodes: list[Mapping[str, Any]]) -> list[str]:
    """The documented names under ``nodes`` (for did-you-mean and "it has" lists)."""
    return list(dict.fromkeys(k for n in nodes for k in (n.get("properties") or {})))


def schema_allows(segments: Iterable[Segment], schema: Mapping[str, Any] | None = None) -> tuple[bool, str | None]:
    """Whether results.json can hold a number at this key, by the JSON Schema alone.

    Walks ``properties`` (following ``$ref``, allOf/anyOf/oneOf), ``items``/
    ``prefixItems`` for ``[0]`` segments, and takes any key where a map has free
    keys (``additionalProperties`` or ``patternProperties`` holding a schema:
    ``by_embedder.<id>``, ``metrics.ci.<name>``, ``timings.<stage>``) or where an
    object documents nothing at all. ``additionalProperties: true`` beside
    listed ``properties`` keeps the schema open for readers (new keys may
    appear) but documents no key: a rule cannot name one. Returns
    ``(True, None)``, or ``(False, reason)`` with a one-line reason that
    suggests the closest documented key.
    """
    root = schema if schema is not None else results_schema()
    segs = tuple(segments)
    nodes = _schema_nodes(root, root)
    for i, seg in enumerate(segs):
        child = _schema_child(nodes, seg, root)
        if not child:
            return False, _no_key_reason(segs, i, nodes, root)
        nodes = child
    types: set[str] = set()
    for n in nodes:
        t = n.get("type")
        if t is None:
            return True, None  # the schema does not say: it may be a number
        types.update([t] if isinstance(t, str) else t)
    if types & {"number", "integer"}:
        return True, None
    kinds = [_KIND.get(t, t) for t in sorted(types - {"null"}) or ["null"]]
    key = format_key(segs)
    tip = ""
    lens = [a.name for a in ALIASES.values() if a.reduce == "len" and a.paths[0] == key]
    if "array" in types and lens:
        tip = f" (use the alias {lens[0]} for its length)"
    return False, f"{key} is {' or '.join(kinds)} in results.json, not a number{tip}"


def _no_key_reason(segs: tuple[Segment, ...], i: int, nodes: list[Mapping[str, Any]], root: Mapping[str, Any]) -> str:
    where = format_key(segs[:i]) or "results.json"
    missing = format_key(segs[: i + 1])
    seg = segs[i]
    names = _schema_keys(nodes)
    suggestion = None
    if isinstance(seg, str) and names:
        close = difflib.get_close_matches(seg, names, n=3, cutoff=0.6)
        for c in close:  # prefer a fix of this segment that makes the whole key valid
            fixed = segs[:i] + (c,) + segs[i + 1:]
            if schema_allows(fixed, root)[0]:
                suggestion = format_key(fixed)
                break
        if suggestion is None and close:
            suggestion = format_key(segs[:i] + (close[0],))
    if suggestion is None:
        text = format_key(segs)
        pool = {a: a for a in ALIASES}
        pool.update({p: p for p in _documented_numeric_keys(root)})
        close = difflib.get_close_matches(text, list(pool), n=1, cutoff=0.6)
        if close:
            suggestion = ALIASES[close[0]].name if close[0] in ALIASES else close[0]
    msg = f"results.json has no key {missing}"
    if names:
        msg += f" ({where} has: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
    elif isinstance(seg, int):
        msg += f" ({where} is not a list)"
    if suggestion:
        msg += f"; did you mean {suggestion!r}?"
    return msg


def _documented_numeric_keys(root: Mapping[str, Any], max_depth: int = 5) -> list[str]:
    """Every dotted key the schema names (free-key maps and list items skipped) that may hold a number."""
    out: list[str] = []

    def rec(nodes: list[Mapping[str, Any]], prefix: tuple[Segment, ...]) -> None:
        if len(prefix) > max_depth:
            return
        for name in _schema_keys(nodes):
            child = _schema_child(nodes, name, root)
            types = {t for n in child for t in ([n["type"]] if isinstance(n.get("type"), str) else n.get("type") or ["number"])}
            if types & {"number", "integer"}:
                out.append(format_key(prefix + (name,)))
            rec(child, prefix + (name,))

    rec(_schema_nodes(root, root), ())
    return out


def check_rules_static(
    rules: Iterable[Rule],
    *,
    has_labels: bool,
    has_subgroups: bool,
    analysis: bool = True,
    schema: Mapping[str, Any] | None = None,
) -> None:
    """Refuse, before any work, every rule the scan could not evaluate: UsageError (exit 2), one line.

    - a KEY must be one that results.json can hold as a number
      (:func:`schema_allows`: documented by the JSON Schema, free keys in maps
      such as ``by_embedder["<id>"].metrics.fid``); the message suggests the
      closest documented key;
    - a rule on ``classes`` (``dropped_classes``, ``max_class_gap``,
      ``classes.*``) needs a label source (``has_labels``: --labels,
      --manifest with a label column, --classes/--classes-file, --classifier,
      or labels in a features file);
    - a rule on ``subgroups`` needs attributes (``has_subgroups``: --subgroup,
      or --manifest with attribute columns);
    - with ``analysis=False`` (--no-analysis) no rule may need clusters,
      classes, subgroups or duplicates.

    Anything that passes here may still fail at evaluation (a null section
    because there were too few images, a list index out of range); that is
    :func:`evaluate`'s job, after the scan.
    """
    needs = {"classes": has_labels, "subgroups": has_subgroups}
    for rule in rules:
        if rule.alias:
            paths = [parse_key(p) for p in ALIASES[rule.alias].paths]
        else:
            segs = rule.segments
            ok, reason = schema_allows(segs, schema)
            if not ok:
                prefix = "unknown metric in " if reason and reason.startswith("results.json has no key") else ""
                raise UsageError(f"{prefix}rule {rule.text!r}: {reason}")
            paths = [segs]
        for segs in paths:
            top = str(segs[0])
            if not analysis and top in ANALYSIS_SECTIONS:
                raise UsageError(f"rule {rule.text!r} needs {top}, which --no-analysis skips; drop --no-analysis or the rule")
            if not needs.get(top, True):
                raise UsageError(f"rule {rule.text!r} needs {top}, which this scan will not produce: {SECTION_HINTS[top]}")


# --------------------------------------------------------------------------- evaluation


def _fmt(v: float | None) -> str:
    if v is None:
        return "null"
    if float(v).is_integer() and abs(v) < 1e15:
        return str(int(v))
    return format(v, ".6g")


@dataclass
class RuleOutcome:
    """How one rule fared: ``passed`` is True when its failing condition did not hold."""

    rule: str
    name: str
    key: str
    op: str
    threshold: float
    value: float | None
    passed: bool
    message: str
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the ``gate.rules`` / ``gate.violations`` items of results.json)."""
        d = dataclasses.asdict(self)
        if d["description"] is None:
            del d["description"]
        return d


@dataclass
class GateResult:
    """The gate verdict: ``passed`` unless some rule matched (or had no value)."""

    passed: bool
    rules: list[RuleOutcome] = field(default_factory=list)
    violations: list[RuleOutcome] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The ``gate`` section of results.json."""
        return {
            "passed": self.passed,
            "rules": [o.to_dict() for o in self.rules],
            "violations": [o.to_dict() for o in self.violations],
        }


def _outcome(rule: Rule, value: float | None) -> RuleOutcome:
    label = rule.name
    t = _fmt(rule.threshold)
    if value is None:
        passed = False
        msg = f"{label} is null (could not be computed), so the fail-on rule {rule.text!r} cannot be checked and fails"
    elif rule.matches(value):
        passed = False
        msg = f"{label} = {_fmt(value)} {rule.op} {t} (fail-on rule matched)"
    else:
        passed = True
        msg = f"{label} = {_fmt(value)}, not {rule.op} {t} (rule held)"
    if rule.description and not passed:
        msg = f"{rule.description}: {msg}"
    return RuleOutcome(
        rule=rule.text, name=rule.name, key=rule.key, op=rule.op, threshold=rule.threshold,
        value=value, passed=passed, message=msg, description=rule.description,
    )


def evaluate(rules: Iterable[Rule], results: Mapping[str, Any]) -> GateResult:
    """Check every rule against ``results``; a rule whose condition is true is a violation.

    All rules are resolved first, so a usage error (unknown key, section not
    run) is raised before any verdict. A null/NaN value is a violation. No
    rules: the gate passes.
    """
    rules = list(rules)
    values = [resolve(results, r) for r in rules]
    outcomes = [_outcome(r, v) for r, v in zip(rules, values)]
    violations = [o for o in outcomes if not o.passed]
    return GateResult(passed=not violations, rules=outcomes, violations=violations)


# --------------------------------------------------------------------------- reporting


def write_junit(gate_result: GateResult, path: str | os.PathLike[str], *, suite_name: str = "collapse-audit") -> Path:
    """Write the gate as JUnit XML: one ``<testcase>`` per rule, ``<failure>`` for violations."""
    n = len(gate_result.rules)
    nf = len(gate_result.violations)
    counts = {"tests": str(n), "failures": str(nf), "errors": "0", "skipped": "0", "time": "0"}
    root = ET.Element("testsuites", {"name": suite_name, **counts})
    suite = ET.SubElement(root, "testsuite", {"name": suite_name, **counts})
    for o in gate_result.rules:
        case = ET.SubElement(suite, "testcase", {"name": o.rule, "classname": "collapse-audit.gate", "time": "0"})
        if not o.passed:
            fail = ET.SubElement(case, "failure", {"message": o.message, "type": "GateRuleViolation"})
            fail.text = (
                f"{o.message}\nrule: {o.rule}\nkey: {o.key}\nvalue: {_fmt(o.value)}\n"
                f"The gate fails when '{o.key} {o.op} {_fmt(o.threshold)}' is true."
            )
        else:
            out = ET.SubElement(case, "system-out")
            out.text = o.message
    p = check_output_file(path, what="the JUnit XML", option="--junit")
    ET.indent(root)
    return write_atomic(p, ET.tostring(root, encoding="utf-8", xml_declaration=True), what="the JUnit XML")


def _cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def github_step_summary(gate_result: GateResult | None, results: Mapping[str, Any]) -> str:
    """Markdown for ``$GITHUB_STEP_SUMMARY``: verdict, inputs, headline metrics, rule outcomes."""
    lines: list[str] = []
    if gate_result is None or not gate_result.rules:
        lines.append("## collapse-audit: no gate rules")
    elif gate_result.passed:
        lines.append(f"## collapse-audit: gate passed ✅ ({len(gate_result.rules)} rule(s) held)")
    else:
        lines.append(f"## collapse-audit: gate FAILED ❌ ({len(gate_result.violations)} of {len(gate_result.rules)} rule(s) matched)")
    lines.append("")
    inputs = results.get("inputs") or {}
    parts = []
    for side in ("real", "gen"):
        s = inputs.get(side) or {}
        if s:
            parts.append(f"**{side}**: {s.get('n_images', '?')} images ({s.get('n_failed', 0)} unreadable) from `{_cell(s.get('source', '?'))}`")
    if parts:
        lines += ["; ".join(parts), ""]
    emb = results.get("primary_embedder")
    metrics = results.get("metrics") or {}
    if metrics:
        lines += [f"| metric{f' ({_cell(emb)})' if emb else ''} | value |", "|---|---:|"]
        ci = metrics.get("ci") or {}
        for name in (spec.leaf for spec in K.HEADLINE):
            if name in metrics:
                v = metrics[name]
                val = _fmt(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"
                if isinstance(ci.get(name), (list, tuple)) and len(ci[name]) == 2 and None not in ci[name]:
                    val += f" [{_fmt(ci[name][0])}, {_fmt(ci[name][1])}]"
                lines.append(f"| {name} | {val} |")
        lines.append("")
    if gate_result is not None and gate_result.rules:
        lines += ["| fail-on rule | value | result | message |", "|---|---:|---|---|"]
        for o in gate_result.rules:
            lines.append(f"| `{_cell(o.rule)}` | {_fmt(o.value)} | {'held ✅' if o.passed else 'FAILED ❌'} | {_cell(o.message)} |")
        lines.append("")
    return "\n".join(lines)


def append_github_summary(
    gate_result: GateResult | None,
    results: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> Path | None:
    """Append ``github_step_summary`` to the file named by ``GITHUB_STEP_SUMMARY``; None when unset."""
    target = check_github_summary(env)
    if target is None:
        return None
    return append_text(target, github_step_summary(gate_result, results) + "\n", what="the gate summary",
                       option="GITHUB_STEP_SUMMARY")


def check_github_summary(env: Mapping[str, str] | None = None) -> Path | None:
    """The file named by ``GITHUB_STEP_SUMMARY`` if it can be appended to; None when unset.

    Called before a scan's work, so a summary path into a missing folder (or a
    folder itself) is an exit-2 error before anything is embedded.
    """
    env = os.environ if env is None else env
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    p = Path(target)
    if p.is_dir():
        raise EnvironmentFault(f"GITHUB_STEP_SUMMARY={p}: is a folder; it must name a file")
    if not p.parent.is_dir():
        raise EnvironmentFault(f"GITHUB_STEP_SUMMARY={p}: the folder {p.parent} does not exist")
    if (p.exists() and not os.access(p, os.W_OK)) or (not p.exists() and not os.access(p.parent, os.W_OK)):
        raise EnvironmentFault(f"GITHUB_STEP_SUMMARY={p}: not writable")
    return p
