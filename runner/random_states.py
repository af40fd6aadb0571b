"""Every random stream of a run, saved in its checkpoints and restored on resume.

The streams: torch's global CPU generator, each CUDA device's generator (once CUDA is in use),
numpy's and python's global generators, and every `torch.Generator` that the task's module or
data module holds (found by walking their attributes, e.g. farad's reference-image generator).
The runner puts `RandomStates` first among the callbacks. The checkpoint is written at the
start of a train batch (runner/checkpointing.py), so the saved states are those that batch is
about to use; on resume they are put back at the start of that same batch, after whatever the
restart itself drew (seeding, building the loader), and training continues on the very streams
an uninterrupted run would have used.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn

MAX_DEPTH = 4  # attribute levels searched below the module and the data module


def owned_generators(root: Any, prefix: str, depth: int = MAX_DEPTH
                     ) -> Iterator[tuple[str, torch.Generator]]:
    """Yield (dotted attribute path, generator) for every torch.Generator reachable from `root`
    through attributes of nn.Modules and of objects defined in `tasks.*` / `callbacks.*`."""
    seen: set[int] = set()
    stack = [(prefix, root, depth)]
    while stack:
        path, obj, left = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            yield path, obj
            continue
        if left == 0 or not _searchable(obj):
            continue
        children = dict(vars(obj))
        if isinstance(obj, nn.Module):
            children.update(obj._modules)
        for name in sorted(children, reverse=True):
            if not name.startswith("__"):
                stack.append((f"{path}.{name}", children[name], left - 1))


def _searchable(obj: Any) -> bool:
    """Return whether to look into `obj`'s attributes (modules and the project's own objects)."""
    if isinstance(obj, (nn.Module, pl.LightningDataModule)):
        return True
    module = type(obj).__module__ or ""
    return hasattr(obj, "__dict__") and module.startswith(("tasks.", "callbacks."))


def capture(module: Any, datamodule: Any) -> dict[str, Any]:
    """Return the state of every random stream of the run (see the module docstring)."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
        "generators": {},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for root, name in ((module, "module"), (datamodule, "datamodule")):
        if root is not None:
            for path, gen in owned_generators(root, name):
                state["generators"][path] = gen.get_state()
    return state


def _numpy_state() -> tuple[Any, ...]:
    """Return numpy's global state with its key array as a tensor (loadable weights-only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return kind, torch.from_numpy(keys.copy()), int(pos), int(has_gauss), float(gauss)


def restore(state: dict[str, Any], module: Any, datamodule: Any) -> list[str]:
    """Put every saved stream back; return the paths of saved generators the run no longer has."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    found = {}
    for root, name in ((module, "module"), (datamodule, "datamodule")):
        if root is not None:
            found.update(owned_generators(root, name))
    missing = []
    for path, gen_state in state["generators"].items():
        if path in found:
            found[path].set_state(gen_state)
        else:
            missing.append(path)
    return missing


class RandomStates(pl.Callback):
    """Save every random stream with each checkpoint; on resume, restore them at the start of
    the first train batch (see the module docstring)."""

    def __init__(self) -> None:
        self._trainer: pl.Trainer | None = None
        self._pending: dict[str, Any] | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        if trainer is None:
            return {}
        return capture(trainer.lightning_module, trainer.datamodule)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state or None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        missing = restore(state, pl_module, trainer.datamodule)
        if missing:
            raise RuntimeError(f"the checkpoint holds random generators this run lacks: "
                               f"{', '.join(missing)} (was the task's code changed?)")
