"""One table of metrics (keys.METRICS): the README's alias table equals it, its paths exist in the JSON
Schema, the gate/compare/report/CLI read it, deprecated aliases still work, and a gate rule that cannot
be evaluated is refused before any work (gate.check_rules_static, wired into `collapse-audit scan`)."""
from __future__ import annotations

import ast
import re
import time
from pathlib import Path

import numpy as np
import pytest

from collapse_audit import compare, gate, keys
from collapse_audit.errors import EXIT_USAGE, CollapseAuditWarning, UsageError
from collapse_audit.gate import ALIASES, check_rules_static, evaluate, load_policy, parse_key, parse_rule, resolve
from collapse_audit.schema import results_schema

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BETTER_WORDS = {"lower": "lower", "higher": "higher", "one": "closer to 1", None: "-"}


# --------------------------------------------------------------------------- the README's table

def _markdown_table(text: str, header: str) -> list[list[str]]:
    """Rows (cells stripped, backticks and \\| escapes undone) of the table whose header row is ``header``."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == header]
    assert len(starts) == 1, f"expected one table headed {header!r} in the README, found {len(starts)}"
    rows = []
    for line in lines[starts[0] + 2:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|").strip("`") for c in cells])
    return rows


def test_readme_alias_table_is_the_metrics_table():
    text = README.read_text(encoding="utf-8")
    rows = _markdown_table(text, "| alias | reads | better | meaning |")
    want = [[s.alias, s.key, BETTER_WORDS[s.better], s.meaning] for s in keys.METRICS if s.alias]
    assert rows == want


def test_readme_lists_the_deprecated_aliases():
    rows = _markdown_table(README.read_text(encoding="utf-8"), "| deprecated alias | canonical alias |")
    assert rows == [[old, new] for old, new in keys.DEPRECATED_ALIASES.items()]
    assert keys.DEPRECATED_ALIASES == {"ndb": "ndb_fraction", "class_max_gap": "max_class_gap",
                                       "subgroup_max_gap": "max_subgroup_gap"}


# --------------------------------------------------------------------------- the table itself

def test_table_is_well_formed():
    aliases = [a for s in keys.METRICS for a in s.aliases]
    assert len(aliases) == len(set(aliases))
    for s in keys.METRICS:
        assert s.better in keys.BETTER + (None,) and s.meaning and s.name
        assert s.reduce in ("value", "len", "sum", "approx")
        assert (s.reduce == "sum") == (len(s.paths) > 1)
        format(1.5, s.fmt)
    assert [s.alias for s in keys.HEADLINE] == ["fid", "kid", "precision", "recall", "density", "coverage", "vendi"]
    with pytest.raises(ValueError):
        keys.MetricSpec("x", "metrics.x", "x", "sideways", "bad direction")


def test_lookup_helpers():
    ndb = keys.by_alias("ndb_fraction")
    assert ndb is keys.by_alias("NDB") is keys.by_alias(" ndb ") is keys.by_path("clusters.ndb_fraction")
    assert ndb.path == "clusters.ndb_fraction" and ndb.deprecated == ("ndb",)
    assert keys.by_path("classes.dropped") is keys.by_path("len(classes.dropped)") is keys.by_alias("dropped_classes")
    assert keys.by_path("inputs.real.n_failed") is keys.by_alias("n_failed")
    assert keys.by_alias("nope") is None and keys.by_path("metrics.nope") is None


def test_keys_module_is_the_bottom_of_the_import_graph():
    tree = ast.parse((ROOT / "collapse_audit" / "keys.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.module == "errors", f"keys.py imports .{node.module}"
        if isinstance(node, ast.ImportFrom) and not node.level:
            assert not (node.module or "").startswith("collapse_audit")
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("collapse_audit") for a in node.names)


def _schema_leaf(root: dict, path: str) -> dict:
    """The schema node documenting ``path`` by ``properties`` alone ($ref followed): KeyError when undocumented."""
    def deref(n):
        while "$ref" in n:
            target = root
            for part in n["$ref"].lstrip("#/").split("/"):
                target = target[part]
            n = {**target, **{k: v for k, v in n.items() if k != "$ref"}}
        return n

    node = deref(root)
    for seg in path.split("."):
        node = deref(node["properties"][seg])
    return node


@pytest.mark.parametrize("spec", keys.METRICS, ids=lambda s: s.alias or s.name)
def test_every_path_is_documented_by_the_schema(spec):
    root = results_schema()
    for path in spec.paths:
        node = _schema_leaf(root, path)
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if spec.reduce == "len":
            assert "array" in types, path
        else:
            assert {"number", "integer"} & set(types), path
            assert gate.schema_allows(parse_key(path))[0], path


def _results_with_every_number() -> tuple[dict, dict]:
    """A results dict with a distinct number (or a list of distinct length) at every path of the table."""
    res: dict = {"metrics": {"prdc_method": "approx"}}
    want: dict = {}
    for i, s in enumerate(keys.METRICS, start=1):
        total = 0.0
        for j, path in enumerate(s.paths):
            *parents, leaf = path.split(".")
            node = res
            for p in parents:
                node = node.setdefault(p, {})
            value = [f"x{n}" for n in range(i)] if s.reduce == "len" else i + 0.25 + j
            node[leaf] = value
            total += len(value) if s.reduce == "len" else value
        want[s.alias] = total
    return res, want


def test_every_gate_alias_reads_the_tables_path():
    results, want = _results_with_every_number()
    table_names = {a for s in keys.METRICS for a in s.aliases}
    assert set(ALIASES) == table_names
    for s in keys.METRICS:
        for name in s.aliases:
            assert ALIASES[name].paths == s.paths and ALIASES[name].name == s.alias
            with pytest.warns(CollapseAuditWarning) if name != s.alias else _no_warning():
                rule = parse_rule(f"{name} > 0")
            assert rule.key == s.key and rule.alias == s.alias
            assert resolve(results, rule) == pytest.approx(want[s.alias]), name
            if s.reduce in ("value", "approx"):  # the same number through its dotted key
                assert resolve(results, parse_rule(f"{s.path} > 0")) == pytest.approx(want[s.alias])


class _no_warning:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("error", CollapseAuditWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def test_deprecated_aliases_still_gate(tmp_path):
    results, _ = _results_with_every_number()
    with pytest.warns(CollapseAuditWarning, match="'ndb' .* deprecated; write 'ndb_fraction'"):
        old = evaluate([parse_rule("ndb>0.1")], results)
    new = evaluate([parse_rule("ndb_fraction>0.1")], results)
    assert old.rules[0].value == new.rules[0].value and old.passed is new.passed is False
    assert old.rules[0].name == "ndb" and old.rules[0].key == "clusters.ndb_fraction"
    policy = tmp_path / "gate.toml"
    policy.write_text('fail_on = ["class_max_gap>0.5"]\n[[rule]]\nmetric = "subgroup_max_gap"\nop = ">"\nvalue = 0.5\n')
    with pytest.warns(CollapseAuditWarning):
        rules = load_policy(policy)
    assert [r.alias for r in rules] == ["max_class_gap", "max_subgroup_gap"]
    assert "ndb" in gate.alias_help() and "deprecated spelling of ndb_fraction" in gate.alias_help()


def test_compare_report_and_summaries_read_the_table():
    assert [m[0] for m in compare.METRICS] == [s.alias for s in keys.COMPARED]
    assert [m[1] for m in compare.METRICS][:1] == [("metrics", "fid")]
    assert {m[0]: m[2] for m in compare.METRICS} == {s.alias: s.better for s in keys.COMPARED}
    results, _ = _results_with_every_number()
    rows = compare.compare_results(results, results)["rows"]
    assert [r["name"] for r in rows] == [s.alias for s in keys.COMPARED]
    assert all(r["verdict"] == "unchanged" for r in rows)

    from collapse_audit.report import _metric_rows

    m = {s.leaf: 0.5 for s in keys.HEADLINE} | {"kid_std": 0.01}
    (block,) = _metric_rows({"primary_embedder": "e", "by_embedder": {"e": {"metrics": m}}})
    assert [r["key"] for r in block["rows"]] == [s.leaf for s in keys.HEADLINE]
    assert [r["better"] for r in block["rows"]] == [keys.BETTER_PHRASE[s.better] for s in keys.HEADLINE]
    assert block["rows"][1]["value"] == "0.5 ± 0.01"

    md = gate.github_step_summary(None, {"metrics": m})
    assert [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "metric" not in line] \
        == [s.leaf for s in keys.HEADLINE]


# --------------------------------------------------------------------------- before the work

@pytest.mark.parametrize("text,suggestion", [
    ("metrics.fidd>1", "metrics.fid"),
    ("metric.coverage<0.8", "metrics.coverage"),
    ("inputs.gen.nimages<10", "inputs.gen.n_images"),
    ('by_embedder["clip:ViT-B-32/openai"].metrics.recal<0.5', 'by_embedder["clip:ViT-B-32/openai"].metrics.recall'),
    ("classes.max_gapp>0.1", "classes.max_gap"),
    ("duplicates.within_gen.dup_fractoin>0.1", "duplicates.within_gen.dup_fraction"),
    ("metrics.approximation.max_abs_eror>0.01", "metrics.approximation.max_abs_error"),
])
def test_misspelt_keys_are_refused_with_a_suggestion(text, suggestion):
    with pytest.raises(UsageError) as ei:
        check_rules_static([parse_rule(text)], has_labels=True, has_subgroups=True)
    msg = str(ei.value)
    assert "\n" not in msg and ei.value.exit_code == EXIT_USAGE
    assert msg.startswith(f"unknown metric in rule {text!r}") and f"did you mean {suggestion!r}?" in msg


@pytest.mark.parametrize("text", [
    "metrics.fid>1", "inputs.real.n_failed>0", "clusters.ndb>3", "clusters.ndb_fraction>0.1",
    'by_embedder["clip:ViT-B-32/openai"].metrics.recall<0.5', "by_embedder.inception-v3.metrics.kid>0.01",
    "metrics.ci.precision[0]<0.5", "by_embedder.x.metrics.ci.coverage[1]<0.5", "timings.embed>600",
    "clusters.bins[0].gen_share<0.01", "classes.classes[2].n_gen<1", "subgroups.attributes[0].max_gap>0.1",
    "duplicates.gen_vs_real.calibration.quantile>0.01", "metrics.approximation.metrics.coverage.error>0.01",
    "duplicates.approximation.max_abs_error>0.01", "gate.rules[0].value>1", "resources.peak_rss_bytes>1e10",
    "by_embedder.x.n_gen<100", *(f"{a}>0" for a in ALIASES),
])
def test_keys_results_json_can_hold_are_allowed(text):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseAuditWarning)
        check_rules_static([parse_rule(text)], has_labels=True, has_subgroups=True)


@pytest.mark.parametrize("text,fragment", [
    ("metrics.ci>0", "metrics.ci is an object in results.json, not a number"),
    ("classes.dropped>0", "use the alias dropped_classes for its length"),
    ("gate.passed<1", "is a bool"),
    ("inputs.gen.source>0", "is a string"),
    ("metrics.fid[0]>1", "no key metrics.fid[0]"),
    ("failures.path>0", "no key failures.path"),
])
def test_keys_that_hold_no_number_are_refused(text, fragment):
    with pytest.raises(UsageError, match=re.escape(fragment)):
        check_rules_static([parse_rule(text)], has_labels=True, has_subgroups=True)


@pytest.mark.parametrize("text,section", [
    ("dropped_classes>0", "classes"), ("max_class_gap>0.1", "classes"), ("class_max_gap>0.1", "classes"),
    ("classes.chi2.p<0.05", "classes"), ("max_subgroup_gap>0.1", "subgroups"),
    ("dropped_subgroups>0", "subgroups"), ("subgroups.max_gap>0.2", "subgroups"),
])
def test_rules_on_sections_without_their_source_are_refused(text, section):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseAuditWarning)
        rule = parse_rule(text)
    with pytest.raises(UsageError) as ei:
        check_rules_static([rule], has_labels=False, has_subgroups=False)
    assert f"needs {section}, which this scan will not produce: {gate.SECTION_HINTS[section]}" in str(ei.value)
    other = {"classes": {"has_labels": True, "has_subgroups": False}, "subgroups": {"has_labels": False, "has_subgroups": True}}
    check_rules_static([rule], **other[section])
    check_rules_static([parse_rule("coverage<0.8"), parse_rule("n_failed>0")], has_labels=False, has_subgroups=False)


@pytest.mark.parametrize("text", ["dropped_clusters>0", "dup_fraction>0.1", "duplicates.gen_vs_real.n_memorized>0",
                                  "classes.max_gap>0.1"])
def test_no_analysis_refuses_rules_on_analysis_sections(text):
    with pytest.raises(UsageError, match="--no-analysis"):
        check_rules_static([parse_rule(text)], has_labels=True, has_subgroups=True, analysis=False)
    check_rules_static([parse_rule("fid>50")], has_labels=True, has_subgroups=True, analysis=False)


# --------------------------------------------------------------------------- through the CLI

N_ROWS = 50_000


@pytest.fixture(scope="module")
def big_npz(tmp_path_factory):
    """Two 50,000-row embeddings files (the real one with labels)."""
    from collapse_audit.features import FeatureSet, save_features

    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    gen = save_features(d / "gen.npz", FeatureSet(features=rng.normal(size=(N_ROWS, 8)).astype(np.float32),
                                                  paths=[f"g{i}.png" for i in range(N_ROWS)], embedder_id="planted"))
    real = save_features(d / "real.npz", FeatureSet(features=rng.normal(size=(N_ROWS, 8)).astype(np.float32),
                                                    paths=[f"r{i}.png" for i in range(N_ROWS)], embedder_id="planted",
                                                    labels=[f"c{i % 7}" for i in range(N_ROWS)]))
    plain = save_features(d / "plain.npz", FeatureSet(features=rng.normal(size=(100, 8)).astype(np.float32),
                                                      paths=[f"p{i}.png" for i in range(100)], embedder_id="planted"))
    return gen, real, plain


class _Reached(UsageError):
    pass


@pytest.fixture
def no_scan(monkeypatch):
    """The scan must not start: run_scan (api.audit calls it through collapse_audit.scan) raises."""
    import collapse_audit.api
    import collapse_audit.scan

    def reached(*a, **k):
        raise _Reached("run_scan was reached")

    monkeypatch.setattr(collapse_audit.scan, "run_scan", reached)


def test_misspelt_rule_fails_before_the_work(big_npz, no_scan, tmp_path, capsys):
    from collapse_audit.cli import main

    gen, real, _ = big_npz
    out = tmp_path / "out"
    t0 = time.perf_counter()
    code = main(["scan", str(gen), "--real", str(real), "--out", str(out), "--fail-on", "metrics.fidd>1"])
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == EXIT_USAGE, err
    assert elapsed < 2.0, f"the misspelt rule took {elapsed:.2f} s to refuse"
    assert "run_scan was reached" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "metrics.fidd" in lines[0] and "did you mean 'metrics.fid'?" in lines[0]
    assert not out.exists()


@pytest.mark.parametrize("rule,args,fragment", [
    ("dropped_classes>0", ("--real", "plain"), "needs classes"),
    ("max_subgroup_gap>0.1", (), "needs subgroups"),
    ("dup_fraction>0.1", ("--no-analysis",), "--no-analysis"),
    ("covrage<0.8", (), "did you mean 'coverage'?"),
])
def test_rules_the_scan_cannot_evaluate_fail_before_the_work(big_npz, no_scan, tmp_path, capsys, rule, args, fragment):
    from collapse_audit.cli import main

    gen, real, plain = big_npz
    argv = ["scan", str(gen), "--real", str(real), "--out", str(tmp_path / "out"), "--fail-on", rule]
    if args[:1] == ("--real",):
        argv[3] = str(plain)
        args = args[2:]
    code = main(argv + list(args))
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and fragment in err and "run_scan was reached" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) == 1, err


@pytest.mark.parametrize("rule,extra", [
    ("dropped_classes>0", ()),                       # labels in the real .npz are a label source
    ("class_max_gap>0.1", ("--classes", "a,b")),     # deprecated alias, zero-shot classes
    ("max_subgroup_gap>0.1", ("--manifest", "M")),   # manifest attribute columns
    ("dropped_subgroups>0", ("--subgroup", "tone=a light photo|a dark photo")),
    ('by_embedder["planted"].metrics.coverage<0.5', ()),
])
def test_rules_the_scan_can_evaluate_reach_the_scan(big_npz, no_scan, tmp_path, capsys, rule, extra):
    from collapse_audit.cli import main

    gen, real, _ = big_npz
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,side,tone\ng0.png,gen,light\nr0.png,real,dark\n")
    extra = [str(manifest) if x == "M" else x for x in extra]
    code = main(["scan", str(gen), "--real", str(real), "--out", str(tmp_path / "out"), "--fail-on", rule, *extra])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "run_scan was reached" in err, err


def test_manifest_without_attribute_columns_is_no_subgroup_source(big_npz, no_scan, tmp_path, capsys):
    from collapse_audit.cli import main

    gen, real, _ = big_npz
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\ng0.png,a\nr0.png,b\n")
    base = ["scan", str(gen), "--real", str(real), "--out", str(tmp_path / "out"), "--manifest", str(manifest)]
    assert main(base + ["--fail-on", "dropped_subgroups>0"]) == EXIT_USAGE
    assert "needs subgroups" in capsys.readouterr().err
    assert main(base + ["--fail-on", "dropped_classes>0"]) == EXIT_USAGE
    assert "run_scan was reached" in capsys.readouterr().err
