"""One cached, locked, atomically written model checkpoint per key: the machinery of
`pretrain.cached_backbone`, for any training function and any model (mixat's stage 1 and
stage 2 GPT-2s, mamba_modulation's Mamba backbone).

`cached_lm(data_dir, namespace, part, key, model, train)` returns a `Backbone` loaded from
`<data_dir>/<namespace>/<part>-<hash of key>.safetensors` when present and intact, else calls
`train()` -> (module, metrics) and writes it, all under the exclusive fcntl lock of
`pretrain.file_lock` (two jobs of a parallel sweep never both train; the second waits, then
loads). The default reader and writer are the small LM's (`pretrain._save` / `_load`: GPT-2
weights); another model passes `load(path) -> (module, metrics)` and `save(path, module, key,
metrics)`, built on `write_checkpoint` / `read_checkpoint` (the same file format: SHA-1 of
every tensor in the metadata; a truncated or altered file is reported, deleted and rebuilt).

`pretrain.cached_backbone` is not rewritten on top of this function: its cache key hashes the
source of `pretrain.py` (and what it imports), so editing that module would invalidate every
cached linearization backbone. This module imports it instead; the key of a checkpoint made
here is the caller's (it should hold the caller's configs, seed and data-code hash).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tasks.base.data import config_hash
from tasks.small_lm.config import BackboneConfig
from tasks.small_lm.pretrain import Backbone, _digest, _load, _save, file_lock

log = logging.getLogger("spectrum")


def checkpoint_path(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any]) -> Path:
    """Return `<data_dir>/<namespace>/<part>-<hash of key>.safetensors`."""
    return Path(data_dir) / namespace / f"{part}-{config_hash(key)}.safetensors"


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], key: dict[str, Any],
                     metrics: dict[str, Any]) -> None:
    """Write `tensors` to `path` atomically (temporary file, then rename) with the SHA-1 of the
    tensors, the metrics and the key in the metadata, and the key beside it as JSON."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    save_file(tensors, str(tmp), metadata={"sha1": _digest(tensors), "metrics": json.dumps(metrics),
                                           "key": json.dumps(key, sort_keys=True, default=str)})
    path.with_suffix(".json").write_text(json.dumps({**key, "metrics": metrics}, indent=2,
                                                    default=str))
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, metrics) of a checkpoint written by `write_checkpoint` (or the small
    LM's `_save`); raise ValueError when it is unreadable or its SHA-1 does not match."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types on a truncated header
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if meta.get("sha1") != _digest(tensors):
        raise ValueError("its SHA-1 does not match the one it was written with")
    return tensors, json.loads(meta.get("metrics", "{}"))


def cached_lm(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any],
              model: BackboneConfig | None,
              train: Callable[[], tuple[torch.nn.Module, dict[str, Any]]],
              load: Callable[[Path], tuple[torch.nn.Module, dict[str, Any]]] | None = None,
              save: Callable[[Path, torch.nn.Module, dict[str, Any], dict[str, Any]], None]
              | None = None) -> Backbone:
    """Return the model of `key` (`seconds`: the load or the training, after the lock was
    acquired): loaded when its checkpoint is present and intact, else trained by `train()` now
    and written (under the file lock; a corrupt file is reported and rebuilt). `load` / `save`
    default to the small LM's GPT-2 reader and writer for `model`."""
    if load is None:
        if model is None:
            raise ValueError("cached_lm needs the small LM's config `model` or a `load` function")
        def load(p: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
            return _load(p, model)
    save = _save if save is None else save
    path = checkpoint_path(data_dir, namespace, part, key)
    asked = time.perf_counter()
    with file_lock(path.with_suffix(".lock")):
        start = time.perf_counter()
        if start - asked > 1.0:
            log.info("%s: waited %.1f s for another job's lock on %s", namespace,
                     start - asked, path)
        if path.exists():
            try:
                lm, metrics = load(path)
                seconds = time.perf_counter() - start
                log.info("%s: loaded the cached %s %s in %.2f s", namespace, part, path, seconds)
                return Backbone(lm, True, seconds, path, metrics)
            except ValueError as err:
                log.warning("%s: the cached %s %s is corrupt (%s): rebuilding it", namespace,
                            part, path, err)
                path.unlink(missing_ok=True)
        log.info("%s: training the %s -> %s", namespace, part, path)
        lm, metrics = train()
        save(path, lm, key, metrics)
    seconds = time.perf_counter() - start
    log.info("%s: trained the %s in %.1f s", namespace, part, seconds)
    return Backbone(lm.eval(), False, seconds, path, metrics)
