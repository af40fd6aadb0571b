"""Read an offline W&B run file (`run-<id>.wandb`) without syncing it.

The file is W&B's record log: a 7-byte header (b":W&B", magic 0xBEE1 little-endian, version 0)
followed by LevelDB-style log blocks of 32 KiB; each chunk has a 7-byte header (CRC32 4 bytes,
length 2 bytes little-endian, type 1 byte: FULL=1, FIRST=2, MIDDLE=3, LAST=4) and a chunk of a
serialized `wandb_internal_pb2.Record`. Used by tests and handy for checking a run offline.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
FILE_HEADER = 7
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def raw_records(path: str | Path) -> Iterator[bytes]:
    """Yield the payload of every record in a .wandb file, chunks joined."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file (header {data[:4]!r})")
    pos, pending = FILE_HEADER, b""
    while pos + CHUNK_HEADER <= len(data):
        room = BLOCK - pos % BLOCK
        if room < CHUNK_HEADER:  # block trailer padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        start = pos + CHUNK_HEADER
        chunk = data[start:start + length]
        pos = start + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def read_records(path: str | Path) -> list[Any]:
    """Return every record of the file as a `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for payload in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        out.append(record)
    return out


def history(path: str | Path) -> list[dict[str, Any]]:
    """Return the logged history rows (`wandb.log` calls) as dicts of decoded values."""
    rows = []
    for record in read_records(path):
        if record.WhichOneof("record_type") == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            rows.append(row)
    return rows


def find_run_file(run_dir: str | Path) -> Path:
    """Return the newest `run-*.wandb` file under `<run_dir>/wandb/`."""
    files = sorted(Path(run_dir, "wandb").glob("*run-*/run-*.wandb"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise FileNotFoundError(f"no offline W&B run under {run_dir}/wandb")
    return files[-1]
