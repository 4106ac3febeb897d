"""Minimal safetensors reader and writer over numpy memory maps.

Reading goes one tensor at a time through `np.memmap`, so a checkpoint is
never held twice in host memory; bfloat16 comes from `ml_dtypes` (plain
numpy has none, which is why `safetensors.numpy` cannot read it).
Format: 8-byte little-endian header size, a JSON header of
{name: {dtype, shape, data_offsets}}, then the raw little-endian data.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable

import ml_dtypes
import numpy as np

from spar_jax.errors import SparError

DTYPES = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}
_NAMES = {v: k for k, v in DTYPES.items()}
FLOAT_CODES = ("F64", "F32", "F16", "BF16")


class SafetensorsError(SparError, ValueError):
    """A safetensors file that is malformed or holds what we cannot use."""


class SafetensorsFile:
    """Lazy view of one `.safetensors` file: `header`, `read(name)`."""

    def __init__(self, path: str):
        self.path = path
        try:
            with open(path, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                self.header = json.loads(f.read(size))
        except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SafetensorsError(f"{path}: not a readable safetensors file ({e})") from None
        self.header.pop("__metadata__", None)
        self._data_start = 8 + size
        self._mmap = None

    def names(self) -> list[str]:
        return list(self.header)

    def dtype_code(self, name: str) -> str:
        return self.header[name]["dtype"]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self.header[name]["shape"])

    def read(self, name: str) -> np.ndarray:
        """The tensor as a read-only array backed by the memory map."""
        entry = self.header[name]
        code = entry["dtype"]
        if code not in DTYPES:
            raise SafetensorsError(f"{self.path}: tensor {name!r} has unknown dtype {code}")
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        begin, end = entry["data_offsets"]
        raw = self._mmap[self._data_start + begin : self._data_start + end]
        return raw.view(DTYPES[code]).reshape(entry["shape"])


def write(path: str, tensors: Iterable[tuple[str, np.ndarray]]) -> int:
    """Writes (name, array) pairs to `path` atomically; returns bytes of data."""
    tensors = [(name, np.ascontiguousarray(a)) for name, a in tensors]
    header, offset = {}, 0
    for name, a in tensors:
        if a.dtype not in _NAMES:
            raise SafetensorsError(f"cannot write tensor {name!r} of dtype {a.dtype}")
        header[name] = {
            "dtype": _NAMES[a.dtype],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data aligned to 8 bytes, as the reference writer does
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in tensors:
            f.write(a.tobytes())
    os.replace(tmp, path)
    return offset
