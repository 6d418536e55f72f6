"""Reads RecordIO-protobuf, the format SageMaker's built-in algorithms train on.

The reading side of `pipeline.steps.recordio` (which writes it byte for byte as the SageMaker
SDK does), for the local SageMaker stand-in's k-means.

- RecordIO framing (dmlc-core `include/dmlc/recordio.h`, as MXNet uses it): u32 magic
  0xCED7230A, u32 `lrecord` whose upper 3 bits are a continuation flag and lower 29 bits the
  length, the payload, zero padding to 4 bytes. A payload holding the magic at an aligned offset
  is written in parts (flag 1 = first, 2 = middle, 3 = last) that are joined with the magic.
- Payload: an `aialgs.data.Record` protobuf (SageMaker developer guide, "Common data formats
  for training", the protobuf schema): `map<string, Value> features = 1`, `label = 2`;
  Value: `Float32Tensor float32_tensor = 2`, `Float64Tensor float64_tensor = 3`,
  `Int32Tensor int32_tensor = 7`; each tensor: `values = 1`, `keys = 2` (sparse when present),
  `shape = 3`, all packed. Vectors go under the key `values`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np

RECORDIO_MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", RECORDIO_MAGIC)
_LENGTH_BITS = 29
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1
_WHOLE, _FIRST, _MIDDLE, _LAST = 0, 1, 2, 3

# Protobuf wire types
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# Field numbers (record.proto)
_RECORD_FEATURES, _RECORD_LABEL = 1, 2
_ENTRY_KEY, _ENTRY_VALUE = 1, 2
_VALUE_FLOAT32, _VALUE_FLOAT64, _VALUE_INT32 = 2, 3, 7
_TENSOR_VALUES, _TENSOR_KEYS, _TENSOR_SHAPE = 1, 2, 3
_TENSOR_DTYPES = {_VALUE_FLOAT32: "<f4", _VALUE_FLOAT64: "<f8", _VALUE_INT32: "int32"}
VECTOR_KEY = "values"


class RecordIOError(ValueError):
    """The bytes are not RecordIO-protobuf records as SageMaker's algorithms read them."""


def split_records(data: bytes) -> Iterator[bytes]:
    """Each record's payload, in order."""
    view = memoryview(data)
    offset, parts = 0, []
    while offset < len(view):
        if offset + 8 > len(view):
            raise RecordIOError(f"truncated record header at byte {offset}")
        magic, lrecord = struct.unpack_from("<II", view, offset)
        if magic != RECORDIO_MAGIC:
            raise RecordIOError(f"no RecordIO magic at byte {offset} (found 0x{magic:08x})")
        flag, length = lrecord >> _LENGTH_BITS, lrecord & _LENGTH_MASK
        start = offset + 8
        if start + length > len(view):
            raise RecordIOError(f"record at byte {offset} runs past the end of the data")
        payload = bytes(view[start : start + length])
        offset = start + length + (-length % 4)
        if flag == _WHOLE and not parts:
            yield payload
        elif flag == _FIRST and not parts:
            parts = [payload]
        elif flag in (_MIDDLE, _LAST) and parts:
            parts.append(payload)
            if flag == _LAST:
                yield _MAGIC_BYTES.join(parts)
                parts = []
        else:
            raise RecordIOError(f"record part out of order at byte {offset} (flag {flag})")
    if parts:
        raise RecordIOError("the data ends inside a multi-part record")


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise RecordIOError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise RecordIOError("protobuf varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): an int for varints and fixed, a memoryview for LEN."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _FIXED64:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == _LEN:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == _FIXED32:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise RecordIOError(f"protobuf wire type {wire} is not one a Record uses")
        if pos > len(buf):
            raise RecordIOError("truncated protobuf field")
        yield number, wire, value


def _packed_varints(buf: memoryview) -> list[int]:
    values, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        values.append(value)
    return values


def _tensor(buf: memoryview, kind: int) -> np.ndarray:
    dtype = np.dtype(_TENSOR_DTYPES[kind])
    chunks, keys, shape = [], [], []
    for number, wire, value in _fields(buf):
        if number == _TENSOR_VALUES:
            if kind == _VALUE_INT32:  # int32 values are varints, packed or not
                ints = _packed_varints(value) if wire == _LEN else [value]
                chunks.append(np.array(ints, dtype=np.uint64).astype(np.int64).astype(np.int32))
            elif wire in (_LEN, _FIXED32, _FIXED64):
                if len(value) % dtype.itemsize:
                    raise RecordIOError("tensor values are not a whole number of elements")
                chunks.append(np.frombuffer(value, dtype=dtype))
        elif number == _TENSOR_KEYS:
            keys.extend(_packed_varints(value) if wire == _LEN else [value])
        elif number == _TENSOR_SHAPE:
            shape.extend(_packed_varints(value) if wire == _LEN else [value])
    values = np.concatenate(chunks) if chunks else np.empty(0, dtype=dtype)
    if not keys:
        return values
    # Sparse: keys index a flat vector of prod(shape) elements.
    if len(keys) != len(values) or not shape:
        raise RecordIOError("a sparse tensor needs one key per value and a shape")
    size = int(np.prod(shape, dtype=np.int64))
    if max(keys) >= size:
        raise RecordIOError(f"sparse key {max(keys)} outside shape {shape}")
    dense = np.zeros(size, dtype=dtype)
    dense[np.asarray(keys, dtype=np.int64)] = values
    return dense


def _value(buf: memoryview) -> np.ndarray:
    for number, wire, value in _fields(buf):
        if wire == _LEN and number in _TENSOR_DTYPES:
            return _tensor(value, number)
    raise RecordIOError("a Value with no float32, float64 or int32 tensor")


def decode_record(payload: bytes) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(features, label) of one Record, each a map of name to flat array."""
    maps: dict[int, dict[str, np.ndarray]] = {_RECORD_FEATURES: {}, _RECORD_LABEL: {}}
    for number, wire, entry in _fields(memoryview(payload)):
        if number not in maps or wire != _LEN:
            continue  # uid, metadata, configuration: not used by k-means
        key, value = "", None
        for field, field_wire, content in _fields(entry):
            if field == _ENTRY_KEY and field_wire == _LEN:
                key = bytes(content).decode("utf-8")
            elif field == _ENTRY_VALUE and field_wire == _LEN:
                value = _value(content)
        if value is None:
            raise RecordIOError(f"the map entry {key!r} has no value")
        maps[number][key] = value
    return maps[_RECORD_FEATURES], maps[_RECORD_LABEL]


def read_features(data: bytes, feature_dim: int | None = None) -> np.ndarray:
    """Every record's `values` feature vector, as one (records, features) float32 array."""
    rows = []
    for index, payload in enumerate(split_records(data)):
        features, _ = decode_record(payload)
        if VECTOR_KEY not in features:
            raise RecordIOError(f"record {index} has no {VECTOR_KEY!r} feature")
        row = features[VECTOR_KEY]
        if feature_dim is None:
            feature_dim = len(row)
        if len(row) != feature_dim:
            raise RecordIOError(f"record {index} has {len(row)} features, not {feature_dim}")
        rows.append(row.astype(np.float32, copy=False))
    if not rows:
        return np.empty((0, feature_dim or 0), dtype=np.float32)
    return np.stack(rows)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _encode_len(number: int, content: bytes) -> bytes:
    return _encode_varint((number << 3) | _LEN) + _encode_varint(len(content)) + content


def encode_label_record(label: dict[str, float]) -> bytes:
    """A Record whose label map holds each value as a one-element float32 tensor: how the
    built-in algorithms answer in RecordIO-protobuf."""
    entries = []
    for name, value in label.items():
        tensor = _encode_len(_TENSOR_VALUES, struct.pack("<f", value))
        entry = _encode_len(_ENTRY_KEY, name.encode()) + _encode_len(
            _ENTRY_VALUE, _encode_len(_VALUE_FLOAT32, tensor)
        )
        entries.append(_encode_len(_RECORD_LABEL, entry))
    return b"".join(entries)


def frame(payload: bytes) -> bytes:
    """One whole RecordIO record around `payload` (flag 0, padded to 4 bytes)."""
    if len(payload) > _LENGTH_MASK:
        raise ValueError("a record of 2**29 bytes or more needs multi-part framing")
    return struct.pack("<II", RECORDIO_MAGIC, len(payload)) + payload + b"\0" * (-len(payload) % 4)
