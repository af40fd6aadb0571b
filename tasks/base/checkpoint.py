"""The one cache of trained models: a checkpoint per key, locked, atomic and checked.

`cached_module(data_dir, namespace, part, key, train, load, save)` returns a `Backbone` loaded
from `<data_dir>/<namespace>/<part>-<hash of key>.safetensors` when present and intact, else
calls `train()` -> (module, metrics) and writes it, all under an exclusive fcntl lock on
`<file>.lock`: two jobs of a parallel sweep never both train, and never read a half-written
file (the second waits, then loads). The file is a safetensors file of the module's tensors
whose metadata holds the generating key, the SHA-1 of every tensor (a truncated or altered file
fails the check, is reported in the log, deleted and rebuilt) and the training metrics. The key
should hold the caller's configs, seed and data-code hash (`tasks.base.data.data_code_hash`),
so that a change of either trains anew. Used by the small LM (linearization, mixat) and by
mamba_modulation's backbone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tasks.base.data import config_hash

log = logging.getLogger("spectrum")

Trained = tuple[torch.nn.Module, dict[str, Any]]


@dataclass
class Backbone:
    """A trained model: the module (eval mode), whether it came from the cache, the seconds the
    load or the training took (after the lock was acquired), the checkpoint path and the
    training metrics."""

    lm: torch.nn.Module
    loaded: bool
    seconds: float
    path: Path
    metrics: dict[str, Any]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (created, with its folder, if needed) for the
    block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """Return the SHA-1 of the tensors' names, dtypes, shapes and bytes (sorted by name)."""
    h = hashlib.sha1()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def write_checkpoint(path: Path, tensors: dict[str, torch.Tensor], key: dict[str, Any],
                     metrics: dict[str, Any]) -> None:
    """Write `tensors` to `path` atomically (temporary file, then rename) with their SHA-1, the
    metrics and the key in the metadata, and the key with the metrics beside it as JSON."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    save_file(tensors, str(tmp), metadata={
        "sha1": tensor_digest(tensors), "metrics": json.dumps(metrics),
        "key": json.dumps(key, sort_keys=True, default=str)})
    path.with_suffix(".json").write_text(json.dumps({**key, "metrics": metrics}, indent=2,
                                                    default=str))
    os.replace(tmp, path)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return (tensors, metrics) of a checkpoint written by `write_checkpoint`; raise ValueError
    when it is unreadable or its tensors do not match the SHA-1 they were written with."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    except Exception as err:  # safetensors raises its own error types on a truncated header
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if meta.get("sha1") != tensor_digest(tensors):
        raise ValueError("its SHA-1 does not match the one it was written with")
    return tensors, json.loads(meta.get("metrics", "{}"))


def checkpoint_path(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any]) -> Path:
    """Return `<data_dir>/<namespace>/<part>-<hash of key>.safetensors`."""
    return Path(data_dir) / namespace / f"{part}-{config_hash(key)}.safetensors"


def save_state(path: Path, module: torch.nn.Module, key: dict[str, Any],
               metrics: dict[str, Any]) -> None:
    """The default writer of `cached_module`: the module's whole state_dict."""
    write_checkpoint(path, module.state_dict(), key, metrics)


def cached_module(data_dir: str | Path, namespace: str, part: str, key: dict[str, Any],
                  train: Callable[[], Trained], load: Callable[[Path], Trained],
                  save: Callable[[Path, torch.nn.Module, dict[str, Any], dict[str, Any]], None]
                  = save_state) -> Backbone:
    """Return the model of `key`: `load(path)` of its checkpoint when present and intact, else
    `train()` now and `save(path, module, key, metrics)` (under the file lock; a checkpoint
    that `load` rejects with ValueError is reported, deleted and rebuilt)."""
    path = checkpoint_path(data_dir, namespace, part, key)
    asked = time.perf_counter()
    with file_lock(path.with_suffix(".lock")):
        start = time.perf_counter()
        if start - asked > 1.0:
            log.info("%s: waited %.1f s for another job's lock on %s", namespace,
                     start - asked, path)
        if path.exists():
            try:
                module, metrics = load(path)
                seconds = time.perf_counter() - start
                log.info("%s: loaded the cached %s %s in %.2f s", namespace, part, path, seconds)
                return Backbone(module.eval(), True, seconds, path, metrics)
            except ValueError as err:
                log.warning("%s: the cached %s %s is corrupt (%s): rebuilding it", namespace,
                            part, path, err)
                path.unlink(missing_ok=True)
        log.info("%s: training the %s -> %s", namespace, part, path)
        module, metrics = train()
        save(path, module, key, metrics)
    seconds = time.perf_counter() - start
    log.info("%s: trained the %s in %.1f s", namespace, part, seconds)
    return Backbone(module.eval(), False, seconds, path, metrics)
