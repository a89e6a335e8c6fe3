"""Classes over a tracked run, tail loss end to end, and the checks on what a checkpoint is made of.

- :func:`trackstats.class_summary` on hand-made counts (expected values by hand);
- a Tracker fed labelled features where one class disappears: lost since the
  right step, an alert, the ``final_dropped_classes`` gate;
- ``track --classifier --labels folders`` on image folders with a random-weight
  TorchScript classifier saved and loaded through the real loading code; its
  per-checkpoint class counts equal a direct forward pass (PIL resize, torch),
  written independently of the package;
- tail loss over generations through the Tracker (rarest clusters lost first,
  and its control: the commonest lost first);
- a checkpoint from another embedder, and a class rule without labels: exit 2
  before any work, one line.
"""
from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest
import torch

from collapse_audit import TrackConfig, Tracker
from collapse_audit import gate as G
from collapse_audit.features import FeatureSet, save_features
from collapse_audit.track import track_schema
from collapse_audit.trackstats import class_summary

from conftest import write_images
from test_demo import TinyClassifier, TinyEmbedder, _direct_argmax, _save

FAST = dict(bootstrap=0, kid_subsets=5, kid_subset_size=200)


# --------------------------------------------------------------------------- class_summary
def test_class_summary_lost_never_learned_and_hopping():
    real = np.array([100, 100, 100, 100])
    names = ["a", "b", "c", "d"]
    # a: always there; b: there, then gone from step 300 on; c: never; d: gone at 200, back at 300, gone at 400
    counts = np.array([
        [100, 100, 0, 100],
        [100, 100, 0, 0],
        [100, 0, 0, 100],
        [100, 0, 0, 0],
    ])
    s = class_summary(counts, real, names, [100, 200, 300, 400])
    assert s["dropped_final"] == ["b", "c", "d"] and s["n_dropped_final"] == 3
    assert s["never_learned"] == ["c"]
    assert {x["name"]: (x["last_covered_step"], x["dropped_since_step"]) for x in s["lost"]} == {"b": (200, 300), "d": (300, 400)}
    assert [(h["name"], h["switch_steps"]) for h in s["hopping"]] == [("d", [200, 300, 400])]
    with pytest.raises(ValueError):
        class_summary(counts, real, names[:3], [100, 200, 300, 400])


# --------------------------------------------------------------------------- labelled features
def _mixture(rng, n, modes, centres):
    m = np.asarray(modes)[rng.integers(0, len(modes), n)]
    return (centres[m] + rng.standard_normal((n, centres.shape[1]))).astype(np.float32), [f"m{i}" for i in m]


def test_tracker_reports_a_class_lost_at_its_step_and_the_gate_fails(tmp_path):
    rng = np.random.default_rng(3)
    centres = rng.normal(0, 6.0, size=(4, 8))
    xr, yr = _mixture(rng, 800, range(4), centres)
    tr = Tracker(real=FeatureSet(features=xr, paths=[f"r{i}" for i in range(800)], labels=yr),
                 config=TrackConfig(clusters=4, **FAST))
    alerts = []
    for i, modes in enumerate([(0, 1, 2, 3), (0, 1, 2, 3), (0, 1, 2), (0, 1, 2)]):
        x, y = _mixture(rng, 400, modes, centres)
        alerts += tr.update((i + 1) * 10, features=x, labels=y)["alerts"]
    d = tr.to_dict()
    jsonschema.validate(d, track_schema())
    c = d["run"]["classes"]
    assert c["dropped_final"] == ["m3"]
    assert c["lost"] == [{"name": "m3", "dropped_since_step": 30, "last_covered_step": 20}]
    assert c["never_learned"] == []
    assert d["labels"]["real"] == "features" and d["labels"]["names"] == ["m0", "m1", "m2", "m3"]
    assert [cp["classes"]["n_gen"][3] for cp in d["checkpoints"]][2:] == [0, 0]
    lost_alerts = [a for a in alerts if a["kind"] == "class_lost"]
    assert len(lost_alerts) == 1 and "class m3 is dropped since step 30" in lost_alerts[0]["message"]  # printed once
    g = tr.check([G.parse_rule("final_dropped_classes>0", aliases=G.TRACK_ALIASES)])
    assert not g.passed
    assert tr.check([G.parse_rule("never_learned_classes>0", aliases=G.TRACK_ALIASES)]).passed
    # every track alias names a number of this track.json
    vals = {a: G.resolve(d, G.parse_rule(f"{a}>0", aliases=G.TRACK_ALIASES)) for a in G.TRACK_ALIASES}
    assert all(v is not None for v in vals.values()), vals
    assert vals["onset_detected"] == 1 and vals["onset_persists"] == 1  # mode 3 never comes back
    assert vals["final_dropped_classes"] == 1 and vals["never_learned_classes"] == 0 and vals["tail_loss"] == 0


def test_unlabelled_run_has_no_class_section():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6.0, size=(4, 8))
    tr = Tracker(real=_mixture(rng, 400, range(4), centres)[0], config=TrackConfig(clusters=4, **FAST))
    tr.update(1, features=_mixture(rng, 300, range(4), centres)[0])
    d = tr.to_dict()
    assert d["labels"] is None and d["run"]["classes"] is None
    jsonschema.validate(d, track_schema())


# --------------------------------------------------------------------------- the classifier on folders
def test_cli_track_classifier_counts_equal_a_direct_forward_pass(tmp_path, run_cli):
    names = ["cats", "dogs", "fish"]
    meta = {"input_size": [16, 16], "mean": [0.5], "std": [0.25]}
    torch.manual_seed(0)
    cls = _save(TinyClassifier(len(names)), tmp_path / "cls.pt", {**meta, "class_names": names})
    _save(TinyEmbedder(), tmp_path / "emb.pt", meta)
    real = tmp_path / "real"
    real_files = []
    for j, n in enumerate(names):
        real_files += write_images(real / n, 12, size=(24, 24), seed=j + 1)
    run = tmp_path / "run"
    ck_files = [write_images(run / f"step_{s}", 20, size=(24, 24), seed=10 + s) for s in (100, 200)]
    out = tmp_path / "out"
    code, so, se = run_cli("track", run, "--real", real, "--embedder", f"torchscript:{tmp_path / 'emb.pt'}",
                           "--classifier", tmp_path / "cls.pt", "--labels", "folders", "--out", out,
                           "--clusters", 3, "--bootstrap", 0, "--kid-subsets", 5, "--device", "cpu")
    assert code == 0, se
    d = json.loads((out / "track.json").read_text())
    jsonschema.validate(d, track_schema())
    assert d["labels"]["real"] == "folders" and d["labels"]["gen"] == "classifier"
    for cp, files in zip(d["checkpoints"], ck_files):
        want = np.bincount(_direct_argmax(cls, sorted(files), 16, 0.5, 0.25), minlength=3)
        assert cp["classes"]["names"] == names
        assert cp["classes"]["n_gen"] == want.tolist()
        assert cp["classes"]["real_share"] == pytest.approx([12 / 36] * 3)
    truth = np.repeat(np.arange(3), 12)
    pred = _direct_argmax(cls, real_files, 16, 0.5, 0.25)
    assert d["labels"]["classifier_agreement"] == pytest.approx(float((pred == truth).mean()))
    assert "classes dropped at the end" in so
    html = (out / "track.html").read_text()
    assert 'id="class-run"' in html and 'id="classes-table"' in html


def test_cli_track_class_rule_without_labels_and_foreign_embedder_exit_2(tmp_path, run_cli, monkeypatch):
    rng = np.random.default_rng(0)
    real = tmp_path / "real.npz"
    save_features(real, FeatureSet(features=rng.standard_normal((200, 8)).astype(np.float32),
                                   paths=[f"r{i}.png" for i in range(200)], embedder_id="emb-A"))
    run = tmp_path / "run"
    run.mkdir()
    for s, eid in ((1, "emb-A"), (2, "emb-B")):
        save_features(run / f"step_{s}.npz", FeatureSet(features=rng.standard_normal((100, 8)).astype(np.float32),
                                                        paths=[f"g{i}.png" for i in range(100)], embedder_id=eid))
    import collapse_audit.track as T

    calls = []
    real_track_run = T.track_run
    monkeypatch.setattr(T, "track_run", lambda *a, **k: calls.append(1) or real_track_run(*a, **k))
    code, so, se = run_cli("track", run, "--real", real, "--out", tmp_path / "o1", "--fail-on", "final_dropped_classes>0")
    assert code == 2 and "--labels folders or --classifier" in se and len(se.strip().splitlines()) == 1
    assert calls == []  # refused before any work
    code, so, se = run_cli("track", run, "--real", real, "--out", tmp_path / "o2", "--clusters", 4, "--bootstrap", 0,
                           "--kid-subsets", 5)
    assert code == 2 and "emb-B" in se and "emb-A" in se and "Traceback" not in se


# --------------------------------------------------------------------------- tail loss end to end
def _generations(lose_order, seed=0):
    """12 modes with real shares from 0.6 % to 20 %; generation g has lost the first 2g modes of ``lose_order``."""
    rng = np.random.default_rng(seed)
    K = 12
    centres = rng.normal(0, 8.0, size=(K, 16))
    w = np.geomspace(1, 30, K)
    w /= w.sum()
    n_real = 6000
    real = np.repeat(np.arange(K), np.round(w * n_real).astype(int))
    tr = Tracker(real=(centres[real] + rng.standard_normal((real.size, 16))).astype(np.float32),
                 config=TrackConfig(clusters=K, order="generation", **FAST))
    for g in range(4):
        keep = np.array([m for m in range(K) if m not in lose_order[: 2 * g]])
        p = w[keep] / w[keep].sum()
        m = rng.choice(keep, size=3000, p=p)
        tr.update(g, features=(centres[m] + rng.standard_normal((m.size, 16))).astype(np.float32))
    return tr.to_dict(), w


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tail_loss_rarest_first_through_the_tracker_and_its_control(seed):
    # k-means on the real set need not give one cluster per mode (the two rarest modes may share one), so the
    # lost clusters are checked by rank, not one by one
    d, w = _generations(lose_order=list(range(12)), seed=seed)  # mode 0 is the rarest
    tl = d["run"]["tail_loss"]
    assert tl["rarest_first"] is True and tl["p"] < 0.01
    ranks = sorted(x["rarity_rank"] for x in tl["lost"])
    assert 4 <= len(ranks) <= 7 and max(ranks) <= 6, ranks
    assert d["run"]["tail_loss_flag"] == 1
    assert any(a["kind"] == "tail_loss" for a in d["run"]["alerts"])
    jsonschema.validate(d, track_schema())
    d2, _ = _generations(lose_order=list(range(11, -1, -1)), seed=seed)  # the commonest first
    tl2 = d2["run"]["tail_loss"]
    assert tl2["rarest_first"] is False and d2["run"]["tail_loss_flag"] == 0
    assert not any(a["kind"] == "tail_loss" for a in d2["run"]["alerts"])
    ranks2 = sorted(x["rarity_rank"] for x in tl2["lost"])
    assert 4 <= len(ranks2) <= 7 and min(ranks2) >= 5, ranks2
