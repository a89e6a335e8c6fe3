"""The HTML report: rendered from a hand-made results dict with every section
filled and from a real scan of small image folders with a planted dropped
class and planted exact copies, opened in headless Chromium (console errors,
network requests, dialogs, DOM, screenshot); file names with markup stay
text; `collapse-audit report` re-renders without embedding; the report's size
is bounded by design (measured here, extrapolated to 10k + 10k)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import browser
from collapse_audit import report as R
from collapse_audit.scan import Side

XSS = "<img src=x onerror=alert(1)>.png"
SECTIONS = ["verdict", "metrics", "umap", "clusters", "classes", "subgroups", "duplicates", "failures", "repro"]
needs_chromium = pytest.mark.skipif(browser.chromium() is None,
                                    reason="chromium not installed (apt-get install chromium, or `make browser`)")


# --------------------------------------------------------------------------- planted image folders
def _image(kind: str, i: int, size: int = 64) -> np.ndarray:
    """Three visually distinct families: red stripes, blue/yellow checkers, green radial gradients."""
    rng = np.random.default_rng(1000 * "sgc".index(kind[0]) + i)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == "stripes":
        period = 6 + (i % 5)
        on = ((yy + i) // period) % 2
        a = np.stack([200 + 50 * on, 40 * on, 30 + 0 * on], -1)
    elif kind == "checker":
        cell = 6 + (i % 6)
        on = ((xx // cell + yy // cell + i) % 2)
        a = np.stack([230 * on, 200 * on, 255 - 200 * on], -1)
    else:  # gradient
        r = np.hypot(xx - size / 2 - (i % 7), yy - size / 2)
        a = np.stack([20 + 0 * r, 255 - 3 * r, 60 + 2 * r], -1)
    a = a + rng.normal(0, 6, a.shape)
    return np.clip(a, 0, 255).astype(np.uint8)


def write_planted(root: Path, n: int = 12, copies: int = 3) -> tuple[Path, Path]:
    """real/ has three classes; gen/ only two (gradient dropped), exact copies of one image, a file named like
    markup and an unreadable file."""
    real, gen = root / "real", root / "gen"
    for kind in ("stripes", "checker", "gradient"):
        (real / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_image(kind, i)).save(real / kind / f"{kind}{i:03d}.png")
    for kind in ("stripes", "checker"):
        (gen / kind).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_image(kind, 50 + i)).save(gen / kind / f"g_{kind}{i:03d}.png")
    (gen / "copies").mkdir(exist_ok=True)
    for j in range(copies):
        shutil.copyfile(gen / "stripes" / "g_stripes000.png", gen / "copies" / f"copy{j}.png")
    Image.fromarray(_image("checker", 99)).save(gen / XSS)
    (gen / "broken.png").write_bytes(b"")
    return real, gen


# --------------------------------------------------------------------------- the hand-made full fixture
def full_fixture(root: Path) -> tuple[dict, Side, Side]:
    """Results with every section filled (as the analysis contract describes), and two folder Sides."""
    real_dir, gen_dir = write_planted(root)
    rp = sorted(str(p.relative_to(real_dir)) for p in real_dir.rglob("*.png"))
    gp = sorted(str(p.relative_to(gen_dir)) for p in gen_dir.rglob("*.png") if p.name != "broken.png")
    rng = np.random.default_rng(0)
    centres = {k: rng.normal(size=16) * 4 for k in ("stripes", "checker", "gradient")}

    def feats(paths):
        out = []
        for p in paths:
            kind = next((k for k in centres if k in p), "stripes" if "copy" in p else "checker")
            out.append(centres[kind] + rng.normal(size=16))
        return np.asarray(out, dtype=np.float32)

    eid, eid2 = "clip:test/none:random-seed0:openclip", "inception:random-seed0:clean"
    real = Side(name="real", source=str(real_dir), kind="folder", features={eid: feats(rp), eid2: feats(rp)}, paths=rp,
                root=str(real_dir), n_files=len(rp))
    gen = Side(name="gen", source=str(gen_dir), kind="folder", features={eid: feats(gp), eid2: feats(gp)}, paths=gp,
               root=str(gen_dir), n_files=len(gp) + 1)
    grad = [p for p in rp if p.startswith("gradient")]
    stripes_r = [p for p in rp if p.startswith("stripes")]
    checker_r = [p for p in rp if p.startswith("checker")]
    stripes_g = [p for p in gp if p.startswith("stripes") or p.startswith("copies")]
    checker_g = [p for p in gp if p.startswith("checker") or p == XSS]
    nr, ng = len(rp), len(gp)

    def share_row(name, n_r, n_g, status, key="name"):
        rs, gs = n_r / nr, n_g / ng
        return {key: name, "n_real": n_r, "n_gen": n_g, "real_share": rs, "gen_share": gs,
                "gen_share_ci": [max(0.0, gs - 0.1), min(1.0, gs + 0.1)], "diff": gs - rs,
                "diff_ci": [gs - rs - 0.12, gs - rs + 0.12], "ratio": gs / rs if rs else None,
                "ratio_ci": [gs / rs * 0.7, gs / rs * 1.4] if gs else None, "p": 0.001 if status != "ok" else 0.5,
                "q": 0.002 if status != "ok" else 0.6, "status": status}

    bins = []
    for cid, (name, rpaths, gpaths, status) in enumerate(
            [("stripes", stripes_r, stripes_g, "over"), ("checker", checker_r, checker_g, "ok"), ("gradient", grad, [], "dropped")]):
        b = share_row(cid, len(rpaths), len(gpaths), status, key="id")
        b.update(z=1.0, real_exemplars=rpaths[:6], gen_exemplars=gpaths[:6])
        for k in ("diff_ci", "ratio", "ratio_ci"):
            b.pop(k)
        bins.append(b)
    metrics = {"fid": 41.25, "kid": 0.0123, "kid_std": 0.002, "precision": 0.91, "recall": 0.55, "density": 1.42,
               "coverage": 0.64, "k": 5, "kid_subset_size": 30,
               "ci": {"precision": [0.85, 0.95], "recall": [0.47, 0.62], "density": [1.2, 1.6], "coverage": [0.55, 0.72]},
               "ci_level": 0.95, "ci_method": "percentile bootstrap, 200 resamples of both sets"}
    metrics2 = dict(metrics, fid=12.5, precision=0.88)
    from collapse_audit.interpret import interpret

    results = {
        "schema_version": "1.0",
        "tool": {"name": "collapse-audit", "version": "0.1.0", "python": "3.11", "torch": "2.x",
                 "command": ["collapse-audit", "scan", str(gen_dir), "--real", str(real_dir), "--fail-on", "dropped_classes>0", XSS]},
        "created_at": "2025-01-01T00:00:00+00:00",
        "inputs": {"real": {"source": str(real_dir), "kind": "folder", "n_images": nr, "n_failed": 0, "n_files": nr, "embedders": [eid, eid2]},
                   "gen": {"source": str(gen_dir), "kind": "folder", "n_images": ng, "n_failed": 1, "n_files": ng + 1, "embedders": [eid, eid2]}},
        "failures": [{"path": "broken.png", "side": "gen", "reason": "empty file (0 bytes)"},
                     {"path": "sub/" + XSS, "side": "real", "reason": "not an image: " + XSS}],
        "embedders": [
            {"id": eid2, "name": "inception", "dim": 16, "preprocess_id": "clean", "weights": "random", "weights_sha256": None,
             "random_weights": True, "seed": 0, "device": "cpu"},
            {"id": eid, "name": "clip:test/none", "dim": 16, "preprocess_id": "openclip", "weights": "file",
             "weights_sha256": "ab" * 32, "random_weights": False, "seed": None, "device": "cpu"}],
        "primary_embedder": eid2,
        "metrics": metrics,
        "by_embedder": {eid2: {"metrics": metrics, "n_real": nr, "n_gen": ng}, eid: {"metrics": metrics2, "n_real": nr, "n_gen": ng}},
        "interpretation": interpret(metrics),
        "clusters": {"embedder": eid, "k": 3, "method": "faiss-kmeans", "seed": 0, "alpha": 0.05, "ndb": 2,
                     "ndb_fraction": 2 / 3, "dropped": [2], "under": [], "over": [0], "bins": bins},
        "classes": {"source": "folders", "labels_known": {"real": True, "gen": False},
                    "classifier": {"kind": "knn", "id": eid, "agreement": 0.93, "n_checked": nr, "note": "10-NN vote " + XSS},
                    "classes": [share_row("stripes", len(stripes_r), len(stripes_g), "over"),
                                share_row("checker", len(checker_r), len(checker_g), "ok"),
                                share_row("gradient", len(grad), 0, "dropped"),
                                share_row(XSS, 1, 1, "ok")],
                    "chi2": {"statistic": 30.5, "p": 1e-6, "dof": 3}, "dropped": ["gradient"], "under": [], "over": ["stripes"],
                    "max_gap": 1 / 3},
        "subgroups": {"attributes": [
            {"name": "lighting", "source": "manifest", "perceived": False, "note": "from the manifest, as recorded",
             "groups": [dict(share_row("day", 20, 20, "ok"), precision=0.9, coverage=0.8),
                        dict(share_row("night", 16, 8, "under"), precision=None, coverage=None)],
             "max_gap": 0.1, "max_gap_group": "night", "dropped": []},
            {"name": "perceived_age", "source": "zero-shot", "perceived": True, "note": "perceived, estimated by a model",
             "groups": [dict(share_row("young", 30, 28, "over"), precision=0.8, coverage=0.7),
                        dict(share_row("old", 6, 0, "dropped"), precision=None, coverage=None)],
             "max_gap": 0.17, "max_gap_group": "old", "dropped": ["old"]}],
            "max_gap": 0.17, "dropped": ["perceived_age=old"]},
        "duplicates": {"embedder": eid,
                       "within_gen": {"metric": "cosine", "threshold": 0.05, "n_groups": 2, "n_in_groups": 6,
                                      "dup_fraction": 6 / ng, "exact_groups": 1,
                                      "groups": [{"size": 4, "paths": ["stripes/g_stripes000.png", "copies/copy0.png", "copies/copy1.png", "copies/copy2.png"],
                                                  "max_distance": 0.0, "exact": True},
                                                 {"size": 2, "paths": [XSS, "checker/g_checker001.png"], "max_distance": 0.031, "exact": False}]},
                       "gen_vs_real": {"metric": "cosine", "threshold": 0.01,
                                       "calibration": {"method": "quantile of real nearest-other-real cosine distances", "quantile": 0.01,
                                                       "real_nn_distance_quantile": 0.01},
                                       "n_memorized": 2, "memorized_fraction": 2 / ng,
                                       "pairs": [{"gen_path": "checker/g_checker002.png", "real_path": "checker/checker002.png", "distance": 0.004, "exact": False},
                                                 {"gen_path": XSS, "real_path": "checker/checker003.png", "distance": 0.008, "exact": False}]}},
        "gate": {"passed": False,
                 "rules": [{"rule": "dropped_classes>0", "name": "dropped_classes", "key": "classes.dropped", "op": ">", "threshold": 0.0,
                            "value": 1.0, "passed": False, "message": "dropped_classes = 1 > 0 (fail-on rule matched)"},
                           {"rule": "coverage<0.5", "name": "coverage", "key": "metrics.coverage", "op": "<", "threshold": 0.5,
                            "value": 0.64, "passed": True, "message": "coverage = 0.64, not < 0.5 (rule held)"}],
                 "violations": [{"rule": "dropped_classes>0", "name": "dropped_classes", "key": "classes.dropped", "op": ">",
                                 "threshold": 0.0, "value": 1.0, "passed": False, "message": "dropped_classes = 1 > 0 (fail-on rule matched)"}]},
        "timings": {"embed": 1.5, "metrics": 0.2, "analysis": 0.3, "total": 2.0},
        "notes": ["RANDOM WEIGHTS: at least one embedder uses seeded random weights.", "a note with markup " + XSS],
        "settings": {"seed": 0, "k": 5, "kid_subsets": 100, "kid_subset_size": 30, "bootstrap": 200, "device": "cpu", "batch_size": 64},
    }
    return results, real, gen


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    results, real, gen = full_fixture(root)
    out = root / "out"
    data_path = R.prepare_report_data(results, real, gen, out, seed=0, layout="pca")
    (out / "results.json").write_text(json.dumps(results))
    html = R.render_report(results, R.load_report_data(data_path), out / "report.html")
    return {"results": results, "real": real, "gen": gen, "out": out, "html": html, "data": json.loads(data_path.read_text())}


HOVER_PROBE = """(() => {
  const p = window.collapseAuditPlot; if (!p) return null;
  const i = p.firstWithThumb(); if (i < 0) return {i: i};
  const xy = p.clientXY(i);
  document.getElementById('umap-canvas').dispatchEvent(new MouseEvent('mousemove', {clientX: xy[0], clientY: xy[1], bubbles: true}));
  const tip = document.getElementById('umap-tip');
  const img = tip.querySelector('img');
  return {i: i, display: tip.style.display, img: img ? img.src.slice(0, 22) : null, text: tip.textContent};
})()"""

PROBES = {
    "sections": "Array.from(document.querySelectorAll('main > section')).map(s => s.id)",
    "drawn": "(document.getElementById('umap-canvas') || {getAttribute: () => null}).getAttribute('data-drawn')",
    "dup_imgs": "Array.from(document.querySelectorAll('#dup-groups img')).filter(i => i.src.startsWith('data:image/jpeg') && i.complete && i.naturalWidth > 0).length",
    "pair_imgs": "document.querySelectorAll('#copy-pairs img').length",
    "injected": "document.querySelectorAll('img[src=\"x\"], [onerror]').length",
    "xss_text": "document.body.innerText.includes('<img src=x onerror=alert(1)>.png')",
    "xss_data": "Array.from(document.querySelectorAll('script[type=\"application/json\"]')).some(s => JSON.stringify(JSON.parse(s.textContent)).includes('<img src=x onerror=alert(1)>.png'))",
    "hover": HOVER_PROBE,
}


# --------------------------------------------------------------------------- browser tests
@needs_chromium
def test_full_fixture_in_chromium_no_errors_no_network_no_injection(full, tmp_path):
    res = browser.inspect_page(full["html"], probes=PROBES)
    assert res["errors"] == [], res["errors"]
    assert res["requests"] == [], f"network requests: {res['requests']}"
    assert any(u.startswith("file:") for u in res["all_requests"])  # the network domain did see the page itself
    assert res["dialogs"] == []
    pr = res["probes"]
    assert pr["sections"] == SECTIONS
    assert int(pr["drawn"]) == len(full["data"]["points"]["x"]) > 0
    assert pr["dup_imgs"] >= 4 + 2  # the planted exact-copy group (4) and the second group (2), all decoded
    assert pr["pair_imgs"] == 4
    # the markup file name is text: no element was created from it, it reads as text, no dialog fired
    assert pr["injected"] == 0 and pr["xss_text"] is True
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in res["dom"]
    hv = pr["hover"]
    assert hv["display"] == "block" and hv["img"] == "data:image/jpeg;base64" and hv["text"]
    # the random-weights banner is loud and the gate verdict is failed
    assert 'id="random-weights-banner"' in res["dom"] and 'data-passed="false"' in res["dom"]
    png = browser.screenshot(full["html"], tmp_path / "full.png")
    st = browser.png_stats(png)
    assert st["n_colours"] > 200 and st["top_share"] < 0.9, st


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """A real scan (random CLIP weights, 3 classes real / 2 gen + exact copies), report written as the scan would."""
    import os

    from collapse_audit.api import audit
    from collapse_audit.scan import ScanConfig

    root = tmp_path_factory.mktemp("live")
    real_dir, gen_dir = write_planted(root)
    cache = root / "cache"
    old = os.environ.get("COLLAPSE_AUDIT_CACHE")
    os.environ["COLLAPSE_AUDIT_CACHE"] = str(cache)
    try:
        cfg = ScanConfig(embedders=["clip:ViT-S-32/openai"], weights=["random"], workers=0, kid_subsets=10,
                         kid_subset_size=20, progress=False, cache_dir=str(cache))
        res = audit(gen_dir, real_dir, cfg)  # the result carries the sides it compared
        rpath = res.write(root / "out")
        results = res.to_dict()
    finally:
        if old is None:
            os.environ.pop("COLLAPSE_AUDIT_CACHE", None)
        else:
            os.environ["COLLAPSE_AUDIT_CACHE"] = old
    real, gen = res.real, res.gen
    out = rpath.parent
    html = out / "report.html"
    if not (out / R.REPORT_DATA_NAME).is_file() or not html.is_file():  # until the scan writes the report itself
        dp = R.prepare_report_data(results, real, gen, out, seed=0)
        R.render_report(results, R.load_report_data(dp), html)
    return {"results": json.loads(rpath.read_text()), "out": out, "html": html, "root": root}


@needs_chromium
def test_live_scan_report_in_chromium(live, tmp_path):
    data = R.load_report_data(live["out"])
    assert data["layout"]["method"] == "umap"  # 36 + 28 points: UMAP, not the PCA fallback
    assert data["layout"]["n_shown"] == {"real": 36, "gen": 28}
    res = browser.inspect_page(live["html"], probes=PROBES)
    assert res["errors"] == [] and res["requests"] == [] and res["dialogs"] == []
    pr = res["probes"]
    assert pr["sections"] == SECTIONS and int(pr["drawn"]) == 64
    # the markup-named generated image is a map point (its name travels as JSON data, shown on hover as
    # text); whether it is also listed in a table depends on the analysis, so only data + no injection here
    assert pr["injected"] == 0 and pr["xss_data"] is True
    dups = live["results"].get("duplicates")
    if dups and dups["within_gen"]["groups"]:  # the planted exact copies are the largest group, shown as pictures
        top = dups["within_gen"]["groups"][0]
        assert {"copies/copy0.png", "copies/copy1.png", "copies/copy2.png", "stripes/g_stripes000.png"} <= set(top["paths"])
        assert pr["dup_imgs"] >= 4
    assert any(f["path"] == "broken.png" for f in live["results"]["failures"])
    assert "broken.png" in res["dom"]
    png = browser.screenshot(live["html"], tmp_path / "live.png")
    st = browser.png_stats(png)
    assert st["n_colours"] > 200 and st["top_share"] < 0.9, st


def _metric_cells(html: str) -> list[str]:
    return re.findall(r'<td class="num metric-value">([^<]*)</td>', html)


def test_report_command_rerenders_without_embedding(live, run_cli, monkeypatch, tmp_path):
    import collapse_audit.embedding as E

    def boom(*a, **k):
        raise AssertionError("the report command must not embed images")

    monkeypatch.setattr(E, "embed_files", boom)
    monkeypatch.setattr(E, "embed_folder", boom)
    monkeypatch.setattr(R, "layout_2d", boom)
    monkeypatch.setattr(R, "make_thumbnail", boom)
    shutil.rmtree(live["root"] / "cache", ignore_errors=True)
    target = tmp_path / "again.html"
    code, out, err = run_cli("report", live["out"] / "results.json", "-o", target)
    assert code == 0, err
    first, again = live["html"].read_text(), target.read_text()
    assert _metric_cells(again) == _metric_cells(first) and len(_metric_cells(again)) == 10  # 7 headline (Vendi included), the real Vendi, AuthPct, IS
    assert again.count("data:image/jpeg;base64") == first.count("data:image/jpeg;base64") > 0
    # out dir form, default output beside results.json
    (live["out"] / "report.html").unlink()
    code, out, err = run_cli("report", live["out"])
    assert code == 0, err
    assert _metric_cells((live["out"] / "report.html").read_text()) == _metric_cells(first)


def test_report_command_input_errors(run_cli, tmp_path):
    code, _, err = run_cli("report", tmp_path / "nope.json")
    assert code == 2 and "results.json" in err
    (tmp_path / "results.json").write_text("{not json")
    code, _, err = run_cli("report", tmp_path)
    assert code == 2 and "JSON" in err


# --------------------------------------------------------------------------- rendering without a browser
def test_null_sections_and_no_report_data_render(full, tmp_path):
    res = dict(full["results"], clusters=None, classes=None, subgroups=None, duplicates=None, failures=[],
               gate={"passed": True, "rules": [], "violations": []})
    html = R.render_report(res, None, tmp_path / "r.html").read_text()
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    pos = [html.index(f'<section id="{sid}">') for sid in SECTIONS]
    assert pos == sorted(pos)
    assert "--labels folders" in html and "--subgroup" in html and "report_data.json" in html
    assert "NO GATE" in html and 'id="plot-data"' not in html
    assert "<img" not in html  # nothing to show, and no broken image either


def test_escaping_everywhere(full):
    html = full["html"].read_text()
    assert XSS not in html  # never raw, anywhere (attributes, text, JSON)
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    block = re.search(r'<script type="application/json" id="plot-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in block and ">" not in block
    payload = json.loads(block)
    assert XSS in payload["points"]["p"]  # ... and comes back intact through JSON.parse
    for forbidden in ("http://", "https://", "//cdn", "<link", "@import", "url("):
        assert forbidden not in html.replace("http-equiv", ""), forbidden


def test_feature_file_sides_get_no_thumbnails(full, tmp_path):
    real, gen = full["real"], full["gen"]
    feat_real = Side(name="real", source="real.npz", kind="features", features=real.features, paths=real.paths, root=None)
    data = R.build_report_data(full["results"], feat_real, gen, layout="pca")
    assert all(t["side"] == "gen" for t in data["thumbs"]) and data["thumbs"]
    assert any("real side" in n and "embeddings file" in n for n in data["thumb_notes"])
    html = R.render_report(full["results"], data, tmp_path / "f.html").read_text()
    assert "no thumbnail" in html and "embeddings file" in html


def test_layout_subsample_and_pca_fallback_match_references():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    x = rng.normal(size=(15, 8)).astype(np.float32)
    coords, method, note = R.layout_2d(x, seed=0)
    assert method == "pca" and "UMAP needs at least" in note
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = PCA(n_components=2, svd_solver="full").fit_transform(xn)
    for j in range(2):  # same axes up to sign and the unit-square scaling
        c = np.corrcoef(coords[:, j], ref[:, j])[0, 1]
        assert abs(c) > 0.999
    assert coords.min() >= 0 and coords.max() <= 1
    ir, ig = R._subsample(9000, 3000, 1000, 0, must_real=[5, 8999], must_gen=[0])
    assert ir.size + ig.size == 1000 and ir.size == 750 and ig.size == 250
    assert {5, 8999} <= set(ir.tolist()) and 0 in ig.tolist()
    assert np.array_equal(ir, R._subsample(9000, 3000, 1000, 0, [5, 8999], [0])[0])  # seeded
    ir2, ig2 = R._subsample(10, 5, 1000, 0, [], [])
    assert ir2.size == 10 and ig2.size == 5


def test_size_is_bounded_by_design(tmp_path):
    """Worst case for JPEG size (noise images), every cap hit: the report's bytes are
    (fixed part) + (points x bytes/point) + (thumbnails x bytes/thumbnail)."""
    rng = np.random.default_rng(0)
    n, cap, max_thumbs = 200, 300, 120
    sides = {}
    for name in ("real", "gen"):
        d = tmp_path / name
        d.mkdir()
        paths = []
        for i in range(n):
            p = f"{name}_image_{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 256, size=(256, 256, 3), dtype=np.uint8)).save(d / p, quality=95)
            paths.append(p)
        sides[name] = Side(name=name, source=str(d), kind="folder", root=str(d), paths=paths,
                           features={"clip:x": rng.normal(size=(n, 32)).astype(np.float32)})
    results, *_ = full_fixture(tmp_path / "fx")
    results = dict(results, clusters=None, classes=None, subgroups=None, duplicates=None)
    data = R.build_report_data(results, sides["real"], sides["gen"], umap_cap=cap, max_thumbs=max_thumbs, layout="pca")
    n_pts = len(data["points"]["x"])
    assert n_pts == cap and len(data["thumbs"]) == max_thumbs
    thumb_bytes = [len(t["src"]) for t in data["thumbs"]]
    assert max(thumb_bytes) < 12_000  # 96 px JPEG q70 of pure noise, base64
    html = R.render_report(results, data, tmp_path / "r.html").read_bytes()
    base = len(R.render_report(results, None, tmp_path / "base.html").read_bytes())
    per_thumb = sum(thumb_bytes) / len(thumb_bytes)
    per_point = (len(html) - base - sum(thumb_bytes)) / n_pts
    est_10k = base + 5000 * per_point + 600 * per_thumb  # defaults: umap_cap=5000, max_thumbs=600
    print(f"\nreport size: {len(html)} B at {n}+{n} images ({n_pts} points, {len(data['thumbs'])} thumbnails); "
          f"base {base} B, {per_point:.1f} B/point, {per_thumb:.0f} B/thumbnail (noise, worst case); "
          f"10k+10k at defaults <= {est_10k / 1e6:.2f} MB")
    assert est_10k < 15e6


def test_run_time_reads_as_a_duration():
    from collapse_audit.report import duration

    assert duration(None) == "-"
    assert duration(4.04) == "4.0 s" and duration(59.94) == "59.9 s"
    assert duration(59.96) == "1 min 00 s" and duration(754.6) == "12 min 35 s"
    assert duration(3599.4) == "59 min 59 s" and duration(3599.6) == "1 h 00 min"
    assert duration(3152.9) == "52 min 33 s" and duration(7260) == "2 h 01 min"
