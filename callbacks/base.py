"""The shared machinery of the spectral callbacks: schedule, cost budget, rank 0, mode restore.

A subclass sets `probe` and implements `compute(trainer, pl_module) -> (arrays, scalars)`;
`arrays` go to `spectra/<probe>.npz` (and W&B histograms), `scalars` to every logger as
`spectra/<probe>/<name>`. Snapshots are taken at the start of training, on the schedule, and at
the end; with `every_n_epochs` set, at the end of every N-th training epoch instead of on the
step schedule. The end plots and the summaries come when the last probe of the trainer has taken
its last snapshot, so that a plot drawn in the background slows none of them. The callback
measures its own wall time (`spectra/<probe>/wall_ms`); when its total
exceeds `budget_frac` of the training time (None: no budget) it doubles the spacing between snapshots and says so
once. A matrix with NaN/Inf gives a logged warning and a skipped snapshot, never a crash.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from callbacks.sink import SpectrumSink

log = logging.getLogger("spectrum.callbacks")
SCHEDULES = ("linear", "log")


def log_spaced(step: int, factor: float) -> bool:
    """Return whether `step` is in {0} ∪ {⌊factor^k⌋ : k ≥ 0} (log-spaced snapshot steps)."""
    if step <= 1:
        return True
    k = math.floor(math.log(step) / math.log(factor))
    return any(math.floor(factor ** j) == step for j in (k - 1, k, k + 1))


class SpectralCallback(pl.Callback):
    """Base class: see the module docstring."""

    probe = "spectrum"
    # scalar names (fnmatch patterns) of the last snapshot that the run's final table shows
    headline: tuple[str, ...] = ()
    # the default spacing of snapshots, set per probe from its cost (a snapshot of a costly probe
    # is spread over more training steps); `every_n_steps=` overrides it
    default_every_n_steps = 50
    # attributes (tensors or None) a checkpoint carries beside the schedule, e.g. a reference
    # kernel from the first snapshot: a resumed run compares against the same one
    carried: tuple[str, ...] = ()

    def __init__(self, every_n_steps: int | None = None, schedule: str = "linear",
                 log_factor: float = 1.5,
                 layer_filter: str | None = None, budget_frac: float | None = 0.05,
                 histograms: bool = True, plot: bool = True, plot_in_background: bool = False,
                 every_n_epochs: int | None = None) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule={schedule!r} is not allowed; choose one of: "
                             + ", ".join(SCHEDULES))
        if every_n_steps is None:
            every_n_steps = self.default_every_n_steps
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps={every_n_steps} must be >= 1")
        if every_n_epochs is not None and every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 1 or null (step schedule)")
        if budget_frac is not None and not 0 < budget_frac <= 1:
            raise ValueError(f"budget_frac={budget_frac} must be in (0, 1] or null (no budget)")
        self.every_n_steps, self.schedule, self.log_factor = every_n_steps, schedule, log_factor
        self.every_n_epochs = every_n_epochs
        self.layer_filter, self.budget_frac = layer_filter, budget_frac
        self.histograms, self.plot_at_end = histograms, plot
        self.plot_in_background = plot_in_background
        self._plot_job: tuple[Any, Any] | None = None
        self.sink: SpectrumSink | None = None
        self.disabled_reason: str | None = None
        self._warned: set[str] = set()
        self._own_s = 0.0  # wall time of prepare, snapshots, writing and the end plot (the budget's count)
        self._plot_s = 0.0  # the end plot's share of it
        self._start = 0.0
        self._min_gap = 0
        self._last_step: int | None = None
        self._prev_step: int | None = None
        self._train_s = 0.0  # training time of earlier attempts (a resumed run's budget)
        self._probe_set: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._resumed = False
        self._ended = False  # took its last snapshot in this fit; finish() plots and summarises

    # ------------------------------------------------------------------ to implement
    def compute(self, trainer: pl.Trainer, pl_module: pl.LightningModule
                ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """Return (arrays, scalars) for the current state of `pl_module`."""
        raise NotImplementedError

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fix probe inputs etc. at the start of training (default: nothing)."""

    # ------------------------------------------------------------------ schedule
    def scheduled(self, step: int) -> bool:
        """Return whether `step` is on the schedule, before the budget's spacing."""
        if self.schedule == "log":
            return log_spaced(step, self.log_factor)
        return step % self.every_n_steps == 0

    def due(self, step: int) -> bool:
        """Return whether to take a snapshot at `step` (schedule and budget spacing)."""
        if self.every_n_epochs is not None or not self.scheduled(step):
            return False
        return self._last_step is None or step - self._last_step >= max(1, self._min_gap)

    def _check_budget(self, step: int) -> None:
        if self.budget_frac is None or self._prev_step is None:
            return  # no budget, or the first snapshot of this fit (nothing to compare with)
        elapsed = time.perf_counter() - self._start - self._own_s
        if elapsed <= 0 or self._own_s <= self.budget_frac * elapsed:
            return
        spacing = step - self._prev_step
        gap = max(2 * self._min_gap, 2 * max(1, spacing))
        if gap != self._min_gap:  # the budget doing its job: information, said at each change
            log.info(f"spectra/{self.probe} used {100 * self._own_s / elapsed:.1f}% of training "
                     f"time so far (budget {100 * self.budget_frac:g}%): snapshots are now at "
                     f"least {gap} steps apart" + ("" if not self._min_gap
                                                   else f" (were {self._min_gap})"))
        self._min_gap = gap

    # ------------------------------------------------------------------ helpers
    def warn_once(self, key: str, message: str) -> None:
        """Log `message` as a warning the first time `key` is seen."""
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message)

    def disable(self, reason: str) -> None:
        """Turn this callback off for the run, saying why once (at INFO: a probe that does not
        apply to a model, e.g. features of a module without forward(), is no fault)."""
        self.disabled_reason = reason
        if "disabled" not in self._warned:
            self._warned.add("disabled")
            log.info(f"spectra/{self.probe} is off for this run: {reason}")

    # ------------------------------------------------------------------ checkpoint state
    @property
    def state_key(self) -> str:
        """Return the key of this callback's state in a checkpoint: its class and settings
        (two probes of one class with other settings keep separate states)."""
        if getattr(self, "_state_key", None) is None:  # fixed at first use (the trainer's set-up)
            names = {name for klass in type(self).__mro__ if "__init__" in vars(klass)
                     for name in inspect.signature(klass.__init__).parameters}
            settings = {k: v for k, v in sorted(vars(self).items()) if k in names
                        and isinstance(v, (int, float, str, bool, type(None)))}
            self._state_key = self._generate_state_key(**settings)
        return self._state_key

    def state_dict(self) -> dict[str, Any]:
        """Return the schedule's state (saved in each checkpoint: a resumed run keeps it)."""
        began = self._start or time.perf_counter()
        return {"last_step": self._last_step, "prev_step": self._prev_step,
                "min_gap": self._min_gap, "own_s": self._own_s,
                "train_s": time.perf_counter() - began, "warned": sorted(self._warned),
                "disabled": self.disabled_reason, "probe_set": _to_cpu(self._probe_set),
                "carried": {name: _to_cpu(getattr(self, name)) for name in self.carried}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the schedule of the run this checkpoint came from."""
        self._last_step, self._prev_step = state["last_step"], state["prev_step"]
        self._min_gap, self._own_s = int(state["min_gap"]), float(state["own_s"])
        self._train_s, self._warned = float(state["train_s"]), set(state["warned"])
        self.disabled_reason = state["disabled"]
        self._probe_set = state["probe_set"]
        self._carried = state["carried"]
        self._resumed = True

    def probe_set(self, trainer: pl.Trainer, pl_module: pl.LightningModule, n: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the fixed probe set (x, y) on the module's device: `probe_inputs` at the
        first start, the checkpoint's own on resume (a resumed loader starts mid-epoch)."""
        if self._probe_set is None:
            self._probe_set = _to_cpu(probe_inputs(trainer, pl_module, n))
        x, y = self._probe_set
        device = pl_module.device
        return x.to(device), (None if y is None else y.to(device))

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" and trainer.is_global_zero:
            self.sink = SpectrumSink(trainer.default_root_dir, self.probe)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter() - self._train_s
        if not self._resumed:
            self._prev_step = None
        if not trainer.is_global_zero or self.disabled_reason:
            return
        began = time.perf_counter()
        try:
            self.prepare(trainer, pl_module)
        except (NotImplementedError, AttributeError, TypeError, ValueError) as err:
            self.disable(f"{type(err).__name__}: {err}")
        self._own_s += time.perf_counter() - began  # the probe set and its first forward count
        if not self._resumed:  # a resumed run took its snapshots up to the checkpoint already
            self.snapshot(trainer, pl_module, force=True)
            return
        for name, value in getattr(self, "_carried", {}).items():
            setattr(self, name, None if value is None else value.to(pl_module.device))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.snapshot(trainer, pl_module)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.every_n_epochs is None or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        step = int(trainer.global_step)
        spaced = self._last_step is None or step - self._last_step >= max(1, self._min_gap)
        if spaced and self._last_step != step:
            self.snapshot(trainer, pl_module, force=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self._last_step != trainer.global_step:
            self.snapshot(trainer, pl_module, force=True)
        self._ended = self.sink is not None
        probes = [cb for cb in trainer.callbacks if isinstance(cb, SpectralCallback)]
        probes += [] if self in probes else [self]
        if all(cb._ended or cb.sink is None for cb in probes):  # the last probe's last snapshot
            for cb in probes:
                cb.finish()

    def finish(self) -> None:
        """Draw the end plot and write the summary. Called for every probe of the trainer once
        the last of them has taken its last snapshot: a plot drawn in the background then
        competes with no probe's last snapshot for the CPU, and it still overlaps the rest of
        the run (the paper metrics, the last checkpoint, the test stage)."""
        if not self._ended:
            return
        self._ended = False
        plot = None
        if self.plot_at_end:
            began = time.perf_counter()
            if self.plot_in_background:
                self._plot_job = self.sink.plot_in_background()
                plot = self._plot_job[1] if self._plot_job else None
            else:
                plot = self.sink.plot()
            self._plot_s = time.perf_counter() - began
            self._own_s += self._plot_s
        self.sink.write_summary(self.headline, plot, self._own_s, off=self.disabled_reason)

    def wait_for_plot(self, timeout: float = 120.0) -> None:
        """Wait for a plot drawn in the background (`plot_in_background`); when it failed, say
        so and drop its path from the summary. A no-op when none is being drawn."""
        job, self._plot_job = self._plot_job, None
        if job is None or job[0] is None:
            return
        process, path = job
        began = time.perf_counter()
        process.join(timeout)
        if process.is_alive():
            process.kill()
        self._own_s += time.perf_counter() - began
        if process.exitcode != 0 or not path.exists():
            self.warn_once("plot", f"spectra/{self.probe}: the plot {path} was not drawn "
                                   f"(exit code {process.exitcode}); the spectra are in "
                                   f"{self.sink.path}")
            path = None
        self.sink.write_summary(self.headline, path, self._own_s, off=self.disabled_reason)

    # ------------------------------------------------------------------ one snapshot
    def snapshot(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                 force: bool = False) -> None:
        """Compute and record the spectra now if due (or `force`), on global rank 0 only."""
        step = int(trainer.global_step)
        if not trainer.is_global_zero or self.disabled_reason or self.sink is None:
            return
        if not force and not self.due(step):
            return
        modes = {m: m.training for m in pl_module.modules()}
        began = time.perf_counter()
        try:
            arrays, scalars = self.compute(trainer, pl_module)
        except ValueError as err:  # non-finite input or an ill-posed matrix: warn, keep training
            self.warn_once(f"value:{err}", f"spectra/{self.probe} skipped step {step}: {err}")
            return
        except (NotImplementedError, RuntimeError) as err:  # e.g. no double backward for an op
            self.disable(f"{type(err).__name__}: {str(err).splitlines()[0]}")
            return
        finally:
            restore_modes(modes)
        if self.disabled_reason:
            return
        scalars["wall_ms"] = 1000.0 * (time.perf_counter() - began)  # the spectra alone
        self.sink.record(step, arrays, scalars, trainer.loggers, histograms=self.histograms)
        self._own_s += time.perf_counter() - began  # the budget counts the writing too
        self._prev_step, self._last_step = self._last_step, step
        self._check_budget(step)


def _to_cpu(value: Any) -> Any:
    """Return `value` with every tensor in it (a tensor, a tuple of them, None) on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    return value


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Put every module back in the train/eval mode recorded in `modes` ({module: training})."""
    for module, training in modes.items():
        module.train(training)


def require_forward(pl_module: pl.LightningModule) -> None:
    """Raise NotImplementedError when the module defines no `forward` (no inputs to probe)."""
    if type(pl_module).forward is pl.LightningModule.forward:
        raise NotImplementedError(f"{type(pl_module).__name__} defines no forward()")


def probe_inputs(trainer: pl.Trainer, pl_module: pl.LightningModule, n: int
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return a fixed probe set (x, y) of at most `n` samples.

    Taken from `pl_module.spectral_probe_batch()` when the module defines it, else from the first
    batches of the data module's train loader (a batch is `x`, `(x, y, ...)` or `{"x", "y"}`);
    on the module's device either way.
    """
    require_forward(pl_module)
    device = pl_module.device
    if hasattr(pl_module, "spectral_probe_batch"):
        batch = pl_module.spectral_probe_batch()
        x, y = _split_batch(batch)
        return x[:n].to(device), (y[:n].to(device) if y is not None else None)
    loader = trainer.train_dataloader
    if loader is None and trainer.datamodule is not None:
        loader = trainer.datamodule.train_dataloader()
    if loader is None:
        raise AttributeError("no train dataloader to draw probe inputs from")
    xs, ys, count = [], [], 0
    for batch in loader:
        x, y = _split_batch(batch)
        xs.append(x)
        ys.append(y)
        count += x.shape[0]
        if count >= n:
            break
    x = torch.cat(xs)[:n]
    y = torch.cat(ys)[:n] if all(t is not None for t in ys) else None
    return x.to(device), (y.to(device) if y is not None else None)


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, dict):
        return batch["x"], batch.get("y")
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        y = batch[1] if len(batch) > 1 and isinstance(batch[1], torch.Tensor) else None
        return batch[0], y
    raise TypeError(f"cannot find inputs in a batch of type {type(batch).__name__}")
