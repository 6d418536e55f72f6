"""The local SageMaker's RecordIO-protobuf reader, held to the SageMaker SDK's own output."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest

from mnistflow.local import recordio
from pipeline.steps.recordio import write_dense_tensor
from tests.conftest import DATA_DIR

GOLDEN = DATA_DIR / "recordio-golden"


@pytest.mark.parametrize("name", ["train-with-labels.recordio", "train-no-labels.recordio"])
def test_it_reads_what_the_sagemaker_sdk_writes(name):
    expected = np.load(GOLDEN / "input.npz")
    data = (GOLDEN / name).read_bytes()
    assert np.array_equal(recordio.read_features(data, 784), expected["x"])
    features, label = recordio.decode_record(next(recordio.split_records(data)))
    assert list(features) == ["values"]
    assert label == ({} if "no-labels" in name else {"values": expected["y"][:1].astype("f4")})


def test_it_reads_back_the_products_writer_across_chunks():
    x = np.random.default_rng(3).random((2500, 784), dtype=np.float32)
    out = io.BytesIO()
    write_dense_tensor(out, x, np.arange(2500) % 10)
    assert np.array_equal(recordio.read_features(out.getvalue()), x)


def _field(number: int, payload: bytes) -> bytes:
    return recordio._encode_len(number, payload)


def _record(tensor: bytes, kind: int = 2) -> bytes:
    entry = _field(1, b"values") + _field(2, _field(kind, tensor))
    return _field(1, entry)


def test_sparse_float64_and_int32_tensors_become_dense_rows():
    sparse = _field(1, struct.pack("<2f", 5, 7)) + _field(2, bytes([1, 3])) + _field(3, bytes([4]))
    assert recordio.read_features(recordio.frame(_record(sparse))).tolist() == [[0, 5, 0, 7]]
    doubles = _field(1, struct.pack("<2d", 1.5, 2.5))
    assert recordio.read_features(recordio.frame(_record(doubles, kind=3))).tolist() == [[1.5, 2.5]]
    ints = _field(1, bytes([3, 4]))  # packed varints
    assert recordio.read_features(recordio.frame(_record(ints, kind=7))).tolist() == [[3, 4]]


def test_a_record_split_around_the_magic_is_joined_again():
    payload = _record(_field(1, struct.pack("<f", 1.0)))
    first, rest = payload[:4], payload[4:]
    parts = b"".join(
        struct.pack("<II", recordio.RECORDIO_MAGIC, (flag << 29) | len(part))
        + part
        + b"\0" * (-len(part) % 4)
        for flag, part in ((1, first), (3, rest[4:]))
    )
    # dmlc splits at an aligned magic and drops it; the reader puts it back
    joined = first + struct.pack("<I", recordio.RECORDIO_MAGIC) + rest[4:]
    assert list(recordio.split_records(parts)) == [joined]


def test_the_answers_record_holds_the_two_labels():
    data = recordio.frame(
        recordio.encode_label_record({"closest_cluster": 3.0, "distance_to_cluster": 6.5})
    )
    [payload] = recordio.split_records(data)
    features, label = recordio.decode_record(payload)
    assert features == {}
    assert {k: v.tolist() for k, v in label.items()} == {
        "closest_cluster": [3.0],
        "distance_to_cluster": [6.5],
    }


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"\x00" * 8, "no RecordIO magic"),
        (struct.pack("<II", recordio.RECORDIO_MAGIC, 100) + b"\0" * 8, "runs past the end"),
        (struct.pack("<I", recordio.RECORDIO_MAGIC), "truncated record header"),
        (recordio.frame(b"\x0a\x05"), "truncated protobuf field"),
        (recordio.frame(_field(1, _field(1, b"other"))), "has no value"),
    ],
)
def test_what_is_not_recordio_protobuf_is_refused_with_where(data, says):
    with pytest.raises(recordio.RecordIOError, match=says):
        recordio.read_features(data)


def test_rows_of_another_width_are_refused():
    out = io.BytesIO()
    write_dense_tensor(out, np.zeros((3, 5), dtype=np.float32))
    with pytest.raises(recordio.RecordIOError, match="record 0 has 5 features, not 784"):
        recordio.read_features(out.getvalue(), 784)
