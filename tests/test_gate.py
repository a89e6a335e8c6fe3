"""The CI gate: rule grammar, --fail-on semantics, policy files, JUnit XML, GitHub summary."""
from __future__ import annotations

import copy
import math
import xml.etree.ElementTree as ET

import pytest

from collapse_audit import gate
from collapse_audit.errors import EXIT_USAGE, UsageError
from collapse_audit.gate import (
    ALIASES,
    GateResult,
    append_github_summary,
    evaluate,
    github_step_summary,
    load_policy,
    parse_key,
    parse_rule,
    resolve,
    validate_rules,
    write_junit,
)

CLIP = "clip:ViT-B-32/openai@laion=2b"


def _metrics(**kw):
    m = {"fid": 12.5, "kid": 0.004, "kid_std": 0.001, "precision": 0.7, "recall": 0.6,
         "density": 0.95, "coverage": 0.85, "k": 5}
    m.update(kw)
    return m


@pytest.fixture
def results():
    return {
        "schema_version": "1.0",
        "inputs": {
            "real": {"source": "real/", "kind": "folder", "n_images": 100, "n_failed": 1, "n_files": 101},
            "gen": {"source": "gen/", "kind": "folder", "n_images": 90, "n_failed": 2, "n_files": 92},
        },
        "failures": [],
        "primary_embedder": "inception-v3",
        "metrics": _metrics(),
        "by_embedder": {
            "inception-v3": {"metrics": _metrics(), "n_real": 100, "n_gen": 90},
            CLIP: {"metrics": _metrics(recall=0.42, fid=None), "n_real": 100, "n_gen": 90},
        },
        "clusters": {"dropped": [{"cluster": 3}], "ndb_fraction": 0.1},
        "classes": None,
        "subgroups": None,
        "duplicates": {"within_gen": {"dup_fraction": 0.02}, "gen_vs_real": {"memorized_fraction": 0.0}},
        "gate": {"passed": True, "rules": [], "violations": []},
        "settings": {"seed": 0, "k": 5, "flag": True, "label": "x"},
    }


# ------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text,name,op,thr", [
    ("coverage<0.8", "coverage", "<", 0.8),
    ("  coverage <= 0.8 ", "coverage", "<=", 0.8),
    ("fid>50", "fid", ">", 50.0),
    ("fid >= 50", "fid", ">=", 50.0),
    ("kid>1e-3", "kid", ">", 1e-3),
    ("kid > 2.5E+2", "kid", ">", 250.0),
    ("density<-1", "density", "<", -1.0),
    ("density < +.5", "density", "<", 0.5),
    ("dropped_classes>0", "dropped_classes", ">", 0.0),
    ("FID>10", "FID", ">", 10.0),
])
def test_parse_alias_rules(text, name, op, thr):
    r = parse_rule(text)
    assert (r.name, r.op, r.threshold) == (name, op, thr)
    assert r.alias == name.lower()
    assert r.text == text.strip()
    assert r.key == ALIASES[name.lower()].key


def test_parse_dotted_and_bracketed_keys():
    r = parse_rule("metrics.fid>10")
    assert r.alias is None and r.key == "metrics.fid" and r.segments == ("metrics", "fid")
    r = parse_rule(f'by_embedder["{CLIP}"].metrics.recall < 0.5')
    assert r.segments == ("by_embedder", CLIP, "metrics", "recall")
    assert r.name == f'by_embedder["{CLIP}"].metrics.recall'
    assert r.key == f'by_embedder["{CLIP}"].metrics.recall'
    # single quotes, operators inside the quotes, spaces inside the brackets
    r = parse_rule("by_embedder[ 'a<b>=c' ].metrics.fid>=3")
    assert r.segments == ("by_embedder", "a<b>=c", "metrics", "fid") and r.op == ">=" and r.threshold == 3
    # list index, hyphenated plain segments
    assert parse_rule("gate.rules[0].value>1").segments == ("gate", "rules", 0, "value")
    assert parse_rule("by_embedder.inception-v3.metrics.fid>1").segments == ("by_embedder", "inception-v3", "metrics", "fid")
    assert parse_key('a["x\\"y"].b') == ("a", 'x"y', "b")


@pytest.mark.parametrize("text,fragment", [
    ("coverage==0.8", "not supported"),
    ("coverage=0.8", "not supported"),
    ("coverage!=0.8", "not supported"),
    ("coverage=<0.8", "did you mean '<='"),
    ("coverage 0.8", "unexpected"),
    ("coverage<", "missing number"),
    ("coverage", "missing operator"),
    ("coverage<abc", "not a number"),
    ("coverage<nan", "not a number"),
    ("coverage<0.8x", "not a number"),
    ("<0.8", "must start with a metric"),
    ("", "empty"),
    ("foo<1", "unknown metric 'foo'"),
    ("metrics<1", "unknown metric 'metrics'"),
    ("by_embedder.clip:ViT.metrics.fid<1", "quoted brackets"),
    ('by_embedder["open.metrics.fid<1', "unterminated quote"),
    ("by_embedder[x].metrics.fid<1", "quoted name or a list index"),
])
def test_parse_errors(text, fragment):
    with pytest.raises(UsageError, match=None) as ei:
        parse_rule(text)
    assert fragment in str(ei.value)
    assert "\n" not in str(ei.value)
    assert ei.value.exit_code == EXIT_USAGE


def test_unknown_alias_lists_known_names():
    with pytest.raises(UsageError) as ei:
        parse_rule("foo<1")
    msg = str(ei.value)
    assert "rule 'foo<1'" in msg
    for name in ("fid", "kid", "coverage", "dropped_classes", "n_failed"):
        assert name in msg


def test_alias_table_documented():
    assert {"fid", "kid", "precision", "recall", "density", "coverage", "dropped_clusters", "ndb",
            "dropped_classes", "max_class_gap", "max_subgroup_gap", "dropped_subgroups",
            "dup_fraction", "memorized_fraction", "n_failed"} <= set(ALIASES)
    assert all(a.description for a in ALIASES.values())
    help_text = gate.alias_help()
    assert "len(classes.dropped)" in help_text and "inputs.gen.n_failed + inputs.real.n_failed" in help_text


# ------------------------------------------------------------------ semantics

def test_fail_on_semantics_condition_true_is_violation(results):
    res = evaluate([parse_rule("coverage<0.8")], results)  # coverage 0.85
    assert res.passed and not res.violations
    assert res.rules[0].passed and res.rules[0].value == 0.85
    assert "rule held" in res.rules[0].message

    results["metrics"]["coverage"] = 0.71
    res = evaluate([parse_rule("coverage<0.8")], results)
    assert not res.passed
    (v,) = res.violations
    assert v.message == "coverage = 0.71 < 0.8 (fail-on rule matched)"


@pytest.mark.parametrize("op,thr,violated", [
    ("<", 0.85, False), ("<=", 0.85, True), (">", 0.85, False), (">=", 0.85, True),
    ("<", 0.9, True), (">", 0.8, True), ("<=", 0.8, False), (">=", 0.9, False),
])
def test_each_operator(results, op, thr, violated):
    res = evaluate([parse_rule(f"coverage{op}{thr}")], results)
    assert res.passed is (not violated)


def test_aliases_resolve(results):
    assert resolve(results, parse_rule("dropped_clusters>0")) == 1.0
    assert resolve(results, parse_rule("ndb>0")) == 0.1
    assert resolve(results, parse_rule("dup_fraction>0")) == 0.02
    assert resolve(results, parse_rule("memorized_fraction>0")) == 0.0
    assert resolve(results, parse_rule("n_failed>0")) == 3.0
    assert resolve(results, parse_rule("fid>0")) == 12.5
    results["classes"] = {"dropped": ["cat", "dog"], "max_gap": 0.3}
    assert resolve(results, parse_rule("dropped_classes>0")) == 2.0
    assert resolve(results, parse_rule("max_class_gap>0")) == 0.3


def test_dotted_keys_resolve(results):
    assert resolve(results, parse_rule(f'by_embedder["{CLIP}"].metrics.recall<0.5')) == 0.42
    assert resolve(results, parse_rule("inputs.gen.n_images<100")) == 90.0
    res = evaluate([parse_rule(f'by_embedder["{CLIP}"].metrics.recall<0.5')], results)
    assert not res.passed


def test_unknown_dotted_key_is_usage_error(results):
    with pytest.raises(UsageError, match=r"unknown metric.*metrics\.fidd"):
        evaluate([parse_rule("metrics.fidd>1")], results)
    with pytest.raises(UsageError) as ei:
        evaluate([parse_rule('by_embedder["nope"].metrics.fid>1')], results)
    assert CLIP in str(ei.value)  # lists what is there


@pytest.mark.parametrize("text", ["settings.flag>0", "settings.label>0", "inputs.gen>0",
                                  "clusters.dropped>0"])
def test_non_numeric_key_is_usage_error(results, text):
    with pytest.raises(UsageError, match="not a number"):
        evaluate([parse_rule(text)], results)


def test_list_key_suggests_alias(results):
    with pytest.raises(UsageError, match="dropped_clusters"):
        evaluate([parse_rule("clusters.dropped>0")], results)


@pytest.mark.parametrize("text,section", [
    ("dropped_classes>0", "classes"), ("max_class_gap>0.1", "classes"),
    ("max_subgroup_gap>0.1", "subgroups"), ("dropped_subgroups>0", "subgroups"),
    ("classes.max_gap>0.1", "classes"),
])
def test_missing_section_is_usage_error(results, text, section):
    with pytest.raises(UsageError) as ei:
        evaluate([parse_rule(text)], results)
    msg = str(ei.value)
    assert f"needs {section}, which is null" in msg
    assert gate.SECTION_HINTS[section] in msg


def test_missing_duplicates_section(results):
    results["duplicates"] = None
    with pytest.raises(UsageError, match="duplicates, which is null"):
        evaluate([parse_rule("dup_fraction>0.1")], results)
    del results["duplicates"]
    with pytest.raises(UsageError, match="duplicates"):
        evaluate([parse_rule("memorized_fraction>0.1")], results)


def test_usage_error_before_any_verdict(results):
    with pytest.raises(UsageError):
        evaluate([parse_rule("coverage<0.99"), parse_rule("dropped_classes>0")], results)


@pytest.mark.parametrize("value", [None, float("nan")])
def test_null_or_nan_metric_is_violation(results, value):
    results["metrics"]["fid"] = value
    res = evaluate([parse_rule("fid>50")], results)
    assert not res.passed
    (v,) = res.violations
    assert v.value is None and "null" in v.message and "fails" in v.message
    # also a rule the value could never match: a missing number never passes
    assert not evaluate([parse_rule("fid<-1e9")], results).passed


def test_null_by_embedder_metric_is_violation(results):
    res = evaluate([parse_rule(f'by_embedder["{CLIP}"].metrics.fid>100')], results)
    assert not res.passed


def test_no_rules_passes(results):
    res = evaluate([], results)
    assert res.passed and res.to_dict() == {"passed": True, "rules": [], "violations": []}


def test_to_dict_shape(results):
    results["metrics"]["coverage"] = 0.5
    d = evaluate([parse_rule("coverage<0.8"), parse_rule("fid>100")], results).to_dict()
    assert d["passed"] is False
    assert [r["passed"] for r in d["rules"]] == [False, True]
    v = d["violations"][0]
    assert {"rule", "name", "key", "op", "threshold", "value", "passed", "message"} <= set(v)
    assert v["key"] == "metrics.coverage" and v["rule"] == "coverage<0.8"


def test_validate_rules(results):
    rules = [parse_rule("coverage<0.8"), parse_rule("dropped_classes>0")]
    with pytest.raises(UsageError, match="classes"):
        validate_rules(rules, results)
    validate_rules(rules[:1], results)
    # before the scan: the sections it will produce
    validate_rules(rules, {"metrics", "inputs", "classes"})
    with pytest.raises(UsageError, match="classes"):
        validate_rules(rules, {"metrics", "inputs"})
    with pytest.raises(UsageError, match="unknown metric"):
        validate_rules([parse_rule("foo.bar<1")], {"metrics", "inputs"})
    validate_rules([parse_rule("n_failed>0")], ["inputs"])
    validate_rules([parse_rule(f'by_embedder["{CLIP}"].metrics.fid>1')], {"by_embedder"})


def test_available_keys(results):
    keys = gate.available_keys(results)
    assert "metrics.coverage" in keys and f'by_embedder["{CLIP}"].metrics.recall' in keys
    assert "settings.flag" not in keys and "settings.label" not in keys
    for k in keys:  # every listed key parses back as a rule name
        parse_rule(f"{k}>0")


# ------------------------------------------------------------------ policy files

def test_policy_list_form(tmp_path):
    p = tmp_path / "gate.toml"
    p.write_text('# gate\nfail_on = ["coverage<0.8", "dropped_classes > 0", \'by_embedder["a:b/c"].metrics.fid>1e2\']\n')
    rules = load_policy(p)
    assert [r.text for r in rules] == ["coverage<0.8", "dropped_classes > 0", 'by_embedder["a:b/c"].metrics.fid>1e2']
    assert rules[2].threshold == 100.0


def test_policy_table_form(tmp_path, results):
    p = tmp_path / "gate.toml"
    p.write_text(
        'fail_on = ["fid>100"]\n\n'
        '[[rule]]\nmetric = "coverage"\nop = "<"\nvalue = 0.9\ndescription = "coverage regression"\n\n'
        '[[rule]]\nmetric = "n_failed"\nop = ">"\nvalue = 0\n'
    )
    rules = load_policy(p)
    assert [(r.name, r.op, r.threshold) for r in rules] == [("fid", ">", 100), ("coverage", "<", 0.9), ("n_failed", ">", 0)]
    assert rules[1].description == "coverage regression"
    res = evaluate(rules, results)
    assert [o.passed for o in res.rules] == [True, False, False]
    assert res.violations[0].message.startswith("coverage regression: coverage = 0.85 < 0.9")


@pytest.mark.parametrize("body,fragment", [
    ("fail_on = [", "not valid TOML"),
    ("fail_on = 'coverage<0.8'", "list of strings"),
    ("fail_on = [1]", "list of strings"),
    ("fail-on = ['coverage<0.8']", "unknown key"),
    ("fail_on = ['foo<1']", "unknown metric 'foo'"),
    ("fail_on = ['coverage==1']", "not supported"),
    ("fail_on = []", "defines no rules"),
    ("", "defines no rules"),
    ("[[rule]]\nmetric = 'fid'\nop = '>'\n", "missing value"),
    ("[[rule]]\nmetric = 'fid'\nop = '>'\nvalue = 'x'\n", "value must be a number"),
    ("[[rule]]\nmetric = 'fid'\nop = '>'\nvalue = true\n", "value must be a number"),
    ("[[rule]]\nmetric = 'fid'\nop = '=='\nvalue = 1\n", "not supported"),
    ("[[rule]]\nmetric = 'fid'\nop = '>'\nvalue = 1\nthreshold = 2\n", "unknown key"),
    ("rule = 3", "[[rule]] tables"),
])
def test_policy_bad_files(tmp_path, body, fragment):
    p = tmp_path / "bad.toml"
    p.write_text(body)
    with pytest.raises(UsageError) as ei:
        load_policy(p)
    assert str(p) in str(ei.value) and fragment in str(ei.value)


def test_policy_missing_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_policy(tmp_path / "nope.toml")


# ------------------------------------------------------------------ JUnit & GitHub summary

def _mixed(results) -> GateResult:
    results["metrics"]["coverage"] = 0.71
    results["metrics"]["fid"] = None
    return evaluate([parse_rule("coverage<0.8"), parse_rule("kid>0.1"), parse_rule("fid>50"),
                     parse_rule(f'by_embedder["{CLIP}"].metrics.recall<0.3')], results)


def test_junit(tmp_path, results):
    res = _mixed(results)
    path = write_junit(res, tmp_path / "sub" / "gate.xml")
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    assert suite.get("name") == "collapse-audit"
    assert suite.get("tests") == "4" and suite.get("failures") == "2" and suite.get("errors") == "0"
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [o.rule for o in res.rules]
    assert all(c.get("classname") == "collapse-audit.gate" for c in cases)
    failures = {c.get("name"): c.find("failure") for c in cases}
    assert failures["coverage<0.8"].get("message") == "coverage = 0.71 < 0.8 (fail-on rule matched)"
    assert "null" in failures["fid>50"].get("message")
    assert failures["kid>0.1"] is None and failures[f'by_embedder["{CLIP}"].metrics.recall<0.3'] is None


def test_junit_all_pass_and_custom_name(tmp_path, results):
    res = evaluate([parse_rule("coverage<0.8")], results)
    root = ET.parse(write_junit(res, tmp_path / "j.xml", suite_name="my-gate")).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite.get("name") == "my-gate" and suite.get("tests") == "1" and suite.get("failures") == "0"
    assert suite.find("testcase/failure") is None


def test_github_summary_text(results):
    res = _mixed(results)
    md = github_step_summary(res, results)
    assert "FAILED" in md and "2 of 4" in md
    assert "| coverage | 0.71 |" in md and "| fid | n/a |" in md
    assert "coverage = 0.71 < 0.8 (fail-on rule matched)" in md
    assert "\\|" not in md.split("fail-on rule")[0]  # metrics table cells need no escaping
    assert "gate passed" in github_step_summary(evaluate([parse_rule("kid>1")], results), results)
    assert "no gate rules" in github_step_summary(None, results)


def test_github_summary_appends_via_env_mapping(tmp_path, results):
    res = _mixed(results)
    target = tmp_path / "summary.md"
    target.write_text("previous step\n")
    assert append_github_summary(res, results, env={"GITHUB_STEP_SUMMARY": str(target)}) == target
    append_github_summary(res, results, env={"GITHUB_STEP_SUMMARY": str(target)})
    text = target.read_text()
    assert text.startswith("previous step\n") and text.count("## collapse-audit") == 2
    assert append_github_summary(res, results, env={}) is None
    assert append_github_summary(res, results, env={"GITHUB_STEP_SUMMARY": ""}) is None


def test_evaluate_does_not_mutate_results(results):
    before = copy.deepcopy(results)
    evaluate([parse_rule("coverage<0.8"), parse_rule("n_failed>0")], results)
    assert results == before
    assert math.isfinite(resolve(results, parse_rule("kid>0")))


def test_approx_error_alias(results):
    """approx_error reads the measured bound of approximate PRDC, is 0 for exact PRDC, and null (a violation)
    when PRDC was not computed at all."""
    rule = parse_rule("approx_error>0.02")
    results["metrics"].update(prdc_method="exact", approximation=None)
    assert resolve(results, rule) == 0.0 and evaluate([rule], results).passed
    results["metrics"].update(prdc_method="approx", approximation={"max_abs_error": 0.031})
    assert resolve(results, rule) == 0.031
    (v,) = evaluate([rule], results).violations
    assert v.name == "approx_error" and v.value == 0.031
    results["metrics"].update(prdc_method=None, approximation=None, precision=None)
    assert resolve(results, rule) is None and not evaluate([rule], results).passed
    validate_rules([rule], {"metrics", "inputs"})  # known before the scan runs
