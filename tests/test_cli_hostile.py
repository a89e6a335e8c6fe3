"""Hostile input at the command line (issue 12): usage errors, Rich markup in the
user's text, environment faults, a closed stdout, features files that try to
choose code or files, a re-used output folder, an offline CLIP download, and an
unsafe pickle as weights.

Every case ends in an exact exit code (0 ok, 1 gate failed, 2 usage/input/
environment) and, for errors, exactly one line on stderr: never exit 3
('internal error') and never a traceback.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import write_images

CLI = Path(sys.executable).with_name("collapse-audit")

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.filterwarnings("ignore::FutureWarning")]

# Scans that write a report keep under 20 plotted points (report.PCA_BELOW): PCA, not a UMAP JIT compile.


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """In-process runs must not append to a real CI step summary or raise tracebacks on purpose."""
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.delenv("COLLAPSE_AUDIT_DEBUG", raising=False)


# --------------------------------------------------------------------------- helpers
def _lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def assert_one_line(err: str, *needles: str) -> str:
    """``err`` is exactly one non-empty line, with no traceback / internal error, holding every needle."""
    lines = _lines(err)
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    line = lines[0]
    assert "internal error" not in line and "Traceback" not in err, line
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def _npz(path, n=40, d=8, seed=0, embedder_id="test-embedder", prefix="x", paths=None, loc=0.0, **kw):
    from collapse_audit.features import FeatureSet, save_features

    rng = np.random.default_rng(seed)
    x = rng.normal(loc=loc, size=(n if paths is None else len(paths), d)).astype(np.float32)
    paths = paths if paths is not None else [f"{prefix}{i}.png" for i in range(len(x))]
    return save_features(path, FeatureSet(features=x, paths=list(paths), embedder_id=embedder_id, **kw))


@pytest.fixture
def npz_pair(tmp_path):
    """Two small feature files of the same (test) embedder."""
    return _npz(tmp_path / "gen.npz", n=9, seed=1, prefix="g", loc=0.2), _npz(tmp_path / "real.npz", n=9, seed=0, prefix="r")


def _env(**extra) -> dict:
    env = dict(os.environ)
    env.update({"COLLAPSE_AUDIT_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "CI": "1"})
    env.pop("COLLAPSE_AUDIT_DEBUG", None)
    env.pop("GITHUB_STEP_SUMMARY", None)
    env.update(extra)
    return env


def run_console(*args, cwd=None, timeout=120, **env) -> tuple[int, str, str]:
    """The real console script in a subprocess: (exit code, stdout, stderr)."""
    p = subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=_env(**env))
    return p.returncode, p.stdout, p.stderr


def _need_console():
    if not CLI.exists():
        pytest.skip(f"console script {CLI} not installed")


class TinyNet:  # built lazily so that importing this file does not need torch
    @staticmethod
    def save(path, dim=8, size=16, seed=0):
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
                self.fc = torch.nn.Linear(4, dim)

            def forward(self, x):
                return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

        torch.manual_seed(seed)
        m = torch.jit.script(Net().eval())
        m.save(str(path), _extra_files={"collapse_audit.json": json.dumps({"input_size": [size, size]})})
        return Path(path)


@pytest.fixture
def ts_model(tmp_path):
    return TinyNet.save(tmp_path / "model.pt")


# =========================================================================== 1. usage errors
USAGE_CASES = {
    "unknown-command": (["frobnicate"], ["frobnicate"]),
    "scan-missing-argument": (["scan"], ["Missing argument", "gen"]),
    "unknown-option": (["scan", "g.npz", "--real", "r.npz", "--bogus"], ["--bogus"]),
    "k-not-a-number": (["scan", "g.npz", "--real", "r.npz", "--k", "notanumber"], ["--k"]),
    "k-zero": (["scan", "g.npz", "--real", "r.npz", "--k", "0"], ["--k"]),
    "clusters-one": (["scan", "g.npz", "--real", "r.npz", "--clusters", "1"], ["--clusters"]),
    "copy-quantile-two": (["scan", "g.npz", "--real", "r.npz", "--copy-quantile", "2"], ["--copy-quantile"]),
    "alpha-five": (["scan", "g.npz", "--real", "r.npz", "--alpha", "5"], ["--alpha"]),
    "alpha-nan": (["scan", "g.npz", "--real", "r.npz", "--alpha", "nan"], ["--alpha"]),
    "dup-threshold-negative": (["scan", "g.npz", "--real", "r.npz", "--dup-threshold", "-1"], ["--dup-threshold"]),
    "seed-negative": (["scan", "g.npz", "--real", "r.npz", "--seed", "-1"], ["--seed"]),
    "exact-max-pairs-nan": (["scan", "g.npz", "--real", "r.npz", "--exact-max-pairs", "nan"], ["--exact-max-pairs"]),
    "kid-subsets-nan": (["scan", "g.npz", "--real", "r.npz", "--kid-subsets", "nan"], ["--kid-subsets"]),
    "embed-seed-negative": (["embed", "imgs", "-o", "f.npz", "--seed", "-1"], ["--seed"]),
}


def _scan_float_options() -> list[str]:
    """Every float-valued option of ``scan``, read from its signature (so a new one is covered too)."""
    import inspect
    import typing

    from collapse_audit import cli

    hints = typing.get_type_hints(cli.scan)
    out = []
    for name, param in inspect.signature(cli.scan).parameters.items():
        t = hints[name]
        if t is not float and float not in typing.get_args(t):
            continue
        decls = [d for d in (getattr(param.default, "param_decls", None) or ()) if d.startswith("--")]
        out.append(max(decls, key=len) if decls else "--" + name.replace("_", "-"))
    return sorted(out)


FLOAT_OPTIONS = _scan_float_options()
NAN_CASES = {f"nan{opt}": (["scan", "g.npz", "--real", "r.npz", opt, "nan"], [opt]) for opt in FLOAT_OPTIONS}
ALL_USAGE = {**USAGE_CASES, **NAN_CASES}


@pytest.fixture(scope="module")
def usage_runs(tmp_path_factory):
    """All usage-error invocations of the console script, run concurrently (each is a fresh process)."""
    if not CLI.exists():
        pytest.skip(f"console script {CLI} not installed")
    cwd = tmp_path_factory.mktemp("usage")  # no g.npz / r.npz here: a scan that got past parsing fails differently
    cases = {"no-command": []} | {k: v[0] for k, v in ALL_USAGE.items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futs = {k: pool.submit(run_console, *args, cwd=cwd) for k, args in cases.items()}
        return {k: f.result() for k, f in futs.items()}


def test_scan_float_options_are_the_known_ones():
    assert {"--alpha", "--copy-quantile", "--dup-threshold", "--exact-max-pairs"} <= set(FLOAT_OPTIONS)


def test_no_command_prints_help_on_stdout_and_exits_2(usage_runs):
    code, out, err = usage_runs["no-command"]
    assert code == 2, (out, err)
    assert "Usage: collapse-audit" in out and "Commands:" in out and "scan" in out
    assert "internal error" not in err and "Traceback" not in err
    assert len(_lines(err)) <= 1


@pytest.mark.parametrize("case", sorted(ALL_USAGE))
def test_usage_error_exits_2_with_one_line(usage_runs, case):
    code, out, err = usage_runs[case]
    needles = ALL_USAGE[case][1]
    assert code == 2, (case, out, err)
    line = assert_one_line(err, *needles)
    assert line.startswith("collapse-audit")
    assert "no such file" not in line  # refused at parsing, not after the scan started


# =========================================================================== 2. Rich markup in the user's text
def test_markup_in_an_image_file_name(tmp_path, run_cli, ts_model):
    gen, real = tmp_path / "gen", tmp_path / "real"
    write_images(gen, 8, size=(24, 20), seed=1)
    write_images(real, 8, size=(24, 20), seed=2)
    (gen / "[").mkdir()
    write_images(gen / "[", 1, size=(24, 20), seed=3, prefix="oops]")  # a readable '[/oops]0000.png'
    (gen / "[" / "]bad.png").write_bytes(b"not an image")  # an unreadable '[/]bad.png': listed in the failures
    code, out, err = run_cli("scan", gen, "--real", real, "-e", f"torchscript:{ts_model}", "--no-cache",
                             "--workers", "0", "--no-report", "--out", tmp_path / "out")
    assert code == 0, err
    assert "[/]bad.png" in err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [f["path"] for f in res["failures"]] == ["[/]bad.png"]
    assert res["inputs"]["gen"]["n_images"] == 9


def test_markup_in_a_manifest_label(tmp_path, run_cli):
    gp = _npz(tmp_path / "gen.npz", n=40, seed=1, prefix="g")
    rp = _npz(tmp_path / "real.npz", n=40, seed=0, prefix="r")
    rows = ["path,label,side"]
    rows += [f"r{i}.png,{'[/]' if i % 2 else 'cat'},real" for i in range(40)]
    rows += [f"g{i}.png,cat,gen" for i in range(40)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    code, out, err = run_cli("scan", gp, "--real", rp, "--manifest", tmp_path / "m.csv", "--no-report", "--out", tmp_path / "out")
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["classes"]["dropped"] == ["[/]"]
    assert "dropped [/];" in out


def test_markup_in_the_out_path(tmp_path, run_cli, npz_pair):
    gp, rp = npz_pair
    out_dir = tmp_path / "[" / "oops]" / "[bold]x"
    code, out, err = run_cli("scan", gp, "--real", rp, "--out", out_dir)
    assert code == 0, err
    assert f"results: {out_dir / 'results.json'}" in out
    assert f"report:  {out_dir / 'report.html'}" in out
    assert str(out_dir).count("[/oops]") == 1 and (out_dir / "results.json").is_file()


def test_markup_in_a_policy_description_and_the_gate_violation(tmp_path, run_cli, npz_pair):
    gp, rp = npz_pair
    desc = "[/oops] [bold]FID[/bold] budget [/]"
    pol = tmp_path / "gate.toml"
    pol.write_text(f'[[rule]]\nmetric = "fid"\nop = ">="\nvalue = 0\ndescription = "{desc}"\n')
    code, out, err = run_cli("scan", gp, "--real", rp, "--policy", pol, "--no-report", "--out", tmp_path / "out")
    assert code == 1, err
    assert f"GATE FAILED: {desc}: fid = " in err
    assert "internal error" not in err


def test_markup_in_a_policy_rule_error_is_one_line(tmp_path, run_cli, npz_pair):
    gp, rp = npz_pair
    pol = tmp_path / "gate.toml"
    pol.write_text('fail_on = ["[/oops] > 1"]\n')
    code, out, err = run_cli("scan", gp, "--real", rp, "--policy", pol, "--no-report", "--out", tmp_path / "out")
    assert code == 2
    assert_one_line(err, "[/oops] > 1", str(pol))


def test_markup_in_an_embedder_id_and_a_gate_violation_message(tmp_path, run_cli):
    gp = _npz(tmp_path / "gen.npz", seed=1, embedder_id="[/oops]")
    rp = _npz(tmp_path / "real.npz", seed=0, embedder_id="[/oops]")
    rule = 'by_embedder["[/oops]"].metrics.fid>=0'
    code, out, err = run_cli("scan", gp, "--real", rp, "--fail-on", rule, "--no-report", "--out", tmp_path / "out")
    assert code == 1, err
    assert "[/oops]  [primary]" in out  # the table title: markup would eat '[primary]' (and crash on '[/oops]')
    assert 'GATE FAILED: by_embedder["[/oops]"].metrics.fid = ' in err


# =========================================================================== 3. environment faults
@pytest.fixture
def no_work(monkeypatch):
    """Record (and refuse) any scan or embedding work: the faults must be found before it."""
    import collapse_audit.pipeline as P
    import collapse_audit.scan as S

    calls = []

    def refuse(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} reached")
        return f

    monkeypatch.setattr(S, "run_scan", refuse("run_scan"))
    monkeypatch.setattr(P, "embed_folder", refuse("embed_folder"))
    monkeypatch.setattr(P, "build_embedders", refuse("build_embedders"))
    return calls


def test_out_is_a_file(tmp_path, run_cli, npz_pair, no_work):
    gp, rp = npz_pair
    (tmp_path / "f").write_text("x")
    code, out, err = run_cli("scan", gp, "--real", rp, "--out", tmp_path / "f")
    assert code == 2 and no_work == []
    assert_one_line(err, "--out", str(tmp_path / "f"), "is a file")
    assert (tmp_path / "f").read_text() == "x"


def test_out_under_a_file(tmp_path, run_cli, npz_pair, no_work):
    gp, rp = npz_pair
    (tmp_path / "f").write_text("x")
    code, out, err = run_cli("scan", gp, "--real", rp, "--out", tmp_path / "f" / "sub")
    assert code == 2 and no_work == []
    assert_one_line(err, "--out", str(tmp_path / "f" / "sub"), os.strerror(errno.ENOTDIR))


def test_junit_is_a_folder(tmp_path, run_cli, npz_pair, no_work):
    gp, rp = npz_pair
    (tmp_path / "j").mkdir()
    code, out, err = run_cli("scan", gp, "--real", rp, "--out", tmp_path / "out", "--junit", tmp_path / "j")
    assert code == 2 and no_work == []
    assert_one_line(err, "--junit", "is a folder")


def test_github_step_summary_in_a_missing_folder(tmp_path, run_cli, npz_pair, no_work, monkeypatch):
    gp, rp = npz_pair
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing" / "summary.md"))
    code, out, err = run_cli("scan", gp, "--real", rp, "--out", tmp_path / "out")
    assert code == 2 and no_work == []
    assert_one_line(err, "GITHUB_STEP_SUMMARY", "does not exist")
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("name", ["dir", "dir.npz"])
def test_embed_output_is_a_folder(tmp_path, run_cli, no_work, name):
    write_images(tmp_path / "imgs", 2)
    (tmp_path / name).mkdir()
    code, out, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / name, "-e", "inception", "--weights", "random")
    assert code == 2 and no_work == []
    assert_one_line(err, "-o", "is a folder")


def test_a_full_disk_while_writing_results(tmp_path, run_cli, npz_pair, monkeypatch):
    gp, rp = npz_pair
    out_dir = tmp_path / "out"
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst).name == "results.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    code, out, err = run_cli("scan", gp, "--real", rp, "--out", out_dir, "--no-report")
    assert code == 2
    assert_one_line(err, "results.json", "No space left on device")
    assert [f for f in os.listdir(out_dir) if f.endswith(".tmp")] == []
    assert not (out_dir / "results.json").exists()


# ---- collapse_audit.outputs
def test_check_output_dir(tmp_path):
    from collapse_audit.errors import EnvironmentFault
    from collapse_audit.outputs import check_output_dir

    d = check_output_dir(tmp_path / "a" / "b")
    assert d == tmp_path / "a" / "b" and d.is_dir() and os.listdir(d) == []  # the probe file is gone
    (tmp_path / "f").write_text("x")
    with pytest.raises(EnvironmentFault, match="is a file, not a folder"):
        check_output_dir(tmp_path / "f")
    with pytest.raises(EnvironmentFault, match=r"--out .*cannot create the folder \(Not a directory\)"):
        check_output_dir(tmp_path / "f" / "sub")
    with pytest.raises(EnvironmentFault, match="^--stats "):
        check_output_dir(tmp_path / "f", option="--stats")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_output_dir_read_only(tmp_path):
    from collapse_audit.errors import EnvironmentFault
    from collapse_audit.outputs import check_output_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(EnvironmentFault, match="cannot write"):
            check_output_dir(ro)
    finally:
        ro.chmod(0o700)


def test_check_output_file(tmp_path):
    from collapse_audit.errors import EnvironmentFault
    from collapse_audit.outputs import check_output_file

    (tmp_path / "d").mkdir()
    with pytest.raises(EnvironmentFault, match="is a folder"):
        check_output_file(tmp_path / "d", option="--junit")
    (tmp_path / "f").write_text("x")
    with pytest.raises(EnvironmentFault, match="is a file, not a folder"):
        check_output_file(tmp_path / "f" / "x.xml")
    with pytest.raises(EnvironmentFault, match="does not exist; create it first"):
        check_output_file(tmp_path / "missing" / "x.xml", create_parent=False)
    assert not (tmp_path / "missing").exists()
    p = check_output_file(tmp_path / "new" / "deeper" / "x.xml")
    assert p.parent.is_dir() and not p.exists() and os.listdir(p.parent) == []
    assert check_output_file(tmp_path / "f") == tmp_path / "f"  # an existing writable file may be replaced
    assert (tmp_path / "f").read_text() == "x"


def test_write_atomic_replaces_and_leaves_no_temp_file_on_failure(tmp_path, monkeypatch):
    import collapse_audit.outputs as O
    from collapse_audit.errors import EnvironmentFault

    p = tmp_path / "results.json"
    assert O.write_atomic(p, "old") == p and p.read_text() == "old"
    O.write_atomic(p, b"new bytes")
    assert p.read_bytes() == b"new bytes"

    real_fdopen = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(O.os, "fdopen", lambda fd, mode="r", *a, **k: Full(real_fdopen(fd, mode, *a, **k)))
    with pytest.raises(EnvironmentFault, match=r"cannot write results\.json .*No space left on device"):
        O.write_atomic(p, "a" * 1000, what="results.json")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["results.json"] and p.read_bytes() == b"new bytes"

    def no_replace(src, dst):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(O.os, "replace", no_replace)
    with pytest.raises(EnvironmentFault, match="Input/output error"):
        O.write_atomic(p, "x")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["results.json"] and p.read_bytes() == b"new bytes"


def test_remove_stale_artefacts(tmp_path):
    from collapse_audit.outputs import ARTEFACTS, remove_stale_artefacts

    assert set(ARTEFACTS) == {"results.json", "report.html", "report_data.json"}
    for n in ARTEFACTS:
        (tmp_path / n).write_text(n)
    (tmp_path / "mine.txt").write_text("keep")
    (tmp_path / "sub").mkdir()
    assert sorted(remove_stale_artefacts(tmp_path, keep=("results.json",))) == ["report.html", "report_data.json"]
    assert sorted(os.listdir(tmp_path)) == ["mine.txt", "results.json", "sub"]
    (tmp_path / "report.html").symlink_to(tmp_path / "gone")  # a dangling link is an artefact too
    assert sorted(remove_stale_artefacts(tmp_path)) == ["report.html", "results.json"]
    assert sorted(os.listdir(tmp_path)) == ["mine.txt", "sub"]
    assert remove_stale_artefacts(tmp_path) == []


# =========================================================================== 4. a closed stdout
def test_closed_stdout_keeps_the_exit_code(tmp_path, npz_pair):
    _need_console()
    gp, rp = npz_pair
    procs = {}
    for name, extra in (("ok", []), ("gate", ["--fail-on", "fid>=0"])):
        cmd = [str(CLI), "scan", str(gp), "--real", str(rp), "--no-report", "--out", str(tmp_path / name), *extra]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
        p.stdout.close()  # `| head -c 0`: the reader is gone before anything is written
        procs[name] = p
    res = {}
    for name, p in procs.items():
        err = p.stderr.read().decode()
        res[name] = (p.wait(timeout=120), err)
    for name, (code, err) in res.items():
        for bad in ("Traceback", "BrokenPipe", "Exception ignored", "internal error"):
            assert bad not in err, (name, err)
    assert res["ok"][0] == 0, res["ok"][1]
    assert res["gate"][0] == 1, res["gate"][1]
    assert "GATE FAILED: fid = " in res["gate"][1]
    assert (tmp_path / "ok" / "results.json").is_file() and (tmp_path / "gate" / "results.json").is_file()


# =========================================================================== 5. features files choose no code and no files
def test_npz_naming_a_torchscript_model_does_not_load_it(tmp_path, run_cli, ts_model, monkeypatch):
    import torch

    import collapse_audit.embedders as E

    write_images(tmp_path / "real", 8, size=(24, 20), seed=1)
    write_images(tmp_path / "gen", 8, size=(24, 20), seed=2)
    real_npz = tmp_path / "real.npz"
    code, out, err = run_cli("embed", tmp_path / "real", "-o", real_npz, "-e", f"torchscript:{ts_model}", "--no-cache", "--workers", "0")
    assert code == 0, err
    from collapse_audit.features import load_features

    fs = load_features(real_npz)
    assert fs.embedder["name"].startswith("torchscript:") and fs.embedder["path"] == str(ts_model)  # genuine metadata

    loads = []
    with monkeypatch.context() as m:
        real_make, real_jit_load = E.make_torchscript, torch.jit.load
        m.setattr(E, "make_torchscript", lambda *a, **k: loads.append(("make_torchscript", a)) or real_make(*a, **k))
        m.setattr(torch.jit, "load", lambda *a, **k: loads.append(("torch.jit.load", a)) or real_jit_load(*a, **k))
        code, out, err = run_cli("scan", tmp_path / "gen", "--real", real_npz, "--no-cache", "--workers", "0",
                                 "--out", tmp_path / "out")
    assert code == 2
    assert_one_line(err, str(real_npz), "--embedder torchscript:PATH")
    assert loads == []
    assert not (tmp_path / "out" / "results.json").exists()

    code, out, err = run_cli("scan", tmp_path / "gen", "--real", real_npz, "--embedder", f"torchscript:{ts_model}",
                             "--no-cache", "--workers", "0", "--no-report", "--out", tmp_path / "out")
    assert code == 0, err
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["primary_embedder"] == fs.embedder_id


def test_path_under():
    from collapse_audit.report import path_under

    root = Path("/data/imgs")
    assert path_under(root, "a.png") == root / "a.png"
    assert path_under(root, "sub/./b.png") == root / "sub" / "b.png"
    assert path_under(root, "sub/../c.png") == root / "c.png"
    assert path_under(root, "sub\\d.png") == root / "sub" / "d.png"
    assert path_under(root, "..dots.png") == root / "..dots.png"
    for bad in ("", "..", "../x.png", "sub/../../x.png", "./../x.png", "/etc/passwd", "..\\x.png", "\\\\host\\share\\x.png",
                "C:/x.png", "c:x.png"):
        assert path_under(root, bad) is None, bad


@pytest.fixture
def evil_npz(tmp_path):
    """A real side whose meta root names a private folder and whose paths try to leave any folder."""
    private, pub = tmp_path / "private", tmp_path / "pub"
    write_images(private, 4, size=(16, 16), seed=5, prefix="s")
    write_images(pub, 6, size=(16, 16), seed=6, prefix="r")
    write_images(tmp_path, 1, size=(16, 16), seed=7, prefix="outside")
    paths = ([f"r{i:04d}.png" for i in range(6)] + [f"s{i:04d}.png" for i in range(2)]
             + ["../outside0000.png", "../private/s0000.png", str(private / "s0001.png"), "sub/../../outside0000.png"])
    evil = _npz(tmp_path / "evil.npz", paths=paths, seed=0, root=str(private))
    gen = _npz(tmp_path / "gen.npz", n=7, seed=1, prefix="g")
    return gen, evil, pub


def test_npz_root_and_dotdot_paths_give_no_thumbnails(tmp_path, run_cli, evil_npz):
    gen, evil, pub = evil_npz
    code, out, err = run_cli("scan", gen, "--real", evil, "--out", tmp_path / "out")
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "report_data.json").read_text())
    assert data["thumbs"] == []
    assert "data:image/jpeg;base64" not in (tmp_path / "out" / "report.html").read_text()


def test_real_images_thumbnails_stay_inside_the_folder(tmp_path, run_cli, evil_npz):
    gen, evil, pub = evil_npz
    code, out, err = run_cli("scan", gen, "--real", evil, "--real-images", pub, "--out", tmp_path / "out")
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "report_data.json").read_text())
    got = {(t["side"], t["path"]) for t in data["thumbs"]}
    assert got == {("real", f"r{i:04d}.png") for i in range(6)}  # all plotted images inside pub/, nothing else
    assert all(t["src"].startswith("data:image/jpeg;base64,") for t in data["thumbs"])


# =========================================================================== 6. a re-used output folder
def test_reused_out_folder_holds_one_run(tmp_path, run_cli, evil_npz):
    gen, evil, pub = evil_npz
    out_dir = tmp_path / "out"
    code, _, err = run_cli("scan", gen, "--real", evil, "--real-images", pub, "--out", out_dir)
    assert code == 0, err
    first = json.loads((out_dir / "results.json").read_text())
    data = json.loads((out_dir / "report_data.json").read_text())
    assert isinstance(first["run_id"], str) and len(first["run_id"]) >= 16
    assert data["run_id"] == first["run_id"] and data["thumbs"]
    assert "data:image/jpeg;base64" in (out_dir / "report.html").read_text()
    shutil.copy(out_dir / "report_data.json", tmp_path / "old_report_data.json")

    code, _, err = run_cli("scan", gen, "--real", evil, "--out", out_dir, "--no-report")
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["results.json"]
    second = json.loads((out_dir / "results.json").read_text())
    assert second["run_id"] != first["run_id"]

    shutil.copy(tmp_path / "old_report_data.json", out_dir / "report_data.json")
    code, out, err = run_cli("report", out_dir)
    assert code == 0, err
    assert_one_line(err, "note:", "belongs to another run")
    html = (out_dir / "report.html").read_text()
    assert "data:image/jpeg;base64" not in html
    assert f"report: {out_dir / 'report.html'}" in out


# =========================================================================== 7. CLIP offline fails fast
def test_clip_pretrained_offline_fails_fast(tmp_path, run_cli, monkeypatch):
    import collapse_audit.embedders as E
    import collapse_audit.weights as W

    monkeypatch.delenv("COLLAPSE_AUDIT_OFFLINE", raising=False)  # the check under test, not the offline switch
    probes, creates = [], []
    monkeypatch.setattr(W, "host_reachable", lambda url, timeout=3.0: probes.append(url) or False)
    real_create = E.ClipEmbedder._create

    def create(self, **kw):
        creates.append(kw.get("pretrained"))
        if kw.get("pretrained") is not None:
            raise AssertionError("open_clip create_model with pretrained weights reached")
        return real_create(self, **kw)

    monkeypatch.setattr(E.ClipEmbedder, "_create", create)
    write_images(tmp_path / "imgs", 2, size=(24, 24))
    (tmp_path / "cache").mkdir()
    t0 = time.perf_counter()
    code, out, err = run_cli("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", "clip", "--cache-dir", tmp_path / "cache",
                             "--no-cache", "--workers", "0")
    elapsed = time.perf_counter() - t0
    assert code == 2
    assert_one_line(err, "CLIP ViT-B-32/openai weights are not available", "no network connection")
    assert probes and creates == []
    assert elapsed < 20, elapsed
    assert not (tmp_path / "f.npz").exists()

    e = E.make_clip("", E.WeightsChoice(), cache=tmp_path / "cache")
    from collapse_audit.errors import WeightsError

    with pytest.raises(WeightsError, match="no network connection"):
        e._build()
    assert creates == []


# =========================================================================== 8. an unsafe pickle as weights
class NotAWeight:
    """A class of this test module: torch.load(weights_only=True) refuses to build it."""

    def __init__(self, v=1):
        self.v = v


@pytest.mark.parametrize("kind", ["pickle-with-a-custom-class", "torchscript-archive"])
def test_unsafe_pickle_as_inception_weights_is_one_line(tmp_path, kind):
    """A file torch.load(weights_only=True) refuses (or, for a TorchScript archive, warns about and
    hands to torch.jit.load): exit 2 and exactly one line, no torch warning lines."""
    _need_console()
    import torch

    bad = tmp_path / "evil.pth"
    if kind == "pickle-with-a-custom-class":
        torch.save({"conv.weight": torch.zeros(1), "payload": NotAWeight()}, bad)
    else:
        TinyNet.save(bad)
    write_images(tmp_path / "imgs", 2, size=(24, 24))
    code, out, err = run_console("embed", tmp_path / "imgs", "-o", tmp_path / "f.npz", "-e", "inception",
                                 "--weights", f"inception={bad}", "--no-cache", "--workers", "0")
    assert code == 2, (out, err)
    assert_one_line(err, str(bad))
    assert "Warning" not in err and "warn" not in err.lower()
    assert not (tmp_path / "f.npz").exists()
