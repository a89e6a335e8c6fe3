"""track.html: rendered from the synthetic track.json of tests/track_fixture.py (planted mode
hopping, a collapse onset, a never-learned cluster), checked with an HTML parser (heatmap cells,
onset markers, alerts, the statistical basis, row order, images as data URIs only), for escaping
of every untrusted string, and in headless Chromium (no console errors, no network requests,
cell count in the DOM, the flipbook's next button, the exemplar pop-up of a row label)."""
from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

import browser
from collapse_audit import track_report as TR
from track_fixture import make_track_dict

XSS = "<script>alert(1)</script>"
needs_chromium = pytest.mark.skipif(browser.chromium() is None,
                                    reason="chromium not installed (apt-get install chromium, or `make browser`)")


class Page(HTMLParser):
    """Every start tag as ``(tag, attrs)``, and the page's text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.text: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: (v or "") for k, v in attrs}))

    handle_startendtag = handle_starttag

    def handle_data(self, data):
        self.text.append(data)

    def find(self, tag: str | None = None, cls: str | None = None, **attrs) -> list[dict]:
        out = []
        for t, a in self.tags:
            if tag is not None and t != tag:
                continue
            if cls is not None and cls not in a.get("class", "").split():
                continue
            if any(a.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            out.append(a)
        return out

    @property
    def body_text(self) -> str:
        return " ".join(" ".join(self.text).split())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    track = make_track_dict(folder=root, empty_samples_at=(3,))
    html = TR.render_track_html(track, base_dir=root)
    path = TR.write_track_html(track, root / "out" / "track.html", base_dir=root)
    return {"track": track, "html": html, "page": Page(html), "root": root, "path": path}


# --------------------------------------------------------------------------- structure
def test_fixture_has_the_spec_shape():
    t = make_track_dict(T=5, K=7, onset_at=3)
    assert t["schema_version"] == "1.0" and t["kind"] == "track" and len(t["checkpoints"]) == 5
    assert t["clusters"]["k"] == 7 and len(t["clusters"]["real_exemplars"]) == 7
    cp = t["checkpoints"][0]
    assert set(cp) >= {"index", "name", "step", "source", "n_gen", "metrics", "intervals", "se", "clusters", "classes", "samples"}
    assert set(cp["clusters"]) == {"n_gen", "gen_share", "gen_share_ci", "status", "n_covered", "n_dropped"}
    run = t["run"]
    assert set(run) >= {"n_checkpoints", "alpha", "onset", "onset_basis", "hopping", "never_learned", "best_checkpoint",
                        "final", "tail_loss", "alerts"}
    assert run["onset"]["checkpoint"] == 3 and {h["id"] for h in run["hopping"]["clusters"]} == {0, 1}
    assert run["never_learned"] == [6]
    assert make_track_dict(onset_at=None)["run"]["onset"] is None
    json.dumps(t, allow_nan=False)  # JSON-ready


def test_heatmap_has_one_cell_per_cluster_and_checkpoint(rendered):
    track, page = rendered["track"], rendered["page"]
    K, T = track["clusters"]["k"], len(track["checkpoints"])
    cells = page.find("td", cls="cell")
    assert len(cells) == K * T
    assert {(int(c["data-cluster"]), int(c["data-checkpoint"])) for c in cells} == {(b, t) for b in range(K) for t in range(T)}
    for c in cells:  # the status and the 'dropped' mark follow track.json
        st = track["checkpoints"][int(c["data-checkpoint"])]["clusters"]["status"][int(c["data-cluster"])]
        assert c["data-status"] == st
        assert ("dropped" in c["class"].split()) == (st == "dropped")
        assert c["title"].startswith(f"cluster {c['data-cluster']} at step") and f"status {st}" in c["title"]
    # rows: the hopping clusters first, the never-learned one last; every row label carries its exemplars
    rows = [int(a["data-cluster"]) for a in page.find("tr") if "data-cluster" in a]
    assert rows[:2] == [0, 1] and rows[2:4] == [2, 3] and rows[-1] == K - 1 and sorted(rows) == list(range(K))
    assert len(page.find("div", cls="ex")) == K


def test_summary_alerts_onset_basis_and_charts(rendered):
    track, page, html = rendered["track"], rendered["page"], rendered["html"]
    run = track["run"]
    alerts = page.find("li", cls="alert")
    assert len(alerts) == len(run["alerts"]) >= 3
    assert [a["data-severity"] for a in alerts] == sorted((a["severity"] for a in run["alerts"]), key=lambda s: s != "error")
    assert alerts[0]["data-kind"] == "onset" and "error" in alerts[0]["class"].split()
    text = page.body_text
    for a in run["alerts"]:
        assert a["message"] in text
    for sentence in (run["onset_basis"], run["hopping"]["basis"], run["best_checkpoint"]["criterion"]):
        assert sentence in text
    assert page.find(id="onset") and not page.find(id="onset-none")
    assert "step 3000" in text and "coverage fell from 0.802" in text.replace("<strong>", "")
    # one chart per metric, each with the onset line and the best-checkpoint line
    charts = page.find("div", cls="chart-card")
    assert [c["data-metric"] for c in charts] == [k for k, _ in TR.TIMELINE_METRICS]
    assert len(page.find("line", cls="onset-marker")) == len(charts)
    assert len(page.find("line", cls="best-marker")) == len(charts)
    assert len(page.find("span", cls="onset-marker")) == 1  # the heatmap's onset column
    assert len(page.find("polyline", cls="line")) == len(charts)
    assert len(page.find("polygon", cls="band")) == 5  # precision, recall, density, coverage, kid have intervals
    assert len(page.find("circle", cls="pt")) == len(charts) * len(track["checkpoints"])
    assert page.find(id="never-learned") and page.find(id="n-hopping")
    assert page.find("table", id="classes-table") and "bird" in text
    assert 'id="tail-loss"' not in html  # order "step": no tail loss


def test_chart_geometry_follows_the_data(rendered):
    track = rendered["track"]
    cps = track["checkpoints"]
    steps = [cp["step"] for cp in cps]
    xs = TR._x_positions(steps)
    c = TR._chart("coverage", "coverage", xs, steps, cps, 5, 0)
    assert len(c["points"]) == len(cps) and c["onset_x"] == c["points"][5]["x"] and c["best_x"] == c["points"][0]["x"]
    ys = [p["y"] for p in c["points"]]
    assert ys[5] > ys[4]  # coverage fell at the onset: lower on the chart (SVG y grows downwards)
    assert all(c["y1"] <= y <= c["y0"] for y in ys)
    # checkpoint 0 has no density interval: the band starts at checkpoint 1
    d = TR._chart("density", "density", xs, steps, cps, None, None)
    assert len(d["bands"]) == 1 and d["onset_x"] is None and len(d["bands"][0].split()) == 2 * (len(cps) - 1)
    # a missing value breaks the line
    cps2 = [dict(cp, metrics=dict(cp["metrics"], fid=None if i == 3 else cp["metrics"]["fid"])) for i, cp in enumerate(cps)]
    f = TR._chart("fid", "fid", xs, steps, cps2, None, None)
    assert len(f["segments"]) == 2 and len(f["points"]) == len(cps) - 1
    assert TR.ratio_colour(1.0) == "#f7f7f7" and TR.ratio_colour(0.0) == "#b35806" and TR.ratio_colour(100.0) == "#542788"
    assert TR.ratio_colour(None) != TR.ratio_colour(1.0)


def test_no_onset_no_marker():
    track = make_track_dict(onset_at=None, hopping=False)
    page = Page(TR.render_track_html(track))
    assert not page.find(cls="onset-marker") and not page.find(id="onset") and page.find(id="onset-none")
    assert not page.find(cls="onset-col")
    assert {a["data-kind"] for a in page.find("li", cls="alert")} == {"never_learned"}
    assert len(page.find("td", cls="cell")) == 12 * 8


def test_images_are_data_uris_and_nothing_is_fetched(rendered):
    track, page, html = rendered["track"], rendered["page"], rendered["html"]
    imgs = page.find("img")
    n_ex = sum(len(e) for e in track["clusters"]["real_exemplars"])
    n_samples = sum(len(cp["samples"]) for cp in track["checkpoints"])
    assert len(imgs) == n_ex + n_samples and all(i["src"].startswith("data:image/jpeg;base64,") for i in imgs)
    for forbidden in ("http://", "https://", "//cdn", "<link", "@import", "url(", 'src="/', 'src="file:'):
        assert forbidden not in html, forbidden
    scripts = page.find("script")
    assert len(scripts) == 1 and all("src" not in s for s in scripts)  # the flipbook, inline
    frames = page.find("div", cls="frame")
    assert len(frames) == len(track["checkpoints"]) and sum("hidden" not in f for f in frames) == 1
    assert "no samples recorded for this checkpoint" in page.body_text  # checkpoint 3 has none
    assert rendered["path"].read_text() == html  # write_track_html writes the same page
    assert not [p for p in rendered["path"].parent.iterdir() if p.name != "track.html"]  # no temp file left


def test_without_base_dir_images_are_named_and_escape_stays_inside(tmp_path):
    base = tmp_path / "out"
    track = make_track_dict(T=3, K=5, folder=base, onset_at=None, hopping=False)
    page = Page(TR.render_track_html(track))  # no base_dir: no file is read
    assert not page.find("img") and "samples/step_000500/s00.png" in page.body_text
    # a path that leaves base_dir is not read, even when the file exists
    secret = tmp_path / "secret.png"
    (base / "real" / "c00" / "r0.png").rename(secret)
    track["clusters"]["real_exemplars"][0][0] = "../secret.png"
    page = Page(TR.render_track_html(track, base_dir=base))
    assert not any(i.get("alt") == "../secret.png" for i in page.find("img")) and "../secret.png" in page.body_text
    # an absolute sample path (the schema allows them) is read as given
    track["checkpoints"][0]["samples"] = [str(secret)]
    page = Page(TR.render_track_html(track, base_dir=base))
    assert any(i.get("alt") == str(secret) for i in page.find("img"))


def _hostile(track: dict) -> dict:
    track = json.loads(json.dumps(track))
    track["real"]["source"] = XSS
    track["run_id"] = XSS
    track["config"]["embedder"] = XSS
    cp = track["checkpoints"][1]
    cp["name"] = XSS
    cp["source"] = XSS
    cp["samples"][0] = XSS + ".png"
    cp["clusters"]["status"][4] = XSS + " cell"
    cp["classes"]["names"][0] = XSS
    track["clusters"]["real_exemplars"][2][0] = XSS + ".png"
    track["run"]["alerts"][0]["message"] = XSS
    track["run"]["alerts"][0]["severity"] = XSS
    track["run"]["alerts"][0]["kind"] = XSS
    track["run"]["onset_basis"] = XSS
    track["run"]["never_learned"] = [XSS]
    track["run"]["best_checkpoint"]["name"] = XSS
    return track


def test_every_string_is_escaped(tmp_path):
    track = _hostile(make_track_dict(folder=tmp_path))
    html = TR.render_track_html(track, base_dir=tmp_path)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Page(html)
    assert len(page.find("script")) == 1  # the flipbook's own; none from the data
    assert len(page.find("td", cls="cell")) == 12 * 8  # a status with a space cannot add a class
    assert page.find("td", cls="cell", data_status="unknown")
    assert page.body_text.count(XSS) >= 10


def test_minimal_and_generation_tracks_render(tmp_path):
    track = make_track_dict(T=2, K=5, order="generation", onset_at=1, hopping=False, classes=False)
    page = Page(TR.render_track_html(track))
    assert page.find(id="tail-loss") and not page.find(id="classes-table")
    assert track["run"]["tail_loss"]["basis"] in page.body_text
    one = make_track_dict(T=2, K=5, onset_at=None)
    one["checkpoints"] = one["checkpoints"][:1]
    one["run"] = {"n_checkpoints": 1, "onset": None, "alerts": [], "best_checkpoint": None, "hopping": {}, "never_learned": []}
    page = Page(TR.render_track_html(one))
    assert len(page.find("td", cls="cell")) == 5 and page.find("p", id="alerts")
    bare = {"schema_version": "1.0", "kind": "track", "checkpoints": [], "clusters": {"k": 0}}
    page = Page(TR.render_track_html(bare))
    assert not page.find("td", cls="cell") and not page.find("script")


# --------------------------------------------------------------------------- in a browser
PROBES = {
    "cells": "document.querySelectorAll('#heatmap-table td.cell').length",
    "cells_with_data": "document.querySelectorAll('td.cell[data-cluster][data-checkpoint]').length",
    "scripts": "document.querySelectorAll('script').length",
    "flip": """(() => {
      const vis = () => Array.from(document.querySelectorAll('#fb-frames .frame')).filter(f => !f.hidden && f.offsetParent !== null).map(f => f.dataset.t);
      const before = vis();
      document.getElementById('fb-next').click();
      const after = vis();
      const r = document.getElementById('fb-range'); r.value = '3'; r.dispatchEvent(new Event('input'));
      return {before: before, after: after, slid: vis(), label: document.getElementById('fb-label').textContent,
              imgs: document.querySelector('#fb-frames .frame[data-t="1"]').querySelectorAll('img').length};
    })()""",
    "decoded": "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length",
    "n_images": "document.images.length",
    "focus_popup": """(() => {
      const th = document.querySelector('#heatmap-table th.rowlab[data-cluster]');
      const ex = th.querySelector('.ex'); const before = getComputedStyle(ex).display;
      th.focus();
      return {cluster: th.dataset.cluster, before: before, after: getComputedStyle(ex).display, imgs: ex.querySelectorAll('img').length};
    })()""",
    "xss_text": "document.body.innerText.includes('<script>alert(1)</script>')",
}


@needs_chromium
def test_track_page_in_chromium(tmp_path):
    track = _hostile(make_track_dict(folder=tmp_path, empty_samples_at=(3,)))
    path = TR.write_track_html(track, tmp_path / "track.html", base_dir=tmp_path)
    res = browser.inspect_page(path, probes=PROBES)
    assert res["errors"] == [], res["errors"]
    assert res["requests"] == [], f"network requests: {res['requests']}"
    assert res["dialogs"] == []
    pr = res["probes"]
    K, T = track["clusters"]["k"], len(track["checkpoints"])
    assert pr["cells"] == pr["cells_with_data"] == K * T
    assert pr["scripts"] == 1 and pr["xss_text"] is True
    assert pr["flip"]["before"] == ["0"] and pr["flip"]["after"] == ["1"] and pr["flip"]["slid"] == ["3"]
    assert pr["flip"]["label"] == f"4 / {T}" and pr["flip"]["imgs"] == 5  # one sample of checkpoint 1 is named, not a file
    assert pr["decoded"] == pr["n_images"] > 0  # every embedded image decodes
    fp = pr["focus_popup"]
    assert fp["before"] == "none" and fp["after"] == "block" and fp["imgs"] == 4


@needs_chromium
def test_hovering_a_row_label_shows_its_exemplars(rendered):
    """A real mouse move (DevTools Input domain) over a row label opens that cluster's exemplar pop-up (CSS :hover)."""
    url = rendered["path"].resolve().as_uri()
    with browser.devtools() as dt:
        dt.call("Page.enable")
        dt.call("Page.navigate", {"url": url})
        assert dt.wait_for("Page.loadEventFired", timeout=30) is not None
        box = dt.evaluate("""(() => { const th = document.querySelector('#heatmap-table tbody th.rowlab');
            th.scrollIntoView({block: 'center'}); const r = th.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2, th.dataset.cluster]; })()""")
        shown = "getComputedStyle(document.querySelector('#heatmap-table tbody th.rowlab .ex')).display"
        assert dt.evaluate(shown) == "none"
        dt.call("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": box[0], "y": box[1]})
        dt.drain(0.2)
        assert dt.evaluate(shown) == "block"
        n = dt.evaluate("document.querySelector('#heatmap-table tbody th.rowlab .ex').querySelectorAll('img').length")
        assert box[2] == "0" and n == 4
