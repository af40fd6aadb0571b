"""Generated data sets, built once as a Hugging Face `datasets.Dataset` and reloaded from disk.

The cache key is a hash of the generating config: the same config never regenerates, a
different one never collides. Writes go to a temporary folder renamed into place, so parallel
jobs that build the same set at once both end with one complete copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets


def config_hash(key: dict[str, Any]) -> str:
    """Return a 16-hex-digit SHA-1 of the JSON form of `key` (sorted keys)."""
    text = json.dumps(key, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def cached_dataset(
    data_dir: str | Path, namespace: str, key: dict[str, Any], build: Callable[[], datasets.Dataset]
) -> datasets.Dataset:
    """Return the data set for `key` from `<data_dir>/<namespace>/<hash>`, building it if absent."""
    path = Path(data_dir) / namespace / config_hash(key)
    if not (path / "dataset_info.json").exists():
        dataset = build()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
        dataset.save_to_disk(str(tmp))
        (tmp / "generating_config.json").write_text(json.dumps(key, indent=2, default=str))
        try:
            os.rename(tmp, path)
        except OSError:  # another job finished first: keep its copy
            shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(path))
