"""Carry Lightning's epoch aggregates (`self.log(..., on_epoch=True)`) across a mid-epoch resume.

Lightning keeps the running sum of every epoch-level metric of the current epoch in memory
only, so a fit resumed mid-epoch would report the mean over the batches after the restart.
`epoch_sums` reads the running states for the checkpoint; `seed_epoch_sums` registers each
metric again before the first resumed batch logs, with the same arguments, and puts its
running value (and summed batch size, for means) back, so the sum continues in the same order
as an uninterrupted run (bit-identical).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


def _results(trainer: pl.Trainer) -> Any:
    """Return the training epoch loop's result collection (Lightning's running metrics)."""
    return trainer.fit_loop.epoch_loop._results


def epoch_sums(trainer: pl.Trainer) -> dict[str, dict[str, Any]]:
    """Return {key: logging arguments and running state} of every tensor metric being
    aggregated over the current training epoch."""
    out = {}
    for key, metric in _results(trainer).items():
        meta = metric.meta
        if not metric.is_tensor or not meta.on_epoch or metric.has_reset:
            continue
        out[key] = {
            "fx": meta.fx, "name": meta.name, "prog_bar": meta.prog_bar, "logger": meta.logger,
            "on_step": meta.on_step, "reduce_fx": meta.reduce_fx.__name__,
            "enable_graph": meta.enable_graph, "add_dataloader_idx": meta.add_dataloader_idx,
            "metric_attribute": meta.metric_attribute, "sync_dist": meta.sync.should,
            "rank_zero_only": meta.sync.rank_zero_only,
            "value": metric.value.detach().cpu().clone(),
            "batch_size": (metric.cumulated_batch_size.detach().cpu().clone()
                           if meta.is_mean_reduction else None),
        }
    return out


def seed_epoch_sums(trainer: pl.Trainer, saved: dict[str, dict[str, Any]]) -> None:
    """Register every saved metric in the running collection and restore its running state."""
    results = _results(trainer)
    for key, item in saved.items():
        value = item["value"]
        results.log(item["fx"], item["name"], torch.zeros((), dtype=value.dtype),
                    prog_bar=item["prog_bar"], logger=item["logger"], on_step=item["on_step"],
                    on_epoch=True, reduce_fx=getattr(torch, item["reduce_fx"]),
                    enable_graph=item["enable_graph"],
                    add_dataloader_idx=item["add_dataloader_idx"], batch_size=1,
                    sync_dist=item["sync_dist"], sync_dist_fn=trainer.strategy.reduce,
                    metric_attribute=item["metric_attribute"],
                    rank_zero_only=item["rank_zero_only"])
        metric = results[key]
        device = metric.value.device
        metric.value = value.to(device)
        if item["batch_size"] is not None:
            metric.cumulated_batch_size = item["batch_size"].to(device)
    if saved:  # as after any batch but an epoch's first: the first log() must not reset them
        trainer._logger_connector._first_loop_iter = False
