"""One cached, locked, atomically written LM checkpoint per key: the machinery of
`pretrain.cached_backbone`, for any training function (mixat's stage 1 and stage 2).

`cached_lm(data_dir, namespace, part, key, model, train)` returns a `Backbone` loaded from
`<data_dir>/<namespace>/<part>-<hash of key>.safetensors` when present and intact, else calls
`train()` -> (GPT2LMHeadModel, metrics) and writes it, all under the exclusive fcntl lock of
`pretrain.file_lock` (two jobs of a parallel sweep never both train; the second waits, then
loads). Writing, reading and the corruption check (SHA-1 of every tensor in the metadata; a
truncated or altered file is reported, deleted and rebuilt) are `pretrain._save` / `_load`.

`pretrain.cached_backbone` is not rewritten on top of this function: its cache key hashes the
source of `pretrain.py` (and what it imports), so editing that module would invalidate every
cached linearization backbone. This module imports it instead; the key of a checkpoint made
here is the caller's (it should hold the caller's configs, seed and data-code hash).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tasks.base.data import config_hash
from tasks.small_lm.config import BackboneConfig
from tasks.small_lm.pretrain import Backbone, _load, _save, file_lock

log = logging.getLogger("spectrum")


def checkpoint_path(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any]) -> Path:
    """Return `<data_dir>/<namespace>/<part>-<hash of key>.safetensors`."""
    return Path(data_dir) / namespace / f"{part}-{config_hash(key)}.safetensors"


def cached_lm(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any],
              model: BackboneConfig,
              train: Callable[[], tuple[torch.nn.Module, dict[str, float]]]) -> Backbone:
    """Return the LM of `key` (`seconds`: the load or the training, after the lock was
    acquired): loaded when its checkpoint is present and intact, else trained by `train()` now
    and written (under the file lock; a corrupt file is reported and rebuilt)."""
    path = checkpoint_path(data_dir, namespace, part, key)
    asked = time.perf_counter()
    with file_lock(path.with_suffix(".lock")):
        start = time.perf_counter()
        if start - asked > 1.0:
            log.info("%s: waited %.1f s for another job's lock on %s", namespace,
                     start - asked, path)
        if path.exists():
            try:
                lm, metrics = _load(path, model)
                seconds = time.perf_counter() - start
                log.info("%s: loaded the cached %s %s in %.2f s", namespace, part, path, seconds)
                return Backbone(lm, True, seconds, path, metrics)
            except ValueError as err:
                log.warning("%s: the cached %s %s is corrupt (%s): rebuilding it", namespace,
                            part, path, err)
                path.unlink(missing_ok=True)
        log.info("%s: training the %s -> %s", namespace, part, path)
        lm, metrics = train()
        _save(path, lm, key, metrics)
    seconds = time.perf_counter() - start
    log.info("%s: trained the %s in %.1f s", namespace, part, seconds)
    return Backbone(lm.eval(), False, seconds, path, metrics)
