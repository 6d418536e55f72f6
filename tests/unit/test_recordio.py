"""write_dense_tensor: byte-equal to the SageMaker SDK's golden output and to a plain encoder."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from pipeline.steps.recordio import write_dense_tensor
from tests.conftest import DATA_DIR

GOLDEN_DIR = DATA_DIR / "recordio-golden"


# --- An independent, deliberately naive reference: one protobuf message at a time ---------


def _varint(value: int) -> bytes:
    out = b""
    while value >= 0x80:
        out += bytes([(value & 0x7F) | 0x80])
        value >>= 7
    return out + bytes([value])


def _len_field(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _tensor_map_entry(values) -> bytes:
    packed = b"".join(struct.pack("<f", float(v)) for v in values)
    tensor = _len_field(1, packed)  # Float32Tensor.values, packed
    value = _len_field(2, tensor)  # Value.float32_tensor
    return _len_field(1, b"values") + _len_field(2, value)  # map entry {key, value}


def reference_encode(x: np.ndarray, y: np.ndarray | None = None) -> bytes:
    out = b""
    for i, row in enumerate(x):
        record = _len_field(1, _tensor_map_entry(row))  # Record.features
        if y is not None:
            record += _len_field(2, _tensor_map_entry([y[i]]))  # Record.label
        out += struct.pack("<II", 0xCED7230A, len(record)) + record
        out += b"\0" * (-len(record) % 4)
    return out


def _written(x, y=None) -> tuple[bytes, int]:
    buf = io.BytesIO()
    count = write_dense_tensor(buf, x, y)
    return buf.getvalue(), count


# --- Golden files: what the SDK itself wrote ------------------------------------------------


@pytest.fixture(scope="module")
def golden_input():
    with np.load(GOLDEN_DIR / "input.npz") as data:
        return data["x"], data["y"]


def test_matches_sdk_golden_with_labels(golden_input):
    """Given the golden digits and labels as float32, when written, then the bytes are the SDK's."""
    x, y = golden_input
    data, count = _written(x, y.astype(np.float32))
    expected = (GOLDEN_DIR / "train-with-labels.recordio").read_bytes()
    assert count == len(expected)
    assert data == expected


def test_matches_sdk_golden_without_labels(golden_input):
    """Given the golden digits alone, when written, then the bytes are the SDK's."""
    x, _ = golden_input
    data, count = _written(x)
    expected = (GOLDEN_DIR / "train-no-labels.recordio").read_bytes()
    assert count == len(expected)
    assert data == expected


def test_reference_encoder_agrees_with_golden(golden_input):
    """Guards the reference itself: it must reproduce the SDK's bytes too."""
    x, y = golden_input
    expected = (GOLDEN_DIR / "train-with-labels.recordio").read_bytes()
    assert reference_encode(x[:5], y[:5].astype(np.float32)) == expected[: len(expected) // 64 * 5]


# --- Other shapes: varint widths and padding change with the feature count -------------------

# 1: one-byte lengths and padding; 31/32: the packed length crosses 127 (varint grows to 2
# bytes) at 32 values; 4095/4097: the packed length crosses 16383 (3-byte varint).
FEATURE_DIMS = [1, 3, 31, 32, 33, 784, 4095, 4097]


@pytest.mark.parametrize("with_labels", [False, True], ids=["no-labels", "labels"])
@pytest.mark.parametrize("n_features", FEATURE_DIMS)
def test_matches_reference_encoder(n_features, with_labels):
    """Given random rows of several widths, when written, then the bytes equal the reference."""
    rng = np.random.default_rng(n_features)
    n_rows = 7
    x = rng.normal(size=(n_rows, n_features)).astype(np.float32)
    y = np.array([0, 1, 9, -3.5, 1e30, np.inf, 127], dtype=np.float32) if with_labels else None
    data, count = _written(x, y)
    assert count == len(data)
    assert data == reference_encode(x, y)


def test_rows_span_several_chunks(monkeypatch):
    """Given a chunk size smaller than the data, when written, then chunking leaves no trace."""
    import pipeline.steps.recordio as recordio

    monkeypatch.setattr(recordio, "CHUNK_TARGET_BYTES", 100)  # about two rows of 10 features
    rng = np.random.default_rng(1)
    x = rng.random((11, 10), dtype=np.float32)
    y = rng.integers(0, 10, 11)
    data, _ = _written(x, y)
    assert data == reference_encode(x, y.astype(np.float32))


def test_non_contiguous_and_float64_input_is_written_as_float32():
    """Given a strided float64 view, when written, then it equals its float32 copy's bytes."""
    rng = np.random.default_rng(2)
    x = rng.random((6, 20))[:, ::2]
    data, _ = _written(x)
    assert data == reference_encode(x.astype(np.float32))


def test_no_rows_writes_nothing():
    """Given zero rows, when written, then nothing is written and 0 is returned."""
    assert _written(np.empty((0, 784), dtype=np.float32)) == (b"", 0)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros(5, np.float32), None, "features must be a 2-D array, got shape (5,)"),
        (np.zeros((2, 0), np.float32), None, "features must have at least one column"),
        (np.zeros((2, 3), np.float32), np.zeros(3), r"labels must have shape (2,), got (3,)"),
        (np.array([["a"]]), None, "features must be numeric, got dtype <U1"),
    ],
)
def test_rejects_bad_input(x, y, message):
    """Given malformed arrays, when written, then a ValueError says what is wrong."""
    with pytest.raises(ValueError) as excinfo:
        write_dense_tensor(io.BytesIO(), x, y)
    assert str(excinfo.value) == message
