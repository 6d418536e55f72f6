"""The k-means model artifact: MXNet's NDArray list format, pinned to MXNet's source, and the
model.tar.gz around it; and what the model answers."""

from __future__ import annotations

import io
import struct
import tarfile

import numpy as np
import pytest

from pipeline.steps.kmeans_model import (
    MODEL_MEMBER,
    ModelFormatError,
    centroids_from_ndarrays,
    closest_clusters,
    decode_ndarrays,
    encode_ndarrays,
    read_centroids,
    write_model,
)
from tests.conftest import DATA_DIR

FIXTURE = DATA_DIR / "mxnet" / "sample_centroids.params"
SAMPLE = np.arange(6, dtype=np.float32).reshape(2, 3)

# apache/mxnet 1.9.1, src/ndarray/ndarray.cc: NDArray::Save(fo, data, names) and
# NDArray::Save(strm) for a dense float32 (2, 3) array on cpu(0), no names; little-endian.
PINNED = b"".join(
    [
        struct.pack("<Q", 0x112),  # kMXAPINDArrayListMagic
        struct.pack("<Q", 0),  # reserved
        struct.pack("<Q", 1),  # dmlc vector<NDArray>: count
        struct.pack("<I", 0xF993FAC9),  # NDARRAY_V2_MAGIC
        struct.pack("<i", 0),  # storage type: kDefaultStorage
        struct.pack("<i", 2),  # TShape: ndim
        struct.pack("<qq", 2, 3),  # TShape: int64 dims
        struct.pack("<ii", 1, 0),  # Context: dev_type kCPU, dev_id 0
        struct.pack("<i", 0),  # type flag: kFloat32
        struct.pack("<6f", 0, 1, 2, 3, 4, 5),  # row-major data
        struct.pack("<Q", 0),  # dmlc vector<string>: no names
    ]
)


def test_the_fixture_is_the_format_mxnet_writes_byte_for_byte():
    assert FIXTURE.read_bytes() == PINNED
    [array] = decode_ndarrays(PINNED)
    assert array.dtype == np.float32 and array.tolist() == SAMPLE.tolist()
    assert encode_ndarrays([SAMPLE]) == PINNED


def test_a_model_round_trips_through_model_tar_gz_with_one_member():
    centroids = np.random.default_rng(0).random((10, 784), dtype=np.float32)
    archive = write_model(centroids)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        [member] = tar.getmembers()
        assert member.name == MODEL_MEMBER and member.isfile()
        assert member.size == 72 + 4 * centroids.size  # the research's size formula
        assert centroids_from_ndarrays(tar.extractfile(member).read()).tolist() == (
            centroids.tolist()
        )
    assert np.array_equal(read_centroids(archive), centroids)
    assert write_model(centroids) == archive  # the same centroids, the same bytes


def _array(magic: int, body: bytes, stype: bool) -> bytes:
    head = struct.pack("<I", magic) + (struct.pack("<i", 0) if stype else b"")
    return head + body


def _list(*arrays: bytes, names: tuple[str, ...] = ()) -> bytes:
    out = struct.pack("<QQQ", 0x112, 0, len(arrays)) + b"".join(arrays)
    out += struct.pack("<Q", len(names))
    for name in names:
        out += struct.pack("<Q", len(name)) + name.encode()
    return out


SHAPE_AND_DATA = (
    struct.pack("<i", 2)
    + struct.pack("<qq", 2, 3)
    + struct.pack("<iii", 1, 0, 0)
    + SAMPLE.tobytes()
)


@pytest.mark.parametrize(
    "data",
    [
        _list(_array(0xF993FAC8, SHAPE_AND_DATA, stype=False)),  # V1: no storage type
        _list(_array(0xF993FACA, SHAPE_AND_DATA, stype=True)),  # V3: numpy shape semantics
        # before V1: the first word is ndim, the dims are uint32
        _list(struct.pack("<I", 2) + struct.pack("<II", 2, 3) + SHAPE_AND_DATA[20:]),
        # names: mx.nd.load gives a dict
        _list(_array(0xF993FAC9, SHAPE_AND_DATA, stype=True), names=("centroids",)),
    ],
    ids=["v1", "v3", "legacy", "named"],
)
def test_every_dense_layout_mxnet_reads_is_read(data):
    assert np.array_equal(centroids_from_ndarrays(data), SAMPLE)


def test_float64_and_other_types_are_kept_as_written():
    doubles = SAMPLE.astype(np.float64)
    [back] = decode_ndarrays(encode_ndarrays([doubles]))
    assert back.dtype == np.float64 and np.array_equal(back, doubles)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"", "no NDArray list header"),
        (struct.pack("<QQQ", 0x113, 0, 0), "no NDArray list header"),
        (PINNED[:-9], "truncated"),
        (PINNED + b"\0", "bytes after the end"),
        (PINNED[:28] + struct.pack("<i", 1) + PINNED[32:], "sparse"),  # row_sparse
        (PINNED[:60] + struct.pack("<i", 99) + PINNED[64:], "type flag 99"),
        # a shape of 2**40 rows announced in a 96-byte file: refused before allocating
        (PINNED[:36] + struct.pack("<q", 2**40) + PINNED[44:], "truncated"),
        (_list(), "holds one array"),
    ],
    ids=["empty", "magic", "cut", "trailing", "sparse", "dtype", "huge", "none"],
)
def test_what_is_not_a_kmeans_model_is_refused_clearly(data, says):
    with pytest.raises(ModelFormatError, match=says):
        centroids_from_ndarrays(data)


def test_an_archive_without_the_model_member_or_not_an_archive_is_refused():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("something-else")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(ModelFormatError, match=f"no {MODEL_MEMBER}"):
        read_centroids(raw.getvalue())
    with pytest.raises(ModelFormatError, match="not a gzip'd tar archive"):
        read_centroids(b"not a tarball")


def test_an_answer_does_not_depend_on_the_rows_it_is_sent_with():
    rng = np.random.default_rng(1)
    centroids = rng.random((16, 784), dtype=np.float32)
    x = rng.random((700, 784), dtype=np.float32)
    together = closest_clusters(centroids, x)
    alone = [closest_clusters(centroids, x[i : i + 1]) for i in range(0, 700, 37)]
    assert [int(c[0]) for c, _ in alone] == together[0][::37].tolist()
    assert [d[0] for _, d in alone] == together[1][::37].tolist()  # to the last bit
    # and the answer is the nearest centroid by Euclidean distance
    brute = np.sqrt(((x[:, None, :].astype(float) - centroids[None]) ** 2).sum(-1))
    assert np.array_equal(together[0], brute.argmin(1))
    assert np.allclose(together[1], brute.min(1), rtol=1e-6)
