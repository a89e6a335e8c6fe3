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
import json
import math
import operator
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from .errors import EnvironmentFault, UsageError
from .outputs import append_text, check_output_file, write_atomic

__all__ = [
    "ALIASES",
    "OPERATORS",
    "SECTION_HINTS",
    "Alias",
    "GateResult",
    "Rule",
    "RuleOutcome",
    "alias_help",
    "append_github_summary",
    "available_keys",
    "evaluate",
    "format_key",
    "github_step_summary",
    "load_policy",
    "parse_key",
    "parse_rule",
    "resolve",
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
    single path) or ``"sum"`` (sum of all paths' values).
    """

    name: str
    paths: tuple[str, ...]
    reduce: str
    description: str

    @property
    def key(self) -> str:
        """How the alias reads as an expression over results.json (for messages and results)."""
        if self.reduce == "len":
            return f"len({self.paths[0]})"
        if self.reduce == "sum":
            return " + ".join(self.paths)
        return self.paths[0]


def _alias(name: str, path: str | tuple[str, ...], reduce: str, description: str) -> tuple[str, Alias]:
    paths = (path,) if isinstance(path, str) else tuple(path)
    return name, Alias(name, paths, reduce, description)


ALIASES: dict[str, Alias] = dict(
    [
        _alias("fid", "metrics.fid", "value", "Frechet Inception Distance of the primary embedder (lower is better)"),
        _alias("kid", "metrics.kid", "value", "Kernel Inception Distance, mean over subsets (lower is better)"),
        _alias("precision", "metrics.precision", "value", "k-NN precision: fraction of generated samples inside the real manifold"),
        _alias("recall", "metrics.recall", "value", "k-NN recall: fraction of real samples inside the generated manifold"),
        _alias("density", "metrics.density", "value", "density (Naeem et al. 2020); about 1 when distributions match"),
        _alias("coverage", "metrics.coverage", "value", "coverage (Naeem et al. 2020): fraction of real samples with a generated neighbour"),
        _alias("dropped_clusters", "clusters.dropped", "len", "number of real-data clusters the generator dropped"),
        _alias("ndb", "clusters.ndb_fraction", "value", "NDB: fraction of clusters whose generated share differs significantly from the real one"),
        _alias("dropped_classes", "classes.dropped", "len", "number of real classes absent or significantly missing from the generated data"),
        _alias("max_class_gap", "classes.max_gap", "value", "largest absolute gap between real and generated class shares"),
        _alias("max_subgroup_gap", "subgroups.max_gap", "value", "largest absolute gap between real and generated subgroup shares"),
        _alias("dropped_subgroups", "subgroups.dropped", "len", "number of subgroups present in the real data but dropped in the generated data"),
        _alias("dup_fraction", "duplicates.within_gen.dup_fraction", "value", "fraction of generated images that near-duplicate another generated image"),
        _alias("memorized_fraction", "duplicates.gen_vs_real.memorized_fraction", "value", "fraction of generated images that near-copy a real image"),
        _alias("n_failed", ("inputs.gen.n_failed", "inputs.real.n_failed"), "sum", "files that could not be read, both sides together"),
        _alias("approx_error", "metrics.approximation.max_abs_error", "approx",
               "upper 95% bound on |approximate - exact| over precision/recall/density/coverage; 0 when PRDC was exact"),
    ]
)

#: What fills each optional top-level section; used in "section is null" errors.
#: (The CLI may overwrite these strings with its exact option names.)
SECTION_HINTS: dict[str, str] = {
    "clusters": "cluster dropout needs at least 20 real images and runs unless --no-analysis is given",
    "classes": "class dropout needs labels: --labels folders, --manifest FILE, --classes 'a,b,c' (zero-shot CLIP) or --classifier MODEL.pt",
    "subgroups": "subgroup gaps need attributes: --manifest FILE with attribute columns for both sides, or --subgroup 'name=prompt A|prompt B'",
    "duplicates": "the duplicate analysis runs unless --no-analysis is given",
}


def alias_help() -> str:
    """One line per alias, ``name  key  description``: for ``--help`` and the README."""
    width = max(len(n) for n in ALIASES)
    kwidth = max(len(a.key) for a in ALIASES.values())
    return "\n".join(f"{n:<{width}}  {a.key:<{kwidth}}  {a.description}" for n, a in ALIASES.items())


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


def _known_names() -> str:
    return ", ".join(ALIASES)


def parse_rule(text: str, *, description: str | None = None) -> Rule:
    """Parse ``NAME OP NUMBER`` (see the module docstring); raise UsageError when it is not one.

    Checks syntax, and that NAME is an alias or a dotted key, before any
    expensive work; whether a KEY exists is known only after the scan
    (``evaluate``).
    """
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
        alias = ALIASES.get(segments[0].lower())
        if alias is None:
            raise UsageError(
                f"unknown metric {segments[0]!r} in rule {raw!r}; known: {_known_names()}; "
                f"or a dotted key of results.json such as metrics.fid"
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
        alias = ALIASES[rule.alias]
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
        for name in ("fid", "kid", "precision", "recall", "density", "coverage"):
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
