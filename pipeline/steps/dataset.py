"""Load and check an uploaded MNIST file (classic pickle or Keras npz) and write a run's inputs.

Standard library and numpy only: this module is embedded in the pipeline's preprocessing step.
"""

from __future__ import annotations

import gzip
import json
import os
import pathlib
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from core.contracts import (
    DATASET_SUFFIXES,
    FEATURE_DIM,
    IMAGE_SIDE,
    LAYOUT_PKL_GZ,
    NUM_CLASSES,
    dataset_layout,
)
from core.settings import BY_KEY
from pipeline.steps.recordio import write_dense_tensor

MAX_DATASET_BYTES = BY_KEY["max_dataset_bytes"].default
PIXEL_MAX_INT = 255  # integer pixels (Keras layout) are 8-bit grey levels

PKL_SPLITS = ("train", "validation", "test")  # the order of the classic tuple
NPZ_SPLITS = ("train", "test")

# A few images per class at least: k-means is trained with k = 10 clusters, so a train split
# under 100 images (10 per digit) cannot seed meaningful clusters and is almost certainly a
# wrong upload; evaluating on fewer than 10 images (one per digit) says nothing either.
MIN_IMAGES = {"train": 100, "validation": 10, "test": 10}

# A protocol-2 pickle stores array bytes as UTF-8 text, which can take up to twice the raw
# size, so a genuine dataset under max_bytes decompresses to at most about 2 x max_bytes.
MAX_GZIP_EXPANSION = 2
# Pickle opcodes that read a line (GLOBAL's module and name) never need more than this.
MAX_PICKLE_LINE_BYTES = 4096
# Protocols 0 and 1 spell array bytes as escaped text lines; no MNIST pickle uses them.
MIN_PICKLE_PROTOCOL = 2
# Test images for the batch transform: fixed-point with this many decimals, trailing zeros
# dropped ("0", "1", "0.5", "0.003922"). The error is at most 5e-7, under 1/7800 of a grey
# level, so every 8-bit pixel value survives and k-means distances move by ~1e-5 at most.
CSV_DECIMALS = 6
CSV_ROWS_PER_CHUNK = 1024  # about 7 MB of characters per chunk for 784 columns

TRAIN_DIR = "train/"


def train_shard(index: int, count: int) -> str:
    """The relative path of one training shard: one object per training instance at least."""
    return f"{TRAIN_DIR}train-{index + 1:03d}-of-{count:03d}.recordio"


TRANSFORM_INPUT_CSV = "transform-input/test.csv"
MANIFEST_JSON = "manifest.json"


def _labels_csv(split: str) -> str:
    return f"labels/{split}.csv"


class DatasetError(ValueError):
    """The uploaded file is not a usable MNIST dataset; the message is "<source>: <problem>"."""


def _reject(source: str, problem: str) -> DatasetError:
    return DatasetError(f"{source}: {problem}")


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # float32, shape (n, 784), C-contiguous, values in [0, 1]
    y: np.ndarray  # int64, shape (n,), values 0..9

    def __post_init__(self):
        # Cheap structural checks only: value ranges are checked once, by load_dataset.
        if self.x.dtype != np.float32 or self.x.ndim != 2 or self.x.shape[1] != FEATURE_DIM:
            raise ValueError(
                f"x must be float32 (n, {FEATURE_DIM}), got {self.x.dtype} {self.x.shape}"
            )
        if not self.x.flags.c_contiguous:
            raise ValueError("x must be C-contiguous")
        if self.y.dtype != np.int64 or self.y.shape != (self.x.shape[0],):
            raise ValueError(
                f"y must be int64 ({self.x.shape[0]},), got {self.y.dtype} {self.y.shape}"
            )


@dataclass(frozen=True)
class MnistDataset:
    layout: str  # "pkl.gz" or "npz"
    splits: dict[str, Split]  # "train", "test", and "validation" for pkl.gz


def load_dataset(
    path: str | os.PathLike, *, source: str, max_bytes: int = MAX_DATASET_BYTES
) -> MnistDataset:
    """Read and check the dataset at `path`; `source` (e.g. its S3 URI) names it in errors.

    Raises DatasetError for anything that is not a usable MNIST file of the layout that the
    suffix of `source` announces.
    """
    layout = dataset_layout(source)
    if layout is None:
        expected = " or ".join(DATASET_SUFFIXES)
        raise _reject(source, f"unsupported file type; expected a name ending in {expected}")
    size = os.stat(path).st_size
    if size == 0:
        raise _reject(source, "the file is empty")
    if size > max_bytes:
        raise _reject(source, f"{size} bytes is over the limit of {max_bytes} bytes; not read")
    if layout == LAYOUT_PKL_GZ:
        splits = _load_pkl_gz(path, source, max_bytes)
    else:
        splits = _load_npz(path, source, max_bytes)
    return MnistDataset(layout=layout, splits=splits)


# --- pickle -------------------------------------------------------------------------------

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.numeric import _frombuffer as _np_frombuffer


class _NdarrayMarker:
    """Stands in for numpy.ndarray in a pickle: it is only ever _reconstruct's subtype."""


_NDARRAY = _NdarrayMarker()


def _reconstruct(subtype, shape, dtype):
    # numpy pickles an empty placeholder that __setstate__ then fills from the pickled bytes,
    # so any other shape is a crafted pickle asking for memory it does not pay for.
    if subtype is not _NDARRAY or tuple(shape) != (0,):
        raise pickle.UnpicklingError("malformed numpy array reconstruction")
    return _np_reconstruct(np.ndarray, (0,), dtype)


def _latin1_encode(text, encoding="latin1", errors="strict"):
    # Protocol 2 spells array bytes as _codecs.encode(text, "latin1"); no other codec may run.
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("only latin1 text may be encoded")
    return text.encode("latin1")


def _empty_bytes(*args):
    # Protocol 2 spells b"" as bytes(); with an argument bytes() could allocate at will.
    if args:
        raise pickle.UnpicklingError("only bytes() without arguments is allowed")
    return b""


# Everything a pickled numpy array refers to, for numpy 2 (numpy._core) and files written by
# numpy 1 or Python 2 (numpy.core); found by disassembling real pickles with pickletools.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): np.dtype,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,  # protocol 5
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("_codecs", "encode"): _latin1_encode,  # protocol 2 from Python 3
    ("__builtin__", "bytes"): _empty_bytes,  # protocol 2: the data of an empty array
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays in tuples and lists, and refuses to import anything else."""

    def __init__(self, file, source: str):
        # latin1: Python 2 pickles (the original mnist.pkl.gz) hold array bytes as str.
        super().__init__(file, encoding="latin1")
        self._source = source

    def find_class(self, module, name):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise _reject(
                self._source, f"pickle refers to {module}.{name}, which a dataset may not use"
            ) from None

    def persistent_load(self, pid):
        raise _reject(self._source, "pickle refers to a persistent object")


class _GuardedGzipReader:
    """The file interface the unpickler reads, over a gzip stream with its output bounded."""

    def __init__(self, gz: gzip.GzipFile, limit: int, source: str):
        self._gz = gz
        self._limit = limit
        self._source = source
        self.total = 0

    def _call(self, method, *args):
        try:
            return method(*args)
        except EOFError:
            raise _reject(self._source, "gzip data is truncated") from None
        except gzip.BadGzipFile as exc:
            raise _reject(self._source, f"not a gzip file ({exc})") from None
        except (zlib.error, OSError) as exc:
            raise _reject(self._source, f"gzip data is corrupt ({exc})") from None

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self._limit:
            raise _reject(
                self._source,
                f"decompresses to more than {self._limit} bytes "
                f"({MAX_GZIP_EXPANSION} x the limit); refused as a possible gzip bomb",
            )

    def _room(self, size: int | None) -> int:
        # Never ask gzip for more than one byte past the limit, whatever length a pickle
        # opcode claims: buffered readers allocate the requested size up front.
        room = self._limit - self.total + 1
        return room if size is None or size < 0 else min(size, room)

    def read(self, size: int | None = -1) -> bytes:
        data = self._call(self._gz.read, self._room(size))
        self._count(len(data))
        return data

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = self._call(self._gz.readinto, view[: self._room(len(view))])
        self._count(n)
        return n

    def readline(self, size: int | None = -1) -> bytes:
        cap = MAX_PICKLE_LINE_BYTES if size is None or size < 0 else size
        data = self._call(self._gz.readline, self._room(cap))
        self._count(len(data))
        return data

    def peek_protocol(self) -> int | None:
        head = self._call(self._gz.peek, 2)[:2]
        return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else None

    def at_end(self) -> bool:
        # Reading on to the end makes gzip check its CRC and spots truncation after the pickle.
        return self.read(1) == b""


_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    OverflowError,
    MemoryError,
)


def _load_pkl_gz(path, source: str, max_bytes: int) -> dict[str, Split]:
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        reader = _GuardedGzipReader(gz, max_bytes * MAX_GZIP_EXPANSION, source)
        protocol = reader.peek_protocol()
        if protocol is None or protocol < MIN_PICKLE_PROTOCOL:
            raise _reject(source, f"not a pickle of protocol {MIN_PICKLE_PROTOCOL} or later")
        try:
            obj = _NumpyOnlyUnpickler(reader, source).load()
        except DatasetError:
            raise
        except _PICKLE_ERRORS as exc:
            raise _reject(source, f"not a valid pickle ({type(exc).__name__}: {exc})") from None
        if not reader.at_end():
            raise _reject(source, "unexpected data after the pickle")

    if not _is_sequence(obj, len(PKL_SPLITS)):
        raise _reject(
            source,
            "pickle must hold a tuple ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))"
            f", got {_describe(obj)}",
        )
    splits = {}
    for name, pair in zip(PKL_SPLITS, obj, strict=True):
        if not _is_sequence(pair, 2):
            raise _reject(source, f"the {name} split must be a pair (x, y), got {_describe(pair)}")
        splits[name] = _make_split(source, name, pair[0], pair[1])
    return splits


def _is_sequence(obj, length: int) -> bool:
    return isinstance(obj, tuple | list) and len(obj) == length


def _describe(obj) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


# --- npz ----------------------------------------------------------------------------------

_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _load_npz(path, source: str, max_bytes: int) -> dict[str, Split]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise _reject(source, f"not a valid .npz (zip) file ({exc})") from None
    with archive:
        members = {info.filename: info for info in archive.infolist()}
        declared = sum(info.file_size for info in members.values())
        if declared > max_bytes:
            raise _reject(
                source,
                f"arrays would decompress to {declared} bytes, over the limit of {max_bytes} bytes",
            )
        wanted = [f"{axis}_{split}" for split in NPZ_SPLITS for axis in ("x", "y")]
        missing = [name for name in wanted if f"{name}.npy" not in members]
        if len(missing) == 1:
            raise _reject(source, f"array '{missing[0]}' is missing")
        if missing:
            raise _reject(source, f"arrays {', '.join(map(repr, missing))} are missing")
        arrays = {name: _read_npy(archive, members[f"{name}.npy"], source, name) for name in wanted}
    return {
        split: _make_split(source, split, arrays[f"x_{split}"], arrays[f"y_{split}"])
        for split in NPZ_SPLITS
    }


def _read_npy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, name: str):
    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        if dtype.hasobject:
            raise _reject(source, f"array '{name}' holds Python objects, not numbers")
        # zipfile stops at the declared size, so a header claiming more is a lie that would
        # make numpy allocate memory for data that does not exist.
        if int(np.prod(shape)) * dtype.itemsize > info.file_size:
            raise _reject(source, f"array '{name}' claims more data than it stores")
        with archive.open(info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except DatasetError:
        raise
    except _NPZ_ERRORS as exc:
        raise _reject(source, f"array '{name}' is unreadable ({exc})") from None


# --- checks shared by both layouts --------------------------------------------------------


def _make_split(source: str, split: str, x, y) -> Split:
    x_name, y_name = f"x_{split}", f"y_{split}"
    for name, value in ((x_name, x), (y_name, y)):
        if not isinstance(value, np.ndarray):
            raise _reject(source, f"{name} is {_describe(value)}, not a numpy array")
    if x.dtype.kind not in "fui":
        raise _reject(
            source,
            f"{x_name} has dtype {x.dtype}; expected floats in [0, 1] or integers 0..255",
        )
    if y.dtype.kind not in "ui":
        raise _reject(source, f"{y_name} has dtype {y.dtype}; expected integer labels")
    if x.ndim not in (2, 3) or x.shape[1:] not in ((FEATURE_DIM,), (IMAGE_SIDE, IMAGE_SIDE)):
        raise _reject(
            source,
            f"{x_name} has shape {x.shape}; expected (n, {FEATURE_DIM}) or "
            f"(n, {IMAGE_SIDE}, {IMAGE_SIDE})",
        )
    if y.ndim != 1:
        raise _reject(source, f"{y_name} has shape {y.shape}; expected (n,)")
    n = x.shape[0]
    if y.shape[0] != n:
        raise _reject(source, f"{x_name} has {n} images but {y_name} has {y.shape[0]} labels")
    if n < MIN_IMAGES[split]:
        raise _reject(
            source, f"the {split} split has {n} images; at least {MIN_IMAGES[split]} are required"
        )

    low, high = x.min(), x.max()
    if x.dtype.kind == "f":
        if np.isnan(low) or np.isnan(high):
            raise _reject(source, f"{x_name} contains NaN")
        if low < 0 or high > 1:
            raise _reject(source, f"{x_name} has pixels outside [0, 1] (min {low:g}, max {high:g})")
        features = np.ascontiguousarray(x.reshape(n, FEATURE_DIM), dtype=np.float32)
    else:
        if low < 0 or high > PIXEL_MAX_INT:
            raise _reject(
                source,
                f"{x_name} has pixels outside 0..{PIXEL_MAX_INT} (min {low}, max {high})",
            )
        features = x.reshape(n, FEATURE_DIM).astype(np.float32)
        features /= PIXEL_MAX_INT

    low, high = y.min(), y.max()
    if low < 0 or high >= NUM_CLASSES:
        raise _reject(
            source, f"{y_name} has labels outside 0..{NUM_CLASSES - 1} (min {low}, max {high})"
        )
    return Split(x=features, y=y.astype(np.int64))


# --- run inputs ---------------------------------------------------------------------------


def write_run_inputs(
    dataset: MnistDataset, out_dir: pathlib.Path, train_shards: int = 1
) -> dict[str, str]:
    """Write the files a run needs under `out_dir`; returns {logical name: relative path}.

    Names: "train_<i>" (RecordIO-protobuf with labels, the training rows split in
    `train_shards` objects: SageMaker's ShardedByS3Key gives each training instance whole
    objects, so there must be one per instance at least), "transform_input" (test images as
    CSV, no labels), "<split>_labels" (one integer a line) for each split, and "manifest".
    """
    out_dir = pathlib.Path(out_dir)
    files: dict[str, str] = {}

    def create(name: str, relative: str) -> BinaryIO:
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        files[name] = relative
        return open(target, "wb")

    train = dataset.splits["train"]
    if not 1 <= train_shards <= train.y.shape[0]:
        raise ValueError(f"cannot split {train.y.shape[0]} images in {train_shards} shards")
    bounds = np.linspace(0, train.y.shape[0], train_shards + 1).astype(int)
    for index, (start, stop) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        with create(f"train_{index}", train_shard(index, train_shards)) as out:
            write_dense_tensor(out, train.x[start:stop], train.y[start:stop].astype(np.float32))
    with create("transform_input", TRANSFORM_INPUT_CSV) as out:
        write_pixels_csv(out, dataset.splits["test"].x)
    for split in PKL_SPLITS:
        if split in dataset.splits:
            with create(f"{split}_labels", _labels_csv(split)) as out:
                out.write(format_labels_csv(dataset.splits[split].y))

    files["manifest"] = MANIFEST_JSON
    manifest = {
        "layout": dataset.layout,
        "feature_dim": FEATURE_DIM,
        "counts": {name: int(split.y.shape[0]) for name, split in dataset.splits.items()},
        "csv_decimals": CSV_DECIMALS,
        "files": files,
    }
    (out_dir / MANIFEST_JSON).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return dict(files)


def write_pixels_csv(out: BinaryIO, x: np.ndarray) -> int:
    """Write rows of pixels in [0, 1] as CSV lines; returns the bytes written."""
    written = 0
    for start in range(0, x.shape[0], CSV_ROWS_PER_CHUNK):
        data = format_pixels_csv(x[start : start + CSV_ROWS_PER_CHUNK])
        out.write(data)
        written += len(data)
    return written


def format_pixels_csv(x: np.ndarray) -> bytes:
    """Rows of pixels in [0, 1] as CSV text, built as one character array (no per-value loop).

    Each value takes a fixed slot "d.dddddd," that a mask then trims: the dot and fraction
    vanish for whole numbers, trailing zeros of the fraction vanish otherwise.
    """
    scale = 10**CSV_DECIMALS
    # float64: float32 cannot hold x * 1e6 exactly enough to round at the last decimal.
    fixed = np.rint(x.astype(np.float64) * scale).astype(np.int32)
    if fixed.size and (fixed.min() < 0 or fixed.max() > scale):
        raise ValueError("pixels must be in [0, 1]")
    whole, frac = np.divmod(fixed, scale)
    rows, cols = fixed.shape
    slot = 2 + CSV_DECIMALS + 1
    chars = np.empty((rows, cols, slot), dtype=np.uint8)
    keep = np.empty((rows, cols, slot), dtype=bool)
    chars[..., 0] = whole + ord("0")
    keep[..., 0] = True
    chars[..., 1] = ord(".")
    keep[..., 1] = frac != 0
    for place in range(CSV_DECIMALS):
        unit = 10 ** (CSV_DECIMALS - 1 - place)
        chars[..., 2 + place] = (frac // unit) % 10 + ord("0")
        # A digit stays while it or any later digit is non-zero.
        keep[..., 2 + place] = frac % (unit * 10) != 0
    chars[..., -1] = ord(",")
    chars[:, -1, -1] = ord("\n")
    keep[..., -1] = True
    return chars[keep].tobytes()


def format_labels_csv(y: np.ndarray) -> bytes:
    """One label 0..9 a line."""
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be 0..{NUM_CLASSES - 1}")
    lines = np.empty((y.shape[0], 2), dtype=np.uint8)
    lines[:, 0] = y + ord("0")
    lines[:, 1] = ord("\n")
    return lines.tobytes()
