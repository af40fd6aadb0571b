"""A cached small LM (GPT-2 weights) trained by any function: mixat's stage 1 and stage 2.

`cached_lm(data_dir, namespace, part, key, model, train)` is `tasks.base.checkpoint
.cached_module` with the small LM's reader and writer (`pretrain._load` / `_save`): loaded from
`<data_dir>/<namespace>/<part>-<hash of key>.safetensors` when present and intact, else
`train()` -> (GPT2LMHeadModel, metrics) and written, under the file lock. The key is the
caller's (it should hold the caller's configs, seed and data-code hash).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tasks.base.checkpoint import Backbone, cached_module
from tasks.small_lm.config import BackboneConfig
from tasks.small_lm.pretrain import _load, _save


def cached_lm(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any],
              model: BackboneConfig,
              train: Callable[[], tuple[torch.nn.Module, dict[str, float]]]) -> Backbone:
    """Return the small LM of `key` (`seconds`: the load or the training, after the lock was
    acquired): loaded when its checkpoint is present and intact, else trained by `train()` now
    and written (a corrupt file is reported and rebuilt)."""
    return cached_module(data_dir, namespace, part, key, train, lambda path: _load(path, model),
                         _save)
