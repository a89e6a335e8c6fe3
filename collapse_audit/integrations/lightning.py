"""A PyTorch Lightning callback that tracks a run for mode collapse while it trains.

    from collapse_audit.integrations.lightning import CollapseAuditCallback

    cb = CollapseAuditCallback(real=real_features_or_folder, sample=lambda module: module.generate(512),
                               every_n_epochs=1, out_dir="track-out", stop_on=["onset_detected>0"])
    Trainer(callbacks=[cb]).fit(model)

At the end of every ``every_n_epochs``-th training epoch (or validation epoch,
``hook="validation"``) on global rank zero, ``sample(pl_module)`` is called in
``torch.no_grad()`` with the module in eval mode; what it returns goes to
:meth:`collapse_audit.Tracker.update` at ``trainer.global_step``, as images (a
uint8/float image batch, PIL images) or, with ``features=True``, as an (M, D)
feature array in the real set's embedding. New alerts are printed; the
checkpoint's numbers go to the trainer's loggers under ``collapse_audit/``;
``track.json`` and ``track.html`` are rewritten in ``out_dir`` after each
checkpoint; when a ``stop_on`` gate rule fails, ``trainer.should_stop`` is set
so the run ends after this epoch.

Lightning is not a dependency of collapse-audit: this module imports it
(``lightning.pytorch``, else ``pytorch_lightning``) and is only imported when
you import it.
"""
from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

try:  # the unified package first, then the standalone one
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on what is installed
    try:
        import pytorch_lightning as pl
    except ImportError as e:
        raise ImportError("collapse_audit.integrations.lightning needs PyTorch Lightning: pip install lightning") from e

from .. import gate as G
from ..config import TrackConfig
from ..errors import UsageError
from ..track import Tracker

__all__ = ["CollapseAuditCallback"]

#: The per-checkpoint numbers sent to the trainer's loggers (key in the checkpoint's ``metrics``).
LOGGED = ("coverage", "recall", "precision", "density", "fid", "kid", "duplicate_fraction")


class CollapseAuditCallback(pl.Callback):
    """Audit samples of the module every few epochs against one real set (see the module docstring).

    Parameters
    ----------
    real : what :class:`~collapse_audit.Tracker` takes (features, FeatureSet, folder, ``.npz``), or a ready Tracker.
    sample : ``sample(pl_module)`` -> an image batch, or features with ``features=True``.
    every_n_epochs : audit every n-th epoch (the last one of ``max_epochs`` too).
    hook : ``"train"`` (``on_train_epoch_end``, for GANs without a validation loop) or ``"validation"``.
    out_dir : where ``track.json`` / ``track.html`` are rewritten after each checkpoint (None: not written).
    stop_on : gate rules over the run (track aliases, e.g. ``"onset_detected>0"``); a failure stops training.
    config : :class:`~collapse_audit.TrackConfig` for a new Tracker.
    on_alert : called with each new alert dict (default: printed to stderr).
    """

    def __init__(self, real, sample: Callable[[Any], Any], *, every_n_epochs: int = 1, hook: str = "train",
                 features: bool = False, out_dir=None, html: bool = True, stop_on: Sequence[str] = (),
                 config: TrackConfig | None = None, on_alert: Callable[[dict], Any] | None = None):
        super().__init__()
        if hook not in ("train", "validation"):
            raise UsageError(f"hook={hook!r}: use 'train' or 'validation'")
        if int(every_n_epochs) < 1:
            raise UsageError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.rules = [G.parse_rule(r, aliases=G.TRACK_ALIASES) for r in stop_on]  # bad rules fail here, before training
        self.tracker = real if isinstance(real, Tracker) else Tracker(real, config=config, on_alert=on_alert or _print_alert)
        self.sample, self.every, self.hook, self.features = sample, int(every_n_epochs), hook, bool(features)
        self.out_dir, self.html = out_dir, bool(html)
        self.stopped_at: int | None = None  # the global step at which a stop_on rule failed

    # Lightning hooks
    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.hook == "train":
            self._maybe_audit(trainer, pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.hook == "validation" and not trainer.sanity_checking:
            self._maybe_audit(trainer, pl_module)

    # the work
    def _due(self, trainer) -> bool:
        e = trainer.current_epoch + 1
        last = trainer.max_epochs is not None and trainer.max_epochs > 0 and e >= trainer.max_epochs
        return e % self.every == 0 or last

    def _maybe_audit(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or not self._due(trainer):
            return
        cps = self.tracker.checkpoints
        step = int(trainer.global_step)
        if cps and step <= cps[-1]["step"]:
            return  # no optimiser step since the last audit (e.g. a validation-only epoch)
        import torch

        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                x = self.sample(pl_module)
        finally:
            pl_module.train(was_training)
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if self.features:
                x = x.float().numpy()
        found = self.tracker.update(step, **({"features": x} if self.features else {"images": x}),
                                    name=f"epoch {trainer.current_epoch} (step {step})")
        m = found["checkpoint"]["metrics"]
        logged = {f"collapse_audit/{k}": float(m[k]) for k in LOGGED if m.get(k) is not None}
        logged["collapse_audit/clusters_covered"] = float(found["checkpoint"]["clusters"]["n_covered"])
        for lg in trainer.loggers:
            lg.log_metrics(logged, step=step)
        if self.out_dir is not None:
            self.tracker.write(self.out_dir, html=self.html, gate=self.tracker.check(self.rules) if self.rules else None)
        if self.rules and not self.tracker.check(self.rules).passed:
            self.stopped_at = step
            trainer.should_stop = True


def _print_alert(a: dict) -> None:
    print(f"collapse-audit {'ALERT' if a['severity'] == 'error' else 'warning'}: {a['message']}", file=sys.stderr)
