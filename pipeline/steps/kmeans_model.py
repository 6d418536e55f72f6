"""SageMaker k-means' model artifact, read and written without MXNet; and what the model answers.

The built-in k-means image writes `model.tar.gz` holding one member, `model_algo-1`: an MXNet
NDArray list file (what `mx.nd.save(path, [centroids])` writes) with one dense float32 array of
shape (k, feature_dim), the cluster centroids. AWS's own examples read it with
`mx.ndarray.load("model_algo-1")[0].asnumpy()` (SageMaker developer guide, "Common data formats
for training", Trained Model Deserialization), and the hosting image accepts such a file made
by hand (amazon-sagemaker-examples, `kmeans_bring_your_own_model.ipynb`). So one reader serves
a model trained on AWS and one trained by the local stand-in.

The format, from apache/mxnet tag 1.9.1 (commit 3f8f3be9987e259491ddc5a78aa9c6903e0b21e3),
`src/ndarray/ndarray.cc`: the list's `NDArray::Save(dmlc::Stream*, data, names)` writes

    u64 kMXAPINDArrayListMagic (0x112), u64 reserved (0),
    u64 count, then each array (`NDArray::Save(dmlc::Stream*)`), then u64 count of names and
    for each name u64 length and its UTF-8 bytes (dmlc-core's vector and string serializers);

and each dense array is

    u32 NDARRAY_V2_MAGIC (0xF993FAC9), i32 storage type (0: kDefaultStorage),
    shape (`Tuple::Save`: i32 ndim, then ndim i64 dims), context (i32 dev_type, 1 = cpu;
    i32 dev_id), i32 type flag (mshadow's TypeFlag; 0 = kFloat32), then the raw row-major data.

All little-endian (dmlc's DMLC_IO_USE_LITTLE_ENDIAN; x86 hosts). MXNet 1.x writes V2 unless
numpy-shape semantics are on (then V3, the same layout for dense arrays); V1 (0xF993FAC8) has no
storage type; files older than V1 start with the ndim itself and hold uint32 dims. Real SageMaker
k-means artifacts carry V2. tests/unit/test_kmeans_model.py holds the byte layout to a fixture.

Standard library and numpy only: the pipeline's steps embed this module.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zlib
from collections.abc import Sequence

import numpy as np

MODEL_MEMBER = "model_algo-1"  # the one member of a k-means model.tar.gz
MODEL_ARCHIVE = "model.tar.gz"

LIST_MAGIC = 0x112  # kMXAPINDArrayListMagic
NDARRAY_V1_MAGIC = 0xF993FAC8  # int64 shape, no storage type
NDARRAY_V2_MAGIC = 0xF993FAC9  # + storage type: what MXNet 1.x writes
NDARRAY_V3_MAGIC = 0xF993FACA  # numpy shape semantics; same layout for dense arrays
DEFAULT_STORAGE = 0  # kDefaultStorage (dense); 1 row_sparse and 2 csr are not read here
CPU_DEVICE = (1, 0)  # Context::kCPU == cpu::kDevMask == 1 << 0, device id 0
MAX_LEGACY_NDIM = 32  # a pre-V1 file starts with its ndim: anything larger is not one

# mshadow's TypeFlag (3rdparty/mshadow/mshadow/base.h at the same tag) -> numpy dtype.
TYPE_FLAGS = {
    0: np.dtype("<f4"),  # kFloat32
    1: np.dtype("<f8"),  # kFloat64
    2: np.dtype("<f2"),  # kFloat16
    3: np.dtype("u1"),  # kUint8
    4: np.dtype("<i4"),  # kInt32
    5: np.dtype("i1"),  # kInt8
    6: np.dtype("<i8"),  # kInt64
}
_FLAG_OF = {dtype: flag for flag, dtype in TYPE_FLAGS.items()}

# A k-means model is k x feature_dim float32 values: a member larger than this is not one
# (and is not read into memory).
MAX_MODEL_BYTES = 1024**3


class ModelFormatError(ValueError):
    """The bytes are not an MXNet NDArray file, or not a k-means model."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self.offset = 0

    def take(self, size: int) -> memoryview:
        if size < 0 or self.offset + size > len(self._data):
            raise ModelFormatError(
                f"truncated NDArray file: {size} bytes needed at offset {self.offset}, "
                f"{len(self._data) - self.offset} left"
            )
        chunk = self._data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def unpack(self, fmt: str) -> int:
        (value,) = struct.unpack(fmt, self.take(struct.calcsize(fmt)))
        return value

    @property
    def left(self) -> int:
        return len(self._data) - self.offset


def _read_array(reader: _Reader) -> np.ndarray:
    magic = reader.unpack("<I")
    if magic in (NDARRAY_V2_MAGIC, NDARRAY_V3_MAGIC):
        storage = reader.unpack("<i")
        if storage != DEFAULT_STORAGE:
            raise ModelFormatError(f"storage type {storage} is sparse; only dense arrays are read")
        ndim = reader.unpack("<i")
        dims_format = "q"
    elif magic == NDARRAY_V1_MAGIC:
        ndim = reader.unpack("<i")
        dims_format = "q"
    elif magic <= MAX_LEGACY_NDIM:  # before V1: the first word is ndim, dims are uint32
        ndim = magic
        dims_format = "I"
    else:
        raise ModelFormatError(f"unknown NDArray magic 0x{magic:08x}")
    if ndim < 0 or ndim > MAX_LEGACY_NDIM:
        raise ModelFormatError(f"an NDArray of {ndim} dimensions")
    size = struct.calcsize(dims_format)
    shape = struct.unpack(f"<{ndim}{dims_format}", reader.take(size * ndim)) if ndim else ()
    if ndim == 0:  # a "none" array: Save stops after the shape
        return np.empty((0,), dtype=np.float32)
    if any(dim < 0 for dim in shape):
        raise ModelFormatError(f"negative dimension in shape {shape}")
    reader.unpack("<i")  # device type: data is always stored as on the host
    reader.unpack("<i")  # device id
    flag = reader.unpack("<i")
    if flag not in TYPE_FLAGS:
        raise ModelFormatError(f"type flag {flag} is not one this reader knows")
    dtype = TYPE_FLAGS[flag]
    count = 1
    for dim in shape:
        count *= dim
    if count * dtype.itemsize > reader.left:  # checked before numpy allocates anything
        raise ModelFormatError(
            f"truncated NDArray file: shape {shape} needs {count * dtype.itemsize} bytes, "
            f"{reader.left} left"
        )
    data = np.frombuffer(reader.take(count * dtype.itemsize), dtype=dtype, count=count)
    return data.reshape(shape).copy()


def decode_ndarrays(data: bytes) -> list[np.ndarray] | dict[str, np.ndarray]:
    """What `mx.nd.load` returns for these bytes: a list, or a dict when the file has names."""
    reader = _Reader(data)
    if reader.left < 16 or reader.unpack("<Q") != LIST_MAGIC:
        raise ModelFormatError("Invalid NDArray file format (no NDArray list header)")
    reader.unpack("<Q")  # reserved
    count = reader.unpack("<Q")
    if count > reader.left:  # every array takes at least one byte
        raise ModelFormatError(f"Invalid NDArray file format ({count} arrays announced)")
    arrays = [_read_array(reader) for _ in range(count)]
    name_count = reader.unpack("<Q")
    if name_count not in (0, count):
        raise ModelFormatError(
            f"Invalid NDArray file format ({name_count} names for {count} arrays)"
        )
    names = []
    for _ in range(name_count):
        length = reader.unpack("<Q")
        names.append(bytes(reader.take(length)).decode("utf-8"))
    if reader.left:
        raise ModelFormatError(f"Invalid NDArray file format ({reader.left} bytes after the end)")
    return dict(zip(names, arrays, strict=True)) if names else arrays


def encode_ndarrays(arrays: Sequence[np.ndarray]) -> bytes:
    """What `mx.nd.save(path, list(arrays))` writes (MXNet 1.x: V2, dense, cpu(0), no names)."""
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for array in arrays:
        array = np.asarray(array)
        dtype = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype
        flag = _FLAG_OF.get(np.dtype(dtype))
        if flag is None:
            raise TypeError(f"MXNet has no type flag for {array.dtype}")
        if array.ndim == 0:
            raise ValueError("a 0-d array has no NDArray V2 form (its shape would read as none)")
        parts.append(struct.pack("<Iii", NDARRAY_V2_MAGIC, DEFAULT_STORAGE, array.ndim))
        parts.append(struct.pack(f"<{array.ndim}q", *array.shape))
        parts.append(struct.pack("<iii", *CPU_DEVICE, flag))
        parts.append(np.ascontiguousarray(array, dtype=TYPE_FLAGS[flag]).tobytes())
    parts.append(struct.pack("<Q", 0))  # no names: mx.nd.load gives a list back
    return b"".join(parts)


def centroids_from_ndarrays(data: bytes) -> np.ndarray:
    """The (k, feature_dim) float32 centroids in a `model_algo-1` file."""
    loaded = decode_ndarrays(data)
    arrays = list(loaded.values()) if isinstance(loaded, dict) else loaded
    if len(arrays) != 1:
        raise ModelFormatError(f"a k-means model holds one array, this file holds {len(arrays)}")
    [centroids] = arrays
    if centroids.ndim != 2 or 0 in centroids.shape:
        raise ModelFormatError(
            f"k-means centroids are a (k, feature_dim) array, not shape {centroids.shape}"
        )
    return centroids.astype(np.float32, copy=False)


def read_centroids(model_tar_gz: bytes) -> np.ndarray:
    """The centroids of a k-means `model.tar.gz` (SageMaker's or the local stand-in's)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(model_tar_gz), mode="r:gz") as archive:
            member = next((m for m in archive if m.name.lstrip("./") == MODEL_MEMBER), None)
            if member is None or not member.isfile():
                raise ModelFormatError(f"{MODEL_ARCHIVE} has no {MODEL_MEMBER} file")
            if member.size > MAX_MODEL_BYTES:
                raise ModelFormatError(f"{MODEL_MEMBER} is too large for a model: {member.size} B")
            data = archive.extractfile(member).read()  # read in memory, never extracted
    except (tarfile.TarError, EOFError, OSError, zlib.error) as error:  # gzip's are OSErrors
        raise ModelFormatError(f"not a gzip'd tar archive: {error}") from None
    return centroids_from_ndarrays(data)


def write_model(centroids: np.ndarray) -> bytes:
    """A `model.tar.gz` as the k-means image writes it: one member, `model_algo-1`, holding the
    centroids as float32. The same centroids always give the same bytes."""
    centroids = np.asarray(centroids, dtype=np.float32)
    if centroids.ndim != 2 or 0 in centroids.shape:
        raise ValueError(f"centroids must be a non-empty 2-D array, not shape {centroids.shape}")
    payload = encode_ndarrays([centroids])
    member = tarfile.TarInfo(MODEL_MEMBER)
    member.size, member.mode, member.mtime = len(payload), 0o644, 0
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as archive:
        archive.addfile(member, io.BytesIO(payload))
    return gzip.compress(raw.getvalue(), mtime=0)


# What the model answers: the closest centroid by Euclidean distance, and that distance
# ("k-means returns a closest_cluster label and the distance_to_cluster for each observation",
# SageMaker developer guide, k-means). Rows are scored one at a time in effect: each distance is
# a sum over that row's own differences, so a row's answer does not depend on which rows share
# its request (a batch transform and an endpoint agree to the last bit).
_ROWS_PER_BLOCK = 256


def closest_clusters(centroids: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cluster index, Euclidean distance as float32) for each row of `x`."""
    centroids = np.asarray(centroids, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"rows of {x.shape[-1] if x.ndim else 0} features for a model of "
            f"{centroids.shape[1]} features"
        )
    clusters = np.empty(len(x), dtype=np.int64)
    distances = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), _ROWS_PER_BLOCK):
        block = x[start : start + _ROWS_PER_BLOCK]
        squared = np.square(block[:, None, :] - centroids[None, :, :]).sum(axis=2)
        nearest = squared.argmin(axis=1)
        clusters[start : start + len(block)] = nearest
        distances[start : start + len(block)] = np.sqrt(squared[np.arange(len(block)), nearest])
    return clusters, distances
