"""Read a legacy (non-zip) PyTorch `.pth` state_dict into numpy arrays, without importing torch.

The legacy format is a sequence of pickles (magic number, protocol version, system info, the
state_dict, the list of storage keys) followed by the raw storages, each an int64 little-endian element
count and then its little-endian bytes. Only the few globals a plain state_dict needs are accepted, so
reading an untrusted file never runs code from it.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import InvalidInput

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
IGNORED_KEY_SUFFIXES = ("num_batches_tracked",)

STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    view_offset: int


@dataclass(frozen=True)
class _TensorRecord:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any, *unused: Any) -> _TensorRecord:
    # Stands in for torch._utils._rebuild_tensor_v2: the storages come after this pickle, so only
    # remember where the tensor lives and build it once the bytes have been read.
    if not isinstance(storage, _StorageRef):
        raise InvalidInput("The .pth file holds a tensor whose storage is not a plain storage reference.")
    return _TensorRecord(storage, int(storage_offset), tuple(int(s) for s in size), tuple(int(s) for s in stride))


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise InvalidInput(
            f"The .pth file refers to '{module}.{name}', which a plain state_dict of tensors never needs. "
            "Only legacy state_dict files of plain tensors can be read without torch."
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        # ('storage', storage_type, key, location, numel[, view_metadata]); view_metadata is
        # (view_key, offset, view_size) for old storage views, None otherwise.
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise InvalidInput(f"The .pth file has an unexpected persistent id {pid!r}.")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise InvalidInput(f"The .pth file has a storage of unsupported type {storage_type!r}.")
        view_metadata = pid[5] if len(pid) > 5 else None
        view_offset = int(view_metadata[1]) if view_metadata is not None else 0
        return _StorageRef(key, storage_type.dtype, view_offset)


def read_state_dict(
    path: str | os.PathLike, *, skip_suffixes: tuple[str, ...] = IGNORED_KEY_SUFFIXES
) -> dict[str, np.ndarray]:
    """Read a legacy torch `.pth` state_dict as `{key: array}`, leaving out keys ending in `skip_suffixes`."""
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    try:
        magic_number = pickle.load(stream)
        if magic_number != LEGACY_MAGIC_NUMBER:
            raise InvalidInput(
                f"'{path}' is not a legacy torch file (it may be the newer zip format, which needs torch)."
            )
        protocol_version = pickle.load(stream)
        if protocol_version != LEGACY_PROTOCOL_VERSION:
            raise InvalidInput(f"'{path}' uses torch file protocol {protocol_version}, not {LEGACY_PROTOCOL_VERSION}.")
        system_info = pickle.load(stream)
        if not system_info.get("little_endian", False):
            raise InvalidInput(f"'{path}' was written on a big-endian machine, which is not supported.")
        records = _StateDictUnpickler(stream).load()
        storage_keys = pickle.load(stream)
    except InvalidInput:
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        TypeError,
        ValueError,
    ) as error:
        raise InvalidInput(f"'{path}' is not a readable torch state_dict file: {error}") from error
    if not isinstance(records, dict):
        raise InvalidInput(f"'{path}' holds a {type(records).__name__}, not a state_dict.")
    storages = _read_storages(data, stream.tell(), storage_keys, _storage_dtypes(records), path)
    return {
        str(key): _materialize(record, storages, key, path)
        for key, record in records.items()
        if not str(key).endswith(skip_suffixes)
    }


def _storage_dtypes(records: dict[Any, Any]) -> dict[str, np.dtype]:
    dtypes: dict[str, np.dtype] = {}
    for key, record in records.items():
        if not isinstance(record, _TensorRecord):
            raise InvalidInput(f"State_dict entry '{key}' is a {type(record).__name__}, not a tensor.")
        dtypes[record.storage.key] = record.storage.dtype
    return dtypes


def _read_storages(
    data: bytes, position: int, storage_keys: list[str], dtypes: dict[str, np.dtype], path: str | os.PathLike
) -> dict[str, np.ndarray]:
    storages: dict[str, np.ndarray] = {}
    for key in storage_keys:
        if key not in dtypes:
            raise InvalidInput(f"'{path}' lists storage '{key}' that no tensor uses.")
        if position + 8 > len(data):
            raise InvalidInput(f"'{path}' is truncated: storage '{key}' is missing.")
        numel = int(np.frombuffer(data, dtype="<i8", count=1, offset=position)[0])
        position += 8
        dtype = dtypes[key]
        if numel < 0 or position + numel * dtype.itemsize > len(data):
            raise InvalidInput(f"'{path}' is truncated: storage '{key}' needs {numel} elements.")
        storages[key] = np.frombuffer(data, dtype=dtype, count=numel, offset=position)
        position += numel * dtype.itemsize
    return storages


def _materialize(
    record: _TensorRecord, storages: dict[str, np.ndarray], key: str, path: str | os.PathLike
) -> np.ndarray:
    storage = storages.get(record.storage.key)
    if storage is None:
        raise InvalidInput(f"'{path}': tensor '{key}' uses storage '{record.storage.key}', which is missing.")
    if len(record.size) != len(record.stride) or any(s < 0 for s in (*record.size, *record.stride)):
        raise InvalidInput(f"'{path}': tensor '{key}' has an invalid size {record.size} / stride {record.stride}.")
    start = record.storage.view_offset + record.offset
    last = start + sum((size - 1) * stride for size, stride in zip(record.size, record.stride, strict=True))
    if min(record.size, default=1) > 0 and (start < 0 or last >= storage.size):
        raise InvalidInput(f"'{path}': tensor '{key}' reaches past the end of its storage.")
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[start:], shape=record.size, strides=[stride * itemsize for stride in record.stride]
    )
    # Copy so each array owns contiguous native-endian memory instead of pinning the whole file.
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")
