"""The run statistics of ``collapse-audit track`` (:mod:`collapse_audit.trackstats`).

Every expected value comes from a closed form or from the construction of the
input (which clusters were emptied when, which values were planted), never
from the code under test. The simulations draw generated cluster counts
multinomially from the real shares and coverage/recall as binomial
proportions of ``n = 2000`` with ``se = sqrt(v (1 - v) / n)``.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from collapse_audit.trackstats import (
    ONSET_METRICS,
    analyse_run,
    best_checkpoint,
    cluster_test_level,
    covered_matrix,
    detect_onset,
    metric_test_level,
    mode_hopping,
    never_learned,
    onset_level,
    tail_loss,
)

ALPHA = 0.05
N_METRIC = 2000  # samples behind coverage / recall
N_GEN = 1000
REAL = np.array([320, 280, 250, 230, 210, 190, 170, 150, 110, 90])  # K = 10, N_real = 2000
SHARE = REAL / REAL.sum()
COLLAPSED = [0, 3, 5, 8]  # the modes a collapse empties


def _sim(seed: int, T: int, k: int | None = None, metrics_on: bool = True) -> dict:
    """Per-checkpoint inputs of a simulated run; from checkpoint ``k`` on, 4 modes vanish and coverage falls to 0.6."""
    rng = np.random.default_rng(seed)
    cov, rec = np.empty(T), np.empty(T)
    counts = np.empty((T, REAL.size), dtype=np.int64)
    for t in range(T):
        collapsed = k is not None and t >= k
        p = SHARE.copy()
        if collapsed:
            p[COLLAPSED] = 0.0
            p /= p.sum()
        counts[t] = rng.multinomial(N_GEN, p)
        cov[t] = rng.binomial(N_METRIC, 0.6 if collapsed else 0.9) / N_METRIC
        rec[t] = rng.binomial(N_METRIC, 0.9) / N_METRIC
    se = {"coverage": np.sqrt(cov * (1 - cov) / N_METRIC), "recall": np.sqrt(rec * (1 - rec) / N_METRIC),
          "precision": np.full(T, 0.01)}
    metrics = {"coverage": cov, "recall": rec, "precision": np.full(T, 0.8), "fid": np.linspace(30, 10, T)}
    if not metrics_on:
        metrics = {m: np.full(T, np.nan) for m in metrics}
    return {"steps": [100 * (t + 1) for t in range(T)], "names": [f"step_{100 * (t + 1):06d}" for t in range(T)],
            "metrics": metrics, "se": se, "cluster_counts": counts, "real_counts": REAL}


def _prefix(inp: dict, t: int) -> dict:
    return {"steps": inp["steps"][:t], "names": inp["names"][:t],
            "metrics": {m: v[:t] for m, v in inp["metrics"].items()}, "se": {m: v[:t] for m, v in inp["se"].items()},
            "cluster_counts": inp["cluster_counts"][:t], "real_counts": inp["real_counts"]}


def _counts_with(real, dropped_per_t, n_gen: int = N_GEN) -> np.ndarray:
    """(T, K) counts proportional to the real counts, with the listed clusters at zero (deterministic rounding)."""
    real = np.asarray(real, dtype=np.float64)
    out = []
    for dropped in dropped_per_t:
        w = real.copy()
        w[list(dropped)] = 0.0
        w /= w.sum()
        c = np.floor(w * n_gen).astype(np.int64)
        c[int(np.argmax(w))] += n_gen - int(c.sum())
        out.append(c)
    return np.array(out)


def _flat(T: int, value: float = 0.9) -> dict:
    return {"coverage": np.full(T, value), "recall": np.full(T, value), "precision": np.full(T, 0.8),
            "fid": np.full(T, 10.0)}


def _flat_se(T: int, value: float = 0.005) -> dict:
    return {"coverage": np.full(T, value), "recall": np.full(T, value)}


# --------------------------------------------------------------------------- levels
def test_the_false_alarm_budget_sums_to_alpha_over_a_thousand_checkpoints():
    """Union bound: t x M metric tests and K cluster tests per checkpoint, summed over t = 1..999, stay <= alpha.

    Closed form: sum_{t=1}^{T-1} 2 (alpha/2) / (t (t+1)) = alpha (1 - 1/T) (telescoping).
    """
    T, K, M = 1000, 37, len(ONSET_METRICS)
    total = sum(t * M * metric_test_level(t, ALPHA, M) + K * cluster_test_level(t, ALPHA, K) for t in range(1, T))
    assert total == pytest.approx(ALPHA * (1 - 1 / T), rel=1e-12)
    assert total <= ALPHA
    assert onset_level(0, ALPHA) == 0.0  # nothing is tested at the first checkpoint
    assert onset_level(1, ALPHA) == pytest.approx(ALPHA / 4)  # (alpha/2) / (1*2)
    assert metric_test_level(3, ALPHA) == pytest.approx((ALPHA / 2) / 12 / 3)  # alpha_3 / (3 refs x 1 metric: coverage)


# --------------------------------------------------------------------------- onset
def test_metric_reason_is_the_closed_form_z_test_against_the_best_earlier_checkpoint():
    T = 3
    metrics = _flat(T)
    metrics["coverage"] = np.array([0.90, 0.92, 0.85])
    se = _flat_se(T, 0.005)
    counts = _counts_with(REAL, [[]] * T)
    onset = detect_onset(steps=[10, 20, 30], names=["a", "b", "c"], metrics=metrics, se=se, cluster_counts=counts,
                         real_counts=REAL, alpha=ALPHA)
    assert onset["checkpoint"] == 2 and onset["step"] == 30 and onset["name"] == "c"
    (r,) = onset["reasons"]  # recall is flat and no cluster moved
    z = 0.07 / math.sqrt(2 * 0.005 ** 2)
    assert r["kind"] == "metric" and r["metric"] == "coverage"
    assert r["reference_checkpoint"] == 1 and r["reference_step"] == 20  # argmax of the earlier values, not the first
    assert r["value"] == pytest.approx(0.85) and r["reference_value"] == pytest.approx(0.92)
    assert r["drop"] == pytest.approx(0.07)
    assert r["z"] == pytest.approx(z)
    assert r["p"] == pytest.approx(0.5 * math.erfc(z / math.sqrt(2)), rel=1e-6)
    assert r["level"] == pytest.approx((ALPHA / 2) / (2 * 3) / 2)  # alpha_2 / (2 refs x 1 metric)


def test_a_drop_below_min_drop_never_fires_however_small_the_error():
    T = 4
    metrics = _flat(T)
    metrics["coverage"] = np.array([0.90, 0.90, 0.885, 0.885])  # 0.015 < min_drop = 0.02, z = 0.015 / 1.4e-4 > 100
    counts = _counts_with(REAL, [[]] * T)
    kw = dict(steps=[1, 2, 3, 4], names=list("abcd"), metrics=metrics, se=_flat_se(T, 1e-4), cluster_counts=counts,
              real_counts=REAL)
    assert detect_onset(**kw) is None
    assert detect_onset(**kw, min_drop=0.01)["checkpoint"] == 2


def test_cluster_reason_uses_the_level_of_its_checkpoint():
    """A small cluster (20 of 1820 real, 11 expected of 1000 generated) emptied: bin_test drops it, and the
    one-sided p of the pooled z-test, 4.3e-4, passes alpha_1/K = 1.25e-3 but not alpha_3/K = 2.1e-4."""
    real = np.array([200] * 9 + [20])
    n_real = int(real.sum())
    counts_drop = _counts_with(real, [[9]])[0]
    # the one-sided p-value by hand: pooled two-proportion z-test of 0/1000 against 20/1820
    pool = 20 / (N_GEN + n_real)
    z = (0 - 20 / n_real) / math.sqrt(pool * (1 - pool) * (1 / N_GEN + 1 / n_real))
    p = 0.5 * math.erfc(-z / math.sqrt(2))
    lvl1, lvl3 = (ALPHA / 2) / 2 / 10, (ALPHA / 2) / 12 / 10
    assert lvl3 < p < lvl1  # the construction sits between the two levels

    def run(t_drop):
        counts = _counts_with(real, [[]] * t_drop + [[9]])
        assert (counts[-1] == counts_drop).all()
        T = t_drop + 1
        return analyse_run(steps=list(range(T)), names=[str(t) for t in range(T)], metrics=_flat(T),
                           se=_flat_se(T), cluster_counts=counts, real_counts=real, alpha=ALPHA)

    early = run(1)
    assert early["onset"]["checkpoint"] == 1
    assert early["onset"]["reasons"] == [{"kind": "clusters", "clusters": [9], "level": pytest.approx(lvl1)}]
    late = run(3)
    assert late["onset"] is None
    assert not covered_matrix(_counts_with(real, [[9]]), real, ALPHA)[0, 9]  # yet the NDB rule drops it at t = 3


def test_synthetic_collapse_is_found_at_the_injected_checkpoint():
    """K = 10 modes, T = 12, collapse at k = 6 (4 modes emptied, coverage 0.9 -> 0.6), 200 seeds.

    The coverage drop is ~23 standard errors, so every run without an earlier false alarm finds it at k.
    Before k the run is healthy and the false-alarm budget alpha = 0.05 allows alarms there: the count of
    runs alarmed before k must stay within the 99.9 % quantile of Binomial(200, alpha), i.e. <= 22.
    """
    k, T, n = 6, 12, 200
    onsets = [analyse_run(**_sim(seed, T, k))["onset"] for seed in range(n)]
    at = np.array([o["checkpoint"] if o else -1 for o in onsets])
    early = int((at >= 0).sum() - (at >= k).sum())
    on_time = int(((at == k) | (at == k + 1)).sum())
    print(f"\ncollapse at k={k}: {on_time}/{n} runs report k or k+1, {early}/{n} alarm before k, "
          f"{int(((at > k + 1) | (at < 0)).sum())} late or missed")
    assert early <= 22
    assert on_time == n - early  # no run is late and none misses it
    first = next(o for o in onsets if o is not None and o["checkpoint"] == k)
    kinds = {r["kind"] for r in first["reasons"]}
    assert kinds == {"metric", "clusters"}
    (cl,) = [r for r in first["reasons"] if r["kind"] == "clusters"]
    assert cl["clusters"] == COLLAPSED
    (m,) = [r for r in first["reasons"] if r["kind"] == "metric"]
    assert m["metric"] == "coverage" and m["drop"] > 0.25


def test_synthetic_collapse_through_the_clusters_alone_is_found_at_k_and_never_before():
    """With no metrics, only the cluster tests run; emptied modes (>= 81 expected) fire at k in every seed,
    and a healthy checkpoint cannot meet the drop condition gen_share <= 0.1 real_share (binomial count <= 8 of
    mean >= 81), so none fires before k."""
    k, T = 5, 12
    for seed in range(50):
        onset = analyse_run(**_sim(seed, T, k, metrics_on=False))["onset"]
        assert onset is not None and onset["checkpoint"] == k, seed
        assert onset["reasons"] == [{"kind": "clusters", "clusters": COLLAPSED, "level": pytest.approx(
            (ALPHA / 2) / (k * (k + 1)) / REAL.size)}]


@pytest.mark.parametrize("metrics_on", [True, False], ids=["metrics+clusters", "clusters-only"])
def test_healthy_runs_raise_no_alert(metrics_on):
    """20 healthy checkpoints (same distribution every time), 200 seeds: >= 95 % raise no alert at all."""
    n, T = 200, 20
    alarmed = [seed for seed in range(n) if analyse_run(**_sim(seed, T, None, metrics_on))["alerts"]]
    rate = len(alarmed) / n
    print(f"\nhealthy runs ({'metrics+clusters' if metrics_on else 'clusters only'}): "
          f"false-alarm rate {rate:.3f} ({len(alarmed)}/{n})")
    assert rate <= 0.05


def test_onset_does_not_depend_on_later_checkpoints():
    """Horizon-free: the first t checkpoints give the same onset as all T when onset < t, and none before it."""
    T, k = 12, 6
    checked = 0
    for seed in range(8):
        inp = _sim(seed, T, k)
        full = analyse_run(**inp)["onset"]
        assert full is not None
        for t in range(1, T + 1):
            part = analyse_run(**_prefix(inp, t))["onset"]
            if full["checkpoint"] < t:
                assert part == full, (seed, t)
                checked += 1
            else:
                assert part is None, (seed, t)
    assert checked >= 8 * (T - k - 1)


# --------------------------------------------------------------------------- hopping, never learned
def test_two_alternating_modes_hop_with_their_exact_switch_steps():
    T = 8
    A, B = 2, 5
    steps = [0, 50, 100, 400, 800, 1600, 3200, 6400]
    counts = _counts_with([200] * 10, [[A] if t % 2 == 0 else [B] for t in range(T)])
    cov = covered_matrix(counts, [200] * 10, ALPHA)
    expected_cov = np.ones((T, 10), dtype=bool)
    expected_cov[0::2, A] = False
    expected_cov[1::2, B] = False
    assert (cov == expected_cov).all()

    run = analyse_run(steps=steps, names=[f"c{t}" for t in range(T)], metrics=_flat(T), se=_flat_se(T),
                      cluster_counts=counts, real_counts=[200] * 10)
    hop = run["hopping"]
    assert [h["id"] for h in hop["clusters"]] == [A, B]
    for h in hop["clusters"]:
        assert h["n_switches"] == 7
        assert h["switch_checkpoints"] == [1, 2, 3, 4, 5, 6, 7]
        assert h["switch_steps"] == steps[1:]
        assert h["oscillation"] == pytest.approx(1.0)
        assert h["covered_fraction"] == pytest.approx(0.5)
    assert hop["run_oscillation"] == pytest.approx(2 / 10)
    assert hop["mean_snapshot_covered_fraction"] == pytest.approx(0.9)
    assert hop["union_covered_fraction"] == pytest.approx(1.0)
    assert hop["oscillating"] is False  # gap 0.1 < 0.2
    kinds = [a["kind"] for a in run["alerts"]]
    assert kinds.count("hopping") == 1 and "oscillating" not in kinds and "never_learned" not in kinds
    (alert,) = [a for a in run["alerts"] if a["kind"] == "hopping"]
    assert alert["severity"] == "warning" and "2, 5" in alert["message"] and "step 50" in alert["message"]
    assert "\n" not in alert["message"]
    # B is covered at 0 and emptied at 1: the clusters test fires there
    assert run["onset"]["checkpoint"] == 1 and run["onset"]["reasons"][0]["clusters"] == [B]


def test_many_alternating_modes_make_the_run_oscillate():
    """Clusters 0-4 dropped at even checkpoints, 5-9 at odd ones: each snapshot covers half, the union all."""
    T = 8
    counts = _counts_with([200] * 10, [list(range(5)) if t % 2 == 0 else list(range(5, 10)) for t in range(T)])
    run = analyse_run(steps=list(range(T)), names=[str(t) for t in range(T)], metrics=_flat(T), se=_flat_se(T),
                      cluster_counts=counts, real_counts=[200] * 10)
    hop = run["hopping"]
    assert [h["id"] for h in hop["clusters"]] == list(range(10))
    assert hop["mean_snapshot_covered_fraction"] == pytest.approx(0.5)
    assert hop["union_covered_fraction"] == pytest.approx(1.0)
    assert hop["run_oscillation"] == pytest.approx(1.0)
    assert hop["oscillating"] is True
    assert [a["kind"] for a in run["alerts"] if a["severity"] == "warning"] == ["hopping", "oscillating"]
    assert run["never_learned"] == []


def test_mode_hopping_on_a_covered_matrix():
    cov = np.array([[1, 1, 0], [0, 1, 0], [1, 1, 0], [1, 0, 0]], dtype=bool)  # cluster 0 leaves and returns
    hop = mode_hopping(cov, [5, 6, 7, 8])
    assert hop["clusters"] == [{"id": 0, "n_switches": 2, "switch_steps": [6, 7], "switch_checkpoints": [1, 2],
                                "oscillation": pytest.approx(2 / 3), "covered_fraction": pytest.approx(0.75)}]
    assert hop["run_oscillation"] == pytest.approx((2 / 3 + 1 / 3 + 0) / 3)
    assert hop["mean_snapshot_covered_fraction"] == pytest.approx(6 / 12)
    assert hop["union_covered_fraction"] == pytest.approx(2 / 3)
    assert hop["oscillating"] is False  # one hopping cluster only
    assert never_learned(cov) == [2]


def test_never_learned_clusters_are_dropped_at_every_checkpoint():
    T = 5
    dropped = [[7, 8]] * (T - 1) + [[7]]  # 8 is learned at the very end, 7 never
    counts = _counts_with(REAL, dropped)
    run = analyse_run(steps=list(range(T)), names=[str(t) for t in range(T)], metrics=_flat(T), se=_flat_se(T),
                      cluster_counts=counts, real_counts=REAL)
    assert run["never_learned"] == [7]
    (a,) = [a for a in run["alerts"] if a["kind"] == "never_learned"]
    assert a["severity"] == "warning" and a["message"].endswith(": 7") and "steps 0-4" in a["message"]
    assert run["final"]["n_covered"] == 9
    assert never_learned(np.zeros((1, 3), dtype=bool)) == [0, 1, 2]  # one checkpoint is enough


# --------------------------------------------------------------------------- best checkpoint
def test_best_checkpoint_is_the_widest_coverage_among_the_most_precise():
    steps, names = [1, 2, 3, 4, 5], list("abcde")
    precision = [0.70, 0.80, 0.795, 0.60, 0.81]
    coverage = [0.90, 0.50, 0.70, 0.95, 0.60]
    # with se 0.01 the candidates are b (0.8196), c (0.8146), e (0.81) >= 0.81; c has the most coverage
    best = best_checkpoint(steps=steps, names=names, precision=precision, coverage=coverage, precision_se=[0.01] * 5)
    assert (best["checkpoint"], best["step"], best["name"]) == (2, 3, "c")
    assert "coverage" in best["criterion"] and "precision" in best["criterion"]
    # without standard errors only the most precise one qualifies
    assert best_checkpoint(steps=steps, names=names, precision=precision, coverage=coverage)["checkpoint"] == 4
    # ties in coverage go to the earliest
    tied = best_checkpoint(steps=steps, names=names, precision=[0.8] * 5, coverage=[0.5, 0.7, 0.6, 0.7, 0.7])
    assert tied["checkpoint"] == 1
    # through analyse_run, with the precision se taken from ``se``
    T = 5
    run = analyse_run(steps=steps, names=names, metrics={"precision": precision, "coverage": coverage,
                                                        "recall": [0.9] * 5, "fid": [1.0] * 5},
                      se={"precision": [0.01] * 5}, cluster_counts=_counts_with(REAL, [[]] * T), real_counts=REAL)
    assert run["best_checkpoint"]["checkpoint"] == 2
    assert best_checkpoint(steps=[1, 2], names=["a", "b"], precision=[0.8, 0.9], coverage=[np.nan, np.nan]) is None


# --------------------------------------------------------------------------- tail loss
REAL_TAIL = np.array([300, 40, 550, 80, 200, 60, 420, 350])  # rarest: id 1, then 5, then 3


def _generations(lost_at: dict[int, int], T: int = 6) -> dict:
    dropped = [[b for b, g in lost_at.items() if t >= g] for t in range(T)]
    return {"steps": list(range(T)), "names": [f"gen{t}" for t in range(T)], "metrics": _flat(T), "se": _flat_se(T),
            "cluster_counts": _counts_with(REAL_TAIL, dropped), "real_counts": REAL_TAIL, "order": "generation"}


def test_tail_loss_rarest_first():
    run = analyse_run(**_generations({1: 2, 5: 3, 3: 4}))
    tl = run["tail_loss"]
    share = REAL_TAIL / REAL_TAIL.sum()
    assert tl["lost"] == [
        {"id": 1, "real_share": pytest.approx(share[1]), "rarity_rank": 0, "lost_at_checkpoint": 2, "lost_at_step": 2},
        {"id": 3, "real_share": pytest.approx(share[3]), "rarity_rank": 2, "lost_at_checkpoint": 4, "lost_at_step": 4},
        {"id": 5, "real_share": pytest.approx(share[5]), "rarity_rank": 1, "lost_at_checkpoint": 3, "lost_at_step": 3},
    ]
    # exact one-sided Mann-Whitney: the 3 lost are the 3 smallest of 8, P(U <= 0) = 1 / C(8, 3)
    assert tl["p"] == pytest.approx(1 / math.comb(8, 3))
    assert tl["rarest_first"] is True
    assert "U = 0" in tl["statistic"]
    (a,) = [a for a in run["alerts"] if a["kind"] == "tail_loss"]
    assert a["severity"] == "error" and "2, 3, 4" in a["message"]


def test_tail_loss_of_common_clusters_is_not_rarest_first():
    run = analyse_run(**_generations({2: 2, 6: 3, 7: 4}))
    tl = run["tail_loss"]
    assert [x["id"] for x in tl["lost"]] == [2, 6, 7]
    assert [x["rarity_rank"] for x in tl["lost"]] == [7, 6, 5]
    assert tl["p"] == pytest.approx(1.0)  # U = 15 = n_lost * n_kept, the largest possible
    assert tl["rarest_first"] is False
    assert "tail_loss" not in [a["kind"] for a in run["alerts"]]


def test_tail_loss_needs_a_loss_for_good_and_something_kept():
    # dropped then back: not lost; nothing lost -> no test
    cov = np.ones((4, 3), dtype=bool)
    cov[1:3, 0] = False
    tl = tail_loss(cov, [0.2, 0.3, 0.5], [0, 1, 2, 3])
    assert tl["lost"] == [] and tl["p"] is None and tl["rarest_first"] is False
    # never covered: never learned, not lost
    cov = np.ones((3, 3), dtype=bool)
    cov[:, 2] = False
    assert tail_loss(cov, [0.2, 0.3, 0.5], [0, 1, 2])["lost"] == []
    # order="step" has no tail-loss section
    inp = _generations({1: 2})
    inp["order"] = "step"
    assert analyse_run(**inp)["tail_loss"] is None


# --------------------------------------------------------------------------- the section as a whole
def _plain(x) -> bool:
    if x is None or isinstance(x, (bool, int, str)):
        return True
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, list):
        return all(_plain(v) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in x.items())
    return False


def test_run_section_is_json_with_no_nan_and_the_spec_keys():
    inp = _sim(3, 12, 6)
    inp["metrics"]["fid"][-1] = np.nan
    inp["metrics"]["recall"][4] = np.nan
    del inp["se"]["precision"]
    inp["order"] = "generation"
    run = analyse_run(**inp)
    text = json.dumps(run, allow_nan=False)
    assert json.loads(text) == run
    assert _plain(run)
    assert set(run) == {"n_checkpoints", "alpha", "onset", "onset_basis", "hopping", "never_learned",
                        "best_checkpoint", "final", "tail_loss", "alerts"}
    assert run["final"]["fid"] is None and run["final"]["coverage"] == pytest.approx(inp["metrics"]["coverage"][-1])
    assert set(run["hopping"]) == {"clusters", "run_oscillation", "mean_snapshot_covered_fraction",
                                   "union_covered_fraction", "oscillating", "basis"}
    for a in run["alerts"]:
        assert set(a) == {"kind", "checkpoint", "step", "severity", "message"}
        assert "\n" not in a["message"] and "step" in a["message"]
    onset = [a for a in run["alerts"] if a["kind"] == "onset"]
    assert onset and onset[0]["severity"] == "error" and onset[0]["step"] == run["onset"]["step"]


def test_bad_inputs_are_refused():
    inp = _sim(0, 4)
    with pytest.raises(ValueError, match="strictly increasing"):
        analyse_run(**{**inp, "steps": [1, 2, 2, 3]})
    with pytest.raises(ValueError, match="order"):
        analyse_run(**inp, order="epoch")
    with pytest.raises(ValueError, match="alpha"):
        analyse_run(**inp, alpha=1.5)


# --------------------------------------------------------------------------- recovery after an onset (added with onset_persists)
def test_onset_recovery_is_reported_after_the_fact_and_never_moves_the_onset():
    from collapse_audit.trackstats import detect_onset

    real = np.array([200, 200, 200, 200])
    base = np.array([150, 150, 150, 150])
    gone = np.array([200, 200, 200, 0])  # cluster 3 dropped
    steps = [10, 20, 30, 40, 50]

    def onset(rows):
        T = len(rows)
        nan = np.full(T, np.nan)
        return detect_onset(steps=steps[:T], names=[str(s) for s in steps[:T]], metrics={"coverage": nan},
                            se={"coverage": nan}, cluster_counts=np.array(rows), real_counts=real)

    transient = onset([base, gone, base, base, base])
    assert transient["step"] == 20 and transient["recovered_step"] == 30 and transient["persists"] is False
    back_and_gone = onset([base, gone, base, gone, base])  # back for good only from the last checkpoint
    assert back_and_gone["step"] == 20 and back_and_gone["recovered_step"] == 50
    persistent = onset([base, gone, base, gone, gone])
    assert persistent["step"] == 20 and persistent["recovered_step"] is None and persistent["persists"] is True
    prefix = onset([base, gone])  # nothing after the onset yet: not recovered
    assert prefix["step"] == 20 and prefix["persists"] is True
