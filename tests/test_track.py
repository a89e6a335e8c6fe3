"""collapse-audit track / Tracker: checkpoints of a run against one real set.

The statistical claims are checked over many seeded runs of synthetic
features with known modes (a Gaussian mixture): a collapse injected at
checkpoint k is found at k or k+1, healthy runs raise no alert in at least
95 % of repetitions, alternating modes are reported as hopping with their
switch steps.  The command is checked end to end on .npz checkpoints and on
image folders embedded with a random-weight TorchScript model saved and
loaded through the real loading code.
"""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch

from collapse_audit import TrackConfig, Tracker
from collapse_audit.features import FeatureSet, save_features
from collapse_audit.track import discover_checkpoints, step_from_name, track_schema

from conftest import write_images

D = 16
MODES = 8


def _centres(seed=1234):
    return np.random.default_rng(seed).normal(0, 6.0, size=(MODES, D))


def _draw(rng, n, modes, centres):
    modes = np.asarray(modes)
    m = modes[rng.integers(0, len(modes), n)]
    return (centres[m] + rng.standard_normal((n, D))).astype(np.float32)


# fast settings: the statistics do not need KID's 100 subsets or bootstrap intervals
FAST = TrackConfig(clusters=MODES, bootstrap=0, kid_subsets=5, kid_subset_size=200)


def _run(seed, schedule, n_real=1200, n_gen=600, config=FAST):
    """schedule: one tuple of mode ids per checkpoint."""
    rng = np.random.default_rng(seed)
    c = _centres()
    tr = Tracker(real=_draw(rng, n_real, range(MODES), c), config=config)
    for i, modes in enumerate(schedule):
        tr.update((i + 1) * 100, features=_draw(rng, n_gen, modes, c))
    return tr


def test_step_from_name_and_discovery(tmp_path):
    assert step_from_name("step_000500") == 500
    assert step_from_name("epoch-3") == 3
    assert step_from_name("gen2.npz") == 2
    assert step_from_name("final") is None
    run = tmp_path / "run"
    for n in ("step_10", "step_9", "step_100"):
        (run / n).mkdir(parents=True)
    (run / ".hidden").mkdir()
    assert [c.step for c in discover_checkpoints([run])] == [9, 10, 100]
    (run / "step_0010").mkdir()
    from collapse_audit.errors import UsageError

    with pytest.raises(UsageError, match="same step 10"):
        discover_checkpoints([run])


def test_collapse_onset_found_at_k_or_next():
    all_modes = tuple(range(MODES))
    hits, early = 0, 0
    seeds = range(10)
    for seed in seeds:
        k = 4 + seed % 4
        sched = [all_modes] * k + [(0, 1, 2, 3)] * (10 - k)
        run = _run(seed, sched, n_real=800, n_gen=400).to_dict()["run"]
        onset = run["onset"]
        if onset is not None and onset["checkpoint"] in (k, k + 1):
            hits += 1
        if onset is not None and onset["checkpoint"] < k:
            early += 1
    # a false alarm before k is allowed at the run's rate (<= alpha = 5 %; P(>= 2 of 10) < 0.09 at 5 %)
    assert early <= 1
    assert hits >= len(seeds) - early


@pytest.mark.slow
def test_healthy_runs_raise_no_alert_in_95_percent():
    """End to end (PRDC, clusters, duplicates per checkpoint): 60 healthy runs of 20 checkpoints.

    The onset statistics alone are checked over 200 runs in test_trackstats.py (fast)."""
    all_modes = tuple(range(MODES))
    n_rep, alarms = 60, 0
    for seed in range(n_rep):
        run = _run(1000 + seed, [all_modes] * 20, n_real=800, n_gen=400).to_dict()["run"]
        alarms += bool(run["alerts"])
    print(f"healthy 20-checkpoint runs with any alert: {alarms}/{n_rep}")
    assert alarms <= 3  # >= 95 % of runs raise nothing


def test_alternating_modes_are_hopping_with_switch_steps():
    a, b = 0, 1
    rest = tuple(range(2, MODES))
    sched = [(b, *rest) if i % 2 == 0 else (a, *rest) for i in range(8)]  # A dropped at even, B at odd checkpoints
    tr = _run(7, sched)
    d = tr.to_dict()
    # the cluster ids are k-means ids: find those holding modes A and B
    c = _centres()
    from collapse_audit.analysis.clusters import assign_to_centroids
    from collapse_audit.index import normalise_rows

    ids, _ = assign_to_centroids(tr._centroids, normalise_rows(c.astype(np.float32)))
    hop = {h["id"]: h for h in d["run"]["hopping"]["clusters"]}
    steps = [ck["step"] for ck in d["checkpoints"]]
    assert int(ids[a]) in hop and int(ids[b]) in hop
    assert hop[int(ids[a])]["switch_steps"] == steps[1:]
    assert hop[int(ids[b])]["switch_steps"] == steps[1:]
    assert len(hop) == 2
    assert any(al["kind"] == "hopping" for al in d["run"]["alerts"])


def test_never_learned_and_schema(tmp_path):
    tr = _run(3, [tuple(range(1, MODES))] * 5)
    d = tr.to_dict()
    jsonschema.validate(d, track_schema())
    assert len(d["run"]["never_learned"]) == 1
    assert d["checkpoints"][0]["clusters"]["n_dropped"] == 1
    assert d["run"]["onset"] is None
    path = tr.write(tmp_path / "out")
    back = json.loads(path.read_text())
    jsonschema.validate(back, track_schema())
    assert (tmp_path / "out" / "track.html").stat().st_size > 1000


def test_update_alerts_are_new_only_and_steps_increase():
    all_modes = tuple(range(MODES))
    rng = np.random.default_rng(5)
    c = _centres()
    tr = Tracker(real=_draw(rng, 1200, range(MODES), c), config=FAST)
    seen = []
    for i in range(4):
        seen.append(tr.update(i, features=_draw(rng, 600, all_modes, c))["alerts"])
    got = tr.update(4, features=_draw(rng, 600, (0, 1), c))
    assert any(a["kind"] == "onset" for a in got["alerts"])
    again = tr.update(5, features=_draw(rng, 600, (0, 1), c))
    assert not any(a["kind"] == "onset" for a in again["alerts"])  # the same onset is not announced twice
    from collapse_audit.errors import UsageError

    with pytest.raises(UsageError, match="does not come after"):
        tr.update(5, features=_draw(rng, 600, all_modes, c))


# --------------------------------------------------------------------------- the command


def _write_run(tmp_path, schedule, seed=0):
    rng = np.random.default_rng(seed)
    c = _centres()
    real = tmp_path / "real.npz"
    save_features(real, FeatureSet(features=_draw(rng, 1200, range(MODES), c), paths=[f"r{i}.png" for i in range(1200)],
                                   embedder_id="synthetic"))
    run = tmp_path / "run"
    run.mkdir()
    arrays = []
    for i, modes in enumerate(schedule):
        x = _draw(rng, 600, modes, c)
        arrays.append(x)
        save_features(run / f"step_{(i + 1) * 100:06d}.npz",
                      FeatureSet(features=x, paths=[f"g{j}.png" for j in range(600)], embedder_id="synthetic"))
    return real, run, arrays


def test_cli_track_on_npz_checkpoints_gate_and_loop_equality(tmp_path, run_cli):
    all_modes = tuple(range(MODES))
    real, run, arrays = _write_run(tmp_path, [all_modes] * 4 + [(0, 1, 2)] * 2)
    out = tmp_path / "out"
    args = ["track", run, "--real", real, "--out", out, "--clusters", MODES, "--bootstrap", 0, "--kid-subsets", 5,
            "--kid-subset-size", 200]
    code, so, se = run_cli(*args, "--fail-on", "onset_detected>0")
    assert code == 1, se
    assert "GATE FAILED" in se and "onset" in so
    d = json.loads((out / "track.json").read_text())
    jsonschema.validate(d, track_schema())
    assert d["run"]["onset"]["step"] in (500, 600)
    assert d["gate"]["passed"] is False
    # the same numbers from Tracker.update in a loop
    from collapse_audit.features import load_features

    tr = Tracker(real=load_features(real), config=FAST)
    for i, x in enumerate(arrays):
        tr.update((i + 1) * 100, features=x)
    loop = tr.to_dict()
    for a, b in zip(loop["checkpoints"], d["checkpoints"]):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-9, abs=1e-12)
        assert a["clusters"]["n_gen"] == b["clusters"]["n_gen"]
    assert loop["run"]["onset"]["step"] == d["run"]["onset"]["step"]
    # a healthy run passes the same gate
    real2, run2, _ = _write_run(tmp_path / "h", [all_modes] * 4, seed=1)
    code, so, se = run_cli("track", run2, "--real", real2, "--out", tmp_path / "out2", "--clusters", MODES,
                           "--bootstrap", 0, "--kid-subsets", 5, "--fail-on", "onset_detected>0", "--fail-on", "final_coverage<0.5")
    assert code == 0, se
    assert "gate passed" in so


def test_cli_track_bad_rule_exits_2_before_work(tmp_path, run_cli, monkeypatch):
    import collapse_audit.track as T

    def boom(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(T, "track_run", boom)
    code, so, se = run_cli("track", tmp_path, "--real", tmp_path, "--fail-on", "onset_detectd>0")
    assert code == 2
    assert "onset_detected" in se and len(se.strip().splitlines()) == 1
    code, so, se = run_cli("track", tmp_path / "nope", "--real", tmp_path)
    assert code == 2 and "no such file" in se


class _TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.fc = torch.nn.Linear(6, 8)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def test_cli_track_folders_reembeds_only_the_new_checkpoint(tmp_path, run_cli, monkeypatch):
    torch.manual_seed(0)
    m = torch.jit.script(_TinyNet().eval())
    model = tmp_path / "tiny.pt"
    m.save(str(model), _extra_files={"collapse_audit.json": json.dumps({"input_size": [16, 16], "dim": 8})})
    write_images(tmp_path / "real", 60, size=(24, 24), seed=1)
    run = tmp_path / "run"
    for i in range(2):
        write_images(run / f"step_{i}", 30, size=(24, 24), seed=10 + i)
    import collapse_audit.embedding as E

    computed = []
    real_embed_cached = E.embed_cached

    def spy(*a, **k):
        res = real_embed_cached(*a, **k)
        computed.append(res.stats["n_computed"])
        return res

    monkeypatch.setattr(E, "embed_cached", spy)
    args = ["track", run, "--real", tmp_path / "real", "--out", tmp_path / "out", "--embedder", f"torchscript:{model}",
            "--bootstrap", 0, "--kid-subsets", 5, "--device", "cpu"]
    code, so, se = run_cli(*args)
    assert code == 0, se
    assert computed == [60, 30, 30]
    write_images(run / "step_2", 30, size=(24, 24), seed=12)
    computed.clear()
    code, so, se = run_cli(*args)
    assert code == 0, se
    assert computed == [0, 0, 0, 30]  # real and the two old checkpoints from the cache
    d = json.loads((tmp_path / "out" / "track.json").read_text())
    assert [c["step"] for c in d["checkpoints"]] == [0, 1, 2]
    assert d["checkpoints"][0]["samples"]  # flipbook images come from the folder


def test_coverage_standard_error_matches_the_spread_over_fresh_draws():
    """The onset test's coverage SE (resampling the generated set) against coverage's SD over fresh draws."""
    rng = np.random.default_rng(11)
    c = _centres()
    tr = Tracker(real=_draw(rng, 800, range(MODES), c), config=FAST)
    cov, se = [], []
    for i in range(40):
        rec = tr.update(i, features=_draw(rng, 400, range(MODES), c))["checkpoint"]
        cov.append(rec["metrics"]["coverage"])
        se.append(rec["se"]["coverage"])
    sd, mean_se = float(np.std(cov, ddof=1)), float(np.mean(se))
    print(f"coverage SD over 40 fresh draws {sd:.4f}, mean resampling SE {mean_se:.4f}")
    # the SD of 40 draws is itself uncertain by about 11 % (1/sqrt(2*39)); the binomial SE is ~0.70 of it
    assert 0.8 * sd <= mean_se <= 1.45 * sd


def test_follow_audits_each_new_checkpoint_once_complete(tmp_path):
    """--follow: a checkpoint is taken once unchanged over one poll; a new one appearing later is added; idle stops it."""
    from collapse_audit.track import follow_run

    all_modes = tuple(range(MODES))
    real, run, arrays = _write_run(tmp_path, [all_modes] * 3)
    late = run / "step_000300.npz"
    held = tmp_path / "held.npz"
    late.rename(held)  # written by "training" after the first poll
    now = [0.0]
    polls = []

    def sleep(s):
        polls.append(sorted(p.name for p in run.iterdir()))
        if len(polls) == 2:
            held.rename(late)
        now[0] += s

    written = []
    tr = follow_run(run, real, FAST, poll_s=10.0, idle_s=35.0, sleep=sleep, clock=lambda: now[0],
                    write=lambda t: written.append(len(t.checkpoints)))
    assert [c["step"] for c in tr.checkpoints] == [100, 200, 300]
    assert written == [1, 2, 3]  # outputs rewritten after every audited checkpoint
    # 100 and 200 are taken at the second poll (unchanged since the first), 300 two polls after it appeared
    assert now[0] >= 35.0


def test_duplicate_fraction_is_judged_on_the_scans_calibrated_scale():
    # real rows far closer together than the fixed 0.05 cosine default (a domain embedder): with the default, every
    # generated sample would be a "duplicate"; the scan lowers the threshold to a quantile of real NN distances
    from collapse_audit.analysis.duplicates import DEFAULT_DUP_THRESHOLD, find_duplicates

    rng = np.random.default_rng(5)
    base = np.full(D, 10.0)
    real = (base + 0.3 * rng.standard_normal((800, D))).astype(np.float32)
    gen = (base + 0.3 * rng.standard_normal((400, D))).astype(np.float32)
    gen[:40] = gen[40:80] + 1e-4  # 80 samples in 40 near-identical pairs
    tr = Tracker(real=real, config=FAST)
    tr.update(1, features=gen)
    got = tr.checkpoints[0]["metrics"]["duplicate_fraction"]
    scan = find_duplicates(gen, real, gen_paths=[str(i) for i in range(400)], real_paths=[str(i) for i in range(800)])
    assert scan["within_gen"]["threshold"] < DEFAULT_DUP_THRESHOLD
    assert got == pytest.approx(scan["within_gen"]["dup_fraction"])
    assert 0.2 <= got <= 0.3  # the 80 planted ones, and not everything
    fixed = find_duplicates(gen, None, gen_paths=[str(i) for i in range(400)])["within_gen"]["dup_fraction"]
    assert fixed > 0.9  # what the uncalibrated default would have said
    assert tr.to_dict()["config"]["dup_threshold_method"] == "calibrated"
