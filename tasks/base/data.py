"""The data-module base of every task and its one cache.

A task's data is a dict of tensors that a pure function of (generating config, seed) builds.
`cached_tensors` stores it as one safetensors file, `<data_dir>/<task>/<part>-<hash>.safetensors`,
where the hash covers the generating config *and* the source of the task's data code (the
module of the data class and every `tasks.*` module it uses, transitively), so a change of
either rebuilds and nothing is ever versioned by hand. A dict of tensors of any shapes and
dtypes round-trips exactly (no converter per task), loads memory-mapped, and is written to a
temporary file renamed into place, so parallel jobs building the same draw both end with one
complete copy.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import types
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

Tensors = dict[str, torch.Tensor]


def _task_modules(root: types.ModuleType) -> list[types.ModuleType]:
    """Return `root` and every `tasks.*` module its globals reach, transitively, sorted by name."""
    seen: dict[str, types.ModuleType] = {}
    stack = [root]
    while stack:
        module = stack.pop()
        if module.__name__ in seen:
            continue
        seen[module.__name__] = module
        for value in vars(module).values():
            if isinstance(value, types.ModuleType):
                name = value.__name__
            else:
                name = getattr(value, "__module__", None)
                if not isinstance(name, str):
                    continue
            if name.startswith("tasks.") and name not in seen and name in sys.modules:
                stack.append(sys.modules[name])
    return [seen[k] for k in sorted(seen)]


def data_code_hash(obj: type | types.ModuleType | Callable[..., Any]) -> str:
    """Return a 16-hex SHA-1 of the source of `obj`'s module and the `tasks.*` modules it uses."""
    root = obj if isinstance(obj, types.ModuleType) else sys.modules[obj.__module__]
    digest = hashlib.sha1()
    for module in _task_modules(root):
        digest.update(module.__name__.encode())
        digest.update(inspect.getsource(module).encode())
    return digest.hexdigest()[:16]


def config_hash(key: dict[str, Any]) -> str:
    """Return a 16-hex SHA-1 of the JSON form of `key` (sorted keys; enums as their values)."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_tensors(data_dir: str | Path, namespace: str, key: dict[str, Any],
                   build: Callable[[], Tensors], part: str = "draw") -> Tensors:
    """Return the tensors for `key` from `<data_dir>/<namespace>/<part>-<hash of key>.safetensors`,
    calling `build()` and writing the file first when it is absent."""
    from safetensors.torch import load_file, save_file

    folder = Path(data_dir) / namespace
    path = folder / f"{part}-{config_hash(key)}.safetensors"
    if not path.exists():
        tensors = {name: t.detach().cpu().contiguous() for name, t in build().items()}
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        save_file(tensors, str(tmp), metadata={"generating_config": json.dumps(
            key, sort_keys=True, default=str)})
        path.with_suffix(".json").write_text(json.dumps(key, indent=2, default=str))
        os.replace(tmp, path)  # atomic: a concurrent job's identical copy is simply replaced
    return load_file(str(path))


class TensorDataModule(pl.LightningDataModule):
    """Base of every task's data module: `build()` returns the draw as a dict of tensors, made
    once per (generating config, seed, data code) and reloaded from the cache afterwards.

    Subclasses implement `generating_config()` (the parameters the draw depends on; the seed is
    added here) and `build()`, and may derive views in `on_tensors()`. Other cached parts (e.g.
    a simulation of the drawn network) use `cached`. The cache folder is the task's name.
    """

    def __init__(self, params: Any, data_dir: str, seed: int) -> None:
        super().__init__()
        self.cfg, self.data_dir, self.seed = params, str(data_dir), int(seed)
        self.tensors: Tensors | None = None

    @property
    def namespace(self) -> str:
        """Return the task's name: the package under `tasks/` that defines this class."""
        return type(self).__module__.split(".")[1]

    def generating_config(self) -> dict[str, Any]:
        """Return the parameters (beside the seed) that the draw of `build()` depends on."""
        raise NotImplementedError

    def build(self) -> Tensors:
        """Return the draw of this config and seed as a dict of tensors."""
        raise NotImplementedError

    def on_tensors(self, tensors: Tensors) -> None:
        """Hook: derive what the loaders need from the loaded tensors (default: nothing)."""

    def cache_key(self, part: str = "draw", config: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
        """Return the key of a cached part: task, part, seed, its config, the data code's hash."""
        config = self.generating_config() if config is None else config
        return {"task": self.namespace, "part": part, "seed": self.seed, **config,
                "code": data_code_hash(type(self))}

    def cached(self, part: str, config: dict[str, Any], build: Callable[[], Tensors]) -> Tensors:
        """Return a cached part of this task's data (built by `build()` when absent)."""
        return cached_tensors(self.data_dir, self.namespace, self.cache_key(part, config), build,
                              part=part)

    def load(self) -> Tensors:
        """Return the draw, from the cache or built now."""
        return self.cached("draw", self.generating_config(), self.build)

    def prepare_data(self) -> None:
        self.setup("prepare")

    def setup(self, stage: str | None = None) -> None:
        if self.tensors is None:
            self.tensors = self.load()
            self.on_tensors(self.tensors)
