"""Issue 4 through the real `scan` command on feature files with planted structure:
dropped modes, dropped/thinned classes, skewed subgroups, duplicates and copies,
and the gate aliases that read them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from collapse_audit.features import FeatureSet, save_features

D = 32
N_MODES = 8


def _modes(rng):
    centers = rng.normal(size=(N_MODES, D))
    return centers / np.linalg.norm(centers, axis=1, keepdims=True) * 6


def _draw(rng, centers, counts):
    feats, labels = [], []
    for m, c in enumerate(counts):
        feats.append(centers[m] + rng.normal(scale=0.5, size=(c, D)))
        labels += [f"mode{m}"] * c
    return np.concatenate(feats).astype(np.float32), labels


def _save(path, feats, labels=None, prefix="x", shas=None):
    return save_features(path, FeatureSet(features=feats, paths=[f"{prefix}{i}.png" for i in range(len(feats))],
                                          embedder_id="planted", labels=labels, shas=shas))


def _scan(run_cli, tmp_path, gen, real, *extra, name="out"):
    out = tmp_path / name
    code, stdout, err = run_cli("scan", gen, "--real", real, "--out", out, "--kid-subsets", "10", "--kid-subset-size", "200",
                                "--no-report", *extra)
    res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return code, res, stdout, err


def test_dropped_modes_are_exactly_the_missing_ones_and_control_is_clean(tmp_path, run_cli):
    rng = np.random.default_rng(0)
    c = _modes(rng)
    real, real_lab = _draw(rng, c, [200] * N_MODES)
    gen, _ = _draw(rng, c, [0, 0] + [200] * (N_MODES - 2))
    healthy, _ = _draw(rng, c, [200] * N_MODES)
    rp = _save(tmp_path / "real.npz", real)
    code, res, stdout, err = _scan(run_cli, tmp_path, _save(tmp_path / "gen.npz", gen), rp, "--fail-on", "dropped_clusters>0")
    assert code == 1, err
    bins = {b["id"]: b for b in res["clusters"]["bins"]}
    # map each cluster to the mode of its real members via the exemplar paths (x{i}: i // 200 = mode)
    mode_of = {cid: int(np.bincount([int(p[1:-4]) // 200 for p in b["real_exemplars"]]).argmax()) for cid, b in bins.items()}
    # the default k (more bins than modes) splits modes rather than merging them: every bin of a
    # missing mode is dropped, and no bin of a present mode is
    assert res["clusters"]["k"] > N_MODES
    dropped_modes = {mode_of[cid] for cid in res["clusters"]["dropped"]}
    assert dropped_modes == {0, 1}
    assert all(bins[cid]["status"] == "dropped" for cid in bins if mode_of[cid] in (0, 1))
    assert "dropped_clusters" in err
    code, res, _, err = _scan(run_cli, tmp_path, _save(tmp_path / "healthy.npz", healthy), rp,
                              "--fail-on", "dropped_clusters>0", "--fail-on", "ndb>0.3", name="ctl")
    assert code == 0, err
    assert res["clusters"]["dropped"] == []


def test_removed_and_thinned_classes_with_known_and_predicted_gen_labels(tmp_path, run_cli):
    rng = np.random.default_rng(1)
    c = _modes(rng)
    real, real_lab = _draw(rng, c, [200] * N_MODES)
    gen, gen_lab = _draw(rng, c, [0, 50] + [200] * (N_MODES - 2))
    rp = _save(tmp_path / "real.npz", real, real_lab)
    # generated labels known (e.g. from a manifest or a conditional generator)
    code, res, _, err = _scan(run_cli, tmp_path, _save(tmp_path / "gen.npz", gen, gen_lab), rp, "--fail-on", "dropped_classes>0")
    assert code == 1, err
    cls = res["classes"]
    assert cls["dropped"] == ["mode0"]
    assert "mode1" in cls["under"]
    assert cls["max_gap"] == pytest.approx(1 / 8, abs=0.02)
    # generated labels unknown: predicted by the k-NN classifier in the same space, with its agreement reported
    code, res, _, err = _scan(run_cli, tmp_path, _save(tmp_path / "gen2.npz", gen), rp, name="o2")
    assert code == 0, err
    cls = res["classes"]
    assert cls["classifier"]["kind"] == "knn" and cls["classifier"]["agreement"] > 0.95
    assert cls["dropped"] == ["mode0"] and "mode1" in cls["under"]
    assert not (set(cls["dropped"]) | set(cls["under"])) - {"mode0", "mode1"}


def test_skewed_subgroup_is_flagged_and_balanced_control_is_not(tmp_path, run_cli):
    rng = np.random.default_rng(2)
    real = rng.normal(size=(600, D)).astype(np.float32)
    gen = rng.normal(size=(600, D)).astype(np.float32)
    rows = ["path,side,perceived_gender"]
    rows += [f"x{i}.png,real,{'woman' if i % 2 else 'man'}" for i in range(600)]
    rows += [f"x{i}.png,gen,{'woman' if i % 10 == 0 else 'man'}" for i in range(600)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    rp, gp = _save(tmp_path / "real.npz", real), _save(tmp_path / "gen.npz", gen)
    code, res, _, err = _scan(run_cli, tmp_path, gp, rp, "--manifest", tmp_path / "m.csv", "--fail-on", "max_subgroup_gap>0.2")
    assert code == 1, err
    attr = res["subgroups"]["attributes"][0]
    woman = next(g for g in attr["groups"] if g["name"] == "woman")
    assert woman["status"] == "under" and woman["diff_ci"][1] < 0
    assert attr["perceived"] is False
    rows = rows[:601] + [f"x{i}.png,gen,{'woman' if i % 2 else 'man'}" for i in range(600)]
    (tmp_path / "m2.csv").write_text("\n".join(rows) + "\n")
    code, res, _, err = _scan(run_cli, tmp_path, gp, rp, "--manifest", tmp_path / "m2.csv", "--fail-on", "max_subgroup_gap>0.2", name="c")
    assert code == 0, err
    woman = next(g for g in res["subgroups"]["attributes"][0]["groups"] if g["name"] == "woman")
    assert woman["status"] == "ok" and woman["diff_ci"][0] < 0 < woman["diff_ci"][1]


def test_planted_duplicates_and_copies_found_with_high_precision_and_recall(tmp_path, run_cli):
    rng = np.random.default_rng(3)
    real = rng.normal(size=(500, D)).astype(np.float32)
    gen = rng.normal(size=(400, D)).astype(np.float32)
    gen_shas = [f"g{i}" for i in range(400)]
    real_shas = [f"r{i}" for i in range(500)]
    dup_pairs = [(i, 200 + i) for i in range(20)]  # gen 200..219 near-duplicate gen 0..19
    for a, b in dup_pairs:
        gen[b] = gen[a] + rng.normal(scale=1e-3, size=D)
    copies = list(range(300, 320))  # gen 300..319 copy real 0..19 (half re-encoded, half byte-identical)
    for j, g in enumerate(copies):
        if j % 2:
            gen[g] = real[j]
            gen_shas[g] = real_shas[j]
        else:
            gen[g] = real[j] + rng.normal(scale=1e-3, size=D)
    rp = _save(tmp_path / "real.npz", real, shas=real_shas, prefix="r")
    gp = _save(tmp_path / "gen.npz", gen, shas=gen_shas, prefix="g")
    code, res, _, err = _scan(run_cli, tmp_path, gp, rp, "--fail-on", "memorized_fraction>0.01", "--fail-on", "dup_fraction>0.2")
    assert code == 1, err
    d = res["duplicates"]
    found_dups = {p for grp in d["within_gen"]["groups"] for p in grp["paths"]}
    planted_dups = {f"g{i}.png" for pair in dup_pairs for i in pair}
    tp = len(found_dups & planted_dups)
    assert tp / len(planted_dups) >= 0.9 and tp / max(1, len(found_dups)) >= 0.9
    found_copies = {p["gen_path"] for p in d["gen_vs_real"]["pairs"]}
    planted_copies = {f"g{i}.png" for i in copies}
    tp = len(found_copies & planted_copies)
    assert tp / len(planted_copies) >= 0.9 and tp / max(1, len(found_copies)) >= 0.9
    assert any(p["exact"] for p in d["gen_vs_real"]["pairs"])
    assert d["within_gen"]["dup_fraction"] == pytest.approx(40 / 400, abs=0.01)
    assert d["gen_vs_real"]["memorized_fraction"] == pytest.approx(20 / 400, abs=0.01)
    assert {v["name"] for v in res["gate"]["violations"]} == {"memorized_fraction"}


def test_unknown_intersect_attribute_and_classes_without_clip_are_usage_errors(tmp_path, run_cli):
    rng = np.random.default_rng(4)
    rp = _save(tmp_path / "r.npz", rng.normal(size=(50, 4)).astype(np.float32))
    gp = _save(tmp_path / "g.npz", rng.normal(size=(50, 4)).astype(np.float32))
    code, _, _, err = _scan(run_cli, tmp_path, gp, rp, "--classes", "cat,dog")
    assert code == 2 and "CLIP" in err and "Traceback" not in err
    code, _, _, err = _scan(run_cli, tmp_path, gp, rp, "--labels", "nonsense")
    assert code == 2 and "--labels" in err


def test_approximate_search_above_the_size_threshold_is_close_and_reports_its_error(tmp_path, run_cli):
    rng = np.random.default_rng(5)
    c = _modes(rng)
    real, _ = _draw(rng, c, [150] * N_MODES)
    gen, _ = _draw(rng, c, [0] + [170] * (N_MODES - 1))
    rp, gp = _save(tmp_path / "real.npz", real), _save(tmp_path / "gen.npz", gen)
    code, exact, _, err = _scan(run_cli, tmp_path, gp, rp, name="exact")
    assert code == 0, err
    code, approx, _, err = _scan(run_cli, tmp_path, gp, rp, "--exact-max-pairs", "1000", name="approx")
    assert code == 0, err
    from collapse_audit.schema import validate_results

    assert validate_results(approx) == []
    assert exact["metrics"]["prdc_method"] == "exact" and approx["metrics"]["prdc_method"] == "approx"
    assert approx["metrics"]["approximation"] is not None
    for key in ("precision", "recall", "density", "coverage"):
        assert approx["metrics"][key] == pytest.approx(exact["metrics"][key], abs=0.03), key
    assert approx["duplicates"]["search"].startswith("approximate") and exact["duplicates"]["search"].startswith("exact")
    assert any("approximate" in n for n in approx["notes"])
    # the duplicate analyses measure their own error against exact search (exact scans have nothing to measure)
    dm = approx["duplicates"]["approximation"]["metrics"]
    assert dm["dup_fraction"]["approx"] == pytest.approx(approx["duplicates"]["within_gen"]["dup_fraction"], abs=0.05)
    assert dm["memorized_fraction"]["n"] == len(gen) and approx["duplicates"]["approximation"]["max_abs_error"] < 0.05
    assert "approximation" not in exact["duplicates"]
    assert any("approximate duplicate search checked" in n for n in approx["notes"])


def test_zero_shot_classes_and_subgroups_through_scan_with_random_clip(tmp_path, run_cli):
    from conftest import write_images

    for name in ("cats", "dogs"):
        write_images(tmp_path / "real" / name, 12, seed=len(name))
    write_images(tmp_path / "gen", 14, seed=9)
    code, res, _, err = _scan(run_cli, tmp_path, tmp_path / "gen", tmp_path / "real", "--weights", "random",
                              "-e", "clip:ViT-S-32/openai", "--workers", "0", "--labels", "folders",
                              "--classes", "cats,dogs", "--subgroup", "tone=dark:a dark photo|bright:a bright photo")
    assert code == 0, err
    cls = res["classes"]
    assert cls["source"] == "zero-shot" and cls["classifier"]["kind"] == "zero-shot"
    assert cls["classifier"]["n_checked"] == 24  # agreement measured against the folder labels
    assert {c["name"] for c in cls["classes"]} <= {"cats", "dogs"}
    attr = res["subgroups"]["attributes"][0]
    assert attr["name"] == "tone" and attr["perceived"] is True and "estimated by a model" in attr["note"]
    assert {g["name"] for g in attr["groups"]} == {"dark", "bright"}


def test_completely_collapsed_generator_through_scan_at_the_approximate_size(tmp_path, run_cli):
    """A generator that writes one image 1,500 times (plus 300 from two modes), scanned with approximate search:
    the repeated output is one duplicate group found without a quadratic search, PRDC runs on distinct vectors
    and equals exact PRDC, and the gates on duplicates and coverage fail."""
    from collapse_audit import metrics as M
    from collapse_audit.schema import validate_results

    rng = np.random.default_rng(8)
    c = _modes(rng)
    real, _ = _draw(rng, c, [150] * N_MODES)
    rest, _ = _draw(rng, c, [150, 150] + [0] * (N_MODES - 2))
    gen = np.vstack([np.repeat(rest[:1], 1500, axis=0), rest[1:]])
    rp, gp = _save(tmp_path / "real.npz", real), _save(tmp_path / "gen.npz", gen, prefix="g")
    code, res, _, err = _scan(run_cli, tmp_path, gp, rp, "--exact-max-pairs", "1000",
                              "--fail-on", "dup_fraction>0.5", "--fail-on", "coverage<0.5")
    assert code == 1, err
    assert validate_results(res) == []
    m = res["metrics"]
    assert m["prdc_method"] == "approx"
    assert m["approximation"]["params"]["distinct_vectors"] == {"real": len(real), "gen": len(gen) - 1499}
    ref = M.prdc(real, gen, k=5)
    assert m["coverage"] == pytest.approx(ref.coverage, abs=0.03) and m["coverage"] < 0.35
    assert m["precision"] == pytest.approx(ref.precision, abs=0.03)
    wg = res["duplicates"]["within_gen"]
    assert wg["groups"][0]["size"] >= 1500 and wg["n_saturated"] < 1500  # copies joined without a search
    assert wg["dup_fraction"] >= 1500 / len(gen)
    assert {v["name"] for v in res["gate"]["violations"]} == {"dup_fraction", "coverage"}
    assert res["timings"]["analysis_duplicates"] > 0 and res["resources"]["peak_rss_bytes"] > 0
