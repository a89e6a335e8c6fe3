"""Progress bars on a terminal, silence in logs; `models fetch` offline."""
from __future__ import annotations

import io

from rich.console import Console

from collapse_audit.embed import embed_folder
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
