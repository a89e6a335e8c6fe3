"""Progress bars on a terminal, silence in logs; `models fetch` offline."""
from __future__ import annotations

import io

from rich.console import Console

from collapse_audit.embedding import embed_folder
from collapse_audit.pipeline import build_embedders
from collapse_audit.progress import ProgressReporter, RichProgress, default_reporter
from conftest import write_images


def test_reporter_is_quiet_when_not_a_terminal_or_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    assert type(default_reporter()) is ProgressReporter
    monkeypatch.delenv("CI")
    assert type(default_reporter()) is ProgressReporter  # pytest's stderr is not a tty
    assert isinstance(default_reporter(True), RichProgress)


def test_rich_bar_shows_rate_and_eta_while_embedding(tmp_path):
    write_images(tmp_path / "imgs", 6)
    buf = io.StringIO()
    reporter = RichProgress(Console(file=buf, force_terminal=True, width=140))
    embs = build_embedders(["inception"], ["random"])
    res = embed_folder(tmp_path / "imgs", embs, device="cpu", workers=0, batch_size=3, progress=reporter)
    text = buf.getvalue()
    assert res.stats["n_computed"] == 6
    assert "embedding" in text and "img/s" in text and "ETA" in text and "6/6" in text


def test_models_fetch_offline_is_one_line_exit_2(run_cli):
    code, _, err = run_cli("models", "fetch", "inception")
    assert code == 2 and "pt_inception-2015-12-05-6726825d.pth" in err and "Traceback" not in err


def test_scan_at_the_approximate_size_shows_bars_for_prdc_and_duplicate_searches(tmp_path, monkeypatch):
    """The long searches of a scan at scale (approximate PRDC, near-duplicates, near-copies) report progress."""
    import numpy as np

    import collapse_audit.progress as progress_mod
    from collapse_audit.features import FeatureSet, save_features
    from collapse_audit.scan import ScanConfig, run_scan

    rng = np.random.default_rng(0)
    for name in ("real", "gen"):
        x = rng.normal(size=(600, 8)).astype(np.float32)
        save_features(tmp_path / f"{name}.npz", FeatureSet(features=x, paths=[f"{name}{i}.png" for i in range(600)],
                                                           embedder_id="e"))
    buf = io.StringIO()
    reporter = RichProgress(Console(file=buf, force_terminal=True, width=160))
    monkeypatch.setattr(progress_mod, "default_reporter", lambda enabled=None: reporter)  # as on a terminal
    cfg = ScanConfig(exact_max_pairs=1000, kid_subset_size=100, kid_subsets=5)
    res, _, _ = run_scan(tmp_path / "gen.npz", tmp_path / "real.npz", cfg)
    text = buf.getvalue()
    assert res["metrics"]["prdc_method"] == "approx"
    for bar in ("approximate PRDC: IVF search", "approximate PRDC: exact check", "near-duplicates: search",
                "near-copies: nearest real image", "near-copies: real nearest neighbours"):
        assert bar in text, bar
    assert "600/600" in text and "img/s" in text
