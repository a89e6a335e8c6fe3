"""collapse_audit.integrations.lightning: the callback inside a real Lightning Trainer.

A tiny LightningModule trains for a few epochs; its ``sample`` returns features
of a Gaussian mixture, all modes for three epochs and three of eight from then
on. The callback must audit at the right global steps, find the onset at the
collapsed checkpoint (or the next), stop training through ``stop_on``, log to the
trainer's logger, write track.json, and give the same numbers as a Tracker fed
the same features by hand. Lightning is in the dev lock; without it the test is
skipped with that reason.
"""
from __future__ import annotations

import csv
import json

import jsonschema
import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch", reason="PyTorch Lightning is not installed (pip install lightning)")

from collapse_audit import TrackConfig, Tracker  # noqa: E402
from collapse_audit.integrations.lightning import CollapseAuditCallback  # noqa: E402
from collapse_audit.track import track_schema  # noqa: E402

D, MODES = 16, 8
FAST = TrackConfig(clusters=MODES, bootstrap=0, kid_subsets=5, kid_subset_size=200)


class _Gen(pl.LightningModule):
    def __init__(self, centres, collapse_epoch):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.centres, self.collapse_epoch = centres, collapse_epoch
        self.rng = np.random.default_rng(7)
        self.drawn = []  # (epoch, features) as sampled, for the hand-fed Tracker

    def training_step(self, batch, i):
        return (self.w * batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def generate(self):
        assert not self.training and not torch.is_grad_enabled()
        modes = np.arange(MODES) if self.current_epoch < self.collapse_epoch else np.arange(3)
        m = modes[self.rng.integers(0, len(modes), 600)]
        x = (self.centres[m] + self.rng.standard_normal((600, D))).astype(np.float32)
        self.drawn.append(x)
        return torch.from_numpy(x)


def test_callback_audits_stops_on_onset_logs_and_matches_a_hand_fed_tracker(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6.0, size=(MODES, D))
    real = (centres[rng.integers(0, MODES, 1200)] + rng.standard_normal((1200, D))).astype(np.float32)
    module = _Gen(centres, collapse_epoch=3)
    alerts = []
    cb = CollapseAuditCallback(real, lambda m: m.generate(), features=True, out_dir=tmp_path / "track",
                               stop_on=["onset_detected>0"], config=FAST, on_alert=alerts.append)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    trainer = pl.Trainer(max_epochs=10, accelerator="cpu", devices=1, logger=pl.loggers.CSVLogger(tmp_path / "logs"), callbacks=[cb],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, data)
    steps = [c["step"] for c in cb.tracker.checkpoints]
    assert steps[:4] == [2, 4, 6, 8]  # two optimiser steps per epoch
    onset = cb.tracker.to_dict()["run"]["onset"]
    assert onset is not None and onset["step"] in (8, 10)  # epoch 3 is the first collapsed one
    assert cb.stopped_at == onset["step"] and steps[-1] == onset["step"]
    assert trainer.current_epoch < 10  # stopped early
    assert any(a["kind"] == "onset" for a in alerts)
    d = json.loads((tmp_path / "track" / "track.json").read_text())
    jsonschema.validate(d, track_schema())
    assert d["gate"]["passed"] is False and (tmp_path / "track" / "track.html").is_file()
    # the logger got the numbers at the audited steps
    rows = list(csv.DictReader(open(next((tmp_path / "logs").rglob("metrics.csv")))))
    logged = {int(r["step"]): float(r["collapse_audit/coverage"]) for r in rows if r.get("collapse_audit/coverage")}
    assert sorted(logged) == steps
    # the same numbers from a Tracker fed the same features at the same steps
    tr = Tracker(real, config=FAST)
    for s, x in zip(steps, module.drawn):
        tr.update(s, features=x)
    for a, b in zip(tr.checkpoints, cb.tracker.checkpoints):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-9, abs=1e-12)
        assert logged[a["step"]] == pytest.approx(a["metrics"]["coverage"], rel=1e-6)


def test_callback_refuses_a_bad_rule_before_training():
    from collapse_audit.errors import UsageError

    rng = np.random.default_rng(0)
    with pytest.raises(UsageError, match="onset_detected"):
        CollapseAuditCallback(rng.standard_normal((100, 4)).astype(np.float32), lambda m: None, stop_on=["onset_detectd>0"])
