"""Load and check an uploaded MNIST file (classic pickle or Keras npz) and write a run's inputs.

Standard library and numpy only: this module is embedded in the pipeline's preprocessing step.

Loading is bounded twice, before anything is allocated:

- by `max_dataset_bytes`, counted on the decompressed bytes as they come out of gzip or out of
  a zip member (a bomb stops at the limit, and a declared length past it is refused unread);
- by the step's memory (`preprocess_memory`, the pod's request and limit): every allocation the
  load makes is charged to a `MemoryBudget` first, so a file that would need more is refused
  with a one-line reason instead of being killed by the kernel.

Pickles are read by a small pickle machine of our own (`_DatasetUnpickler`): only the opcodes a
pickled numpy array uses, only the globals it names, no shared arrays, dtypes exactly as numpy
builds them. Anything else ends in a DatasetError that says why.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import os
import pathlib
import pickle
import re
import struct
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
PREPROCESS_MEMORY = BY_KEY["preprocess_memory"].default  # a Kubernetes quantity, e.g. "4608Mi"
PIXEL_MAX_INT = 255  # integer pixels (Keras layout) are 8-bit grey levels

PKL_SPLITS = ("train", "validation", "test")  # the order of the classic tuple
NPZ_SPLITS = ("train", "test")

# A few images per class at least: a train split under 100 images (10 per digit) cannot seed
# meaningful clusters (k is 32 by default) and is almost certainly a wrong upload; evaluating
# on fewer than 10 images (one per digit) says nothing either.
MIN_IMAGES = {"train": 100, "validation": 10, "test": 10}

# Of the pod's memory, what the load itself may not use: the interpreter with numpy, boto3 and
# the KFP executor (~130 MB measured), KFP's launcher (tens of MB), the S3 transfer buffers,
# and the output chunks of write_run_inputs (RecordIO 16 MB, CSV ~60 MB).
MEMORY_RESERVE_BYTES = 512 * 1024**2
# Pickle opcodes that read a line (GLOBAL's module and name) never need more than this.
MAX_PICKLE_LINE_BYTES = 4096
# Protocols 0 and 1 spell array bytes as escaped text lines; no MNIST pickle uses them.
MIN_PICKLE_PROTOCOL = 2
# A pickled dataset is a few hundred opcodes; an object array of 100 x 784 is ~80,000.
MAX_PICKLE_OPCODES = 1_000_000
# A dataset holds no dicts; a few items are allowed (for the error that names what it got),
# not many: keys that collide (integers a multiple of 2**61 - 1 apart) cost quadratic time.
MAX_PICKLE_DICT_ITEMS = 1000
# What one opcode may cost in memory besides the data it reads (a stack slot, a small object,
# a memo entry): charged to the budget for each, so no stream of opcodes outgrows it.
PICKLE_OPCODE_BYTES = 256
# Protocol 4 frames hold small opcodes only (the pickler writes them ~64 KiB at a time and puts
# large data outside them).
MAX_PICKLE_FRAME_BYTES = 1024**2
# Data a pickle may memoize and refer to again: small strings (a dtype code, "latin1"). A
# second reference to an array's data would give two splits one array (aliasing).
MAX_SHARED_DATA_BYTES = 4096
# What numpy's own .npy reader allows for a header (numpy.lib.format._MAX_HEADER_SIZE).
MAX_NPY_HEADER_BYTES = 10_000
# A zip's central directory is read whole by zipfile; an .npz's has four entries.
MAX_ZIP_DIRECTORY_BYTES = 1024**2
NPY_READ_CHUNK_BYTES = 4 * 1024**2
# Large pickled data (array bytes) is read and decoded this much at a time, into the one buffer
# that becomes the array: never a whole second copy, whatever the protocol.
PICKLE_READ_CHUNK_BYTES = 1024**2
# Test images for the batch transform: fixed-point with this many decimals, trailing zeros
# dropped ("0", "1", "0.5", "0.003922"). The error is at most 5e-7, under 1/7800 of a grey
# level, so every 8-bit pixel value survives and k-means distances move by ~1e-5 at most.
CSV_DECIMALS = 6
CSV_ROWS_PER_CHUNK = 1024  # about 7 MB of characters per chunk for 784 columns

TRAIN_DIR = "train/"


def train_shard(index: int, count: int) -> str:
    """The relative path of one training shard: one object per training instance at least."""
    return f"{TRAIN_DIR}train-{index + 1:03d}-of-{count:03d}.recordio"


# The batch transform's input: the images of the splits evaluate scores, one file each (the
# transform writes <name>.out for each: SageMaker developer guide, "Batch transform").
TRANSFORM_INPUT_DIR = "transform-input/"
TRANSFORM_SPLITS = ("validation", "test")
# The Keras layout has no validation split: the last sixth of train becomes one, as in the
# classic layout (50,000 / 10,000 of MNIST's 60,000 training images).
VALIDATION_SHARE_OF_TRAIN = 6


def transform_input(split: str) -> str:
    return f"{TRANSFORM_INPUT_DIR}{split}.csv"


MANIFEST_JSON = "manifest.json"


def labels_csv(split: str) -> str:
    return f"labels/{split}.csv"


class DatasetError(ValueError):
    """The uploaded file is not a usable MNIST dataset; the message is "<source>: <problem>"."""


def _reject(source: str, problem: str) -> DatasetError:
    return DatasetError(f"{source}: {problem}")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- memory -------------------------------------------------------------------------------

_QUANTITY = re.compile(r"([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_QUANTITY_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def memory_bytes(quantity: str) -> int:
    """The bytes of a Kubernetes memory quantity: "4608Mi", "4Gi", "512M" or plain bytes."""
    match = _QUANTITY.fullmatch(str(quantity).strip())
    if not match:
        raise ValueError(f"{quantity!r} is not a memory quantity such as 4608Mi")
    return int(match[1]) * _QUANTITY_UNITS[match[2]]


class MemoryBudget:
    """The bytes a load may hold: each allocation it makes is charged here before it is made.

    The limit is the step's memory (`preprocess_memory`) less MEMORY_RESERVE_BYTES. Charges
    are released only where the freed memory is certain (a read buffer once decoded, a copy
    numpy did not make), so `held` is an upper bound of what the load really holds.
    """

    def __init__(self, memory_limit: int, source: str):
        self.memory_limit = memory_limit
        self.limit = memory_limit - MEMORY_RESERVE_BYTES
        if self.limit <= 0:
            raise ValueError(
                f"a memory limit of {memory_limit} bytes leaves nothing for the data after the "
                f"{MEMORY_RESERVE_BYTES} bytes kept for the runtime"
            )
        self.source = source
        self.held = 0
        self.peak = 0

    def check(self, n: int, what: str) -> None:
        if self.held + n > self.limit:
            raise _reject(
                self.source,
                f"{what} would need {n} bytes more, {self.held + n} in all: over the memory "
                f"budget of {self.limit} bytes (preprocess_memory, {self.memory_limit} bytes, "
                f"less {MEMORY_RESERVE_BYTES} for the runtime); refused before allocating",
            )

    def charge(self, n: int, what: str) -> None:
        self.check(n, what)
        self.held += n
        self.peak = max(self.peak, self.held)

    def release(self, n: int) -> None:
        self.held -= n


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
    path: str | os.PathLike,
    *,
    source: str,
    max_bytes: int = MAX_DATASET_BYTES,
    memory_limit: int | None = None,
) -> MnistDataset:
    """Read and check the dataset at `path`; `source` (e.g. its S3 URI) names it in errors.

    `max_bytes` bounds the file and its decompressed bytes; `memory_limit` (bytes; default
    PREPROCESS_MEMORY) is the step's memory, of which the load may use all but
    MEMORY_RESERVE_BYTES. Raises DatasetError for anything that is not a usable MNIST file of
    the layout that the suffix of `source` announces, or that would need more than that.
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
    if memory_limit is None:
        memory_limit = memory_bytes(PREPROCESS_MEMORY)
    budget = MemoryBudget(memory_limit, source)
    if layout == LAYOUT_PKL_GZ:
        splits = _load_pkl_gz(path, source, max_bytes, budget)
    else:
        splits = _load_npz(path, source, max_bytes, budget)
    return MnistDataset(layout=layout, splits=splits)


# --- decompression ------------------------------------------------------------------------


class _BoundedReader:
    """A decompressing stream whose output is counted as it comes out, against `limit`.

    It never asks the stream for more than one byte past the limit, so neither gzip's nor
    zipfile's buffers grow past it, whatever length a pickle or a header declares.
    """

    bomb = "decompression bomb"  # what a stream past the limit is, in the refusal

    def __init__(self, stream, limit: int, source: str):
        self._stream = stream
        self.limit = limit
        self.source = source
        self.total = 0

    @property
    def room(self) -> int:
        return self.limit - self.total

    def _call(self, method, *args):
        return method(*args)

    def _count(self, n: int) -> None:
        self.total += n
        if self.total > self.limit:
            raise _reject(
                self.source,
                f"decompresses to more than {self.limit} bytes, the limit (max_dataset_bytes); "
                f"refused as a possible {self.bomb}",
            )

    def expect(self, n: int, what: str) -> None:
        """Refuse a declared length that the limit cannot hold, before reading any of it."""
        if n > self.room:
            raise _reject(
                self.source,
                f"declares {what} of {n} bytes, which would take it past the limit of "
                f"{self.limit} decompressed bytes (max_dataset_bytes; {self.room} left); "
                f"refused as a possible {self.bomb}",
            )

    def read(self, size: int) -> bytes:
        data = self._call(self._stream.read, min(size, self.room + 1))
        self._count(len(data))
        return data

    def read_exact(self, size: int, what: str) -> bytes:
        self.expect(size, what)
        data = self.read(size)
        if len(data) < size:
            raise EOFError(f"the data ends inside {what}")
        return data

    def readline(self, size: int) -> bytes:
        data = self._call(self._stream.readline, min(size, self.room + 1))
        self._count(len(data))
        return data

    def at_end(self) -> bool:
        # Reading on to the end makes gzip check its CRC and spots truncation after the pickle.
        return self.read(1) == b""


class _GzipReader(_BoundedReader):
    """A _BoundedReader over gzip, whose failures become dataset errors naming the problem."""

    bomb = "gzip bomb"

    def _call(self, method, *args):
        try:
            return method(*args)
        except EOFError:
            raise _reject(self.source, "gzip data is truncated") from None
        except gzip.BadGzipFile as exc:
            raise _reject(self.source, f"not a gzip file ({_one_line(exc)})") from None
        except (zlib.error, OSError) as exc:
            raise _reject(self.source, f"gzip data is corrupt ({_one_line(exc)})") from None

    def peek_protocol(self) -> int | None:
        head = self._call(self._stream.peek, 2)[:2]
        return head[1] if len(head) == 2 and head[0] == pickle.PROTO[0] else None


# --- pickle -------------------------------------------------------------------------------


class _NdarrayMarker:
    """Stands in for numpy.ndarray in a pickle: it is only ever _reconstruct's subtype."""


_NDARRAY = _NdarrayMarker()


class _Aliased:
    """What the memo keeps instead of large data: a second reference to it is refused."""

    def __init__(self, size: int):
        self.size = size


class _Blob:
    """Large pickled data (over MAX_SHARED_DATA_BYTES), read into one uint8 buffer.

    `text` says what the pickle meant: a string (protocol 2 spells array bytes as latin1 text;
    the buffer holds its latin1 bytes, one per character) or bytes. Arrays are views of it.
    """

    __slots__ = ("data", "text")

    def __init__(self, data: np.ndarray, text: bool):
        self.data = data
        self.text = text

    def __len__(self) -> int:
        return self.data.size


def _empty_bytes(*args):
    # Protocol 2 spells b"" as bytes(); with an argument bytes() could allocate at will.
    if args:
        raise pickle.UnpicklingError("only bytes() without arguments is allowed")
    return b""


# A dtype code as numpy pickles it: "f4", "<i8", "u1", "b1", "O8", "U1" (no structures or
# subarrays, which numpy spells with commas, parentheses or lists).
_DTYPE_CODE = re.compile(r"[<>|=]?[a-zA-Z][0-9]{0,4}")
# Kinds whose arrays are plain bytes: numpy builds them from the pickled data. Any other kind
# (objects, voids, dates) is kept empty with its dtype, for the checks to name.
_DATA_KINDS = "biufcSU"
_MAX_DIMENSIONS = 32


def _canonical(dtype: np.dtype) -> bool:
    """Whether `dtype` is exactly what numpy builds from its own type string: its flags, size
    and alignment untouched (a pickle can set them through the dtype's state, item 8 of issue
    10: numpy then crashes, or writes object pointers into a number buffer)."""
    try:
        reference = np.dtype(dtype.str)
    except (TypeError, ValueError):
        return False
    return (
        dtype.names is None
        and dtype.subdtype is None
        and dtype.flags == reference.flags
        and dtype.itemsize == reference.itemsize
        and dtype.alignment == reference.alignment
        and dtype.kind == reference.kind
    )


class _DatasetUnpickler:
    """A pickle machine for numpy arrays in tuples, lists and dicts, and nothing else.

    Only the opcodes such pickles use (protocols 2 to 5, written by Python 3 or by Python 2's
    cPickle) and only the globals a numpy array names. Every allocation is checked first:
    declared lengths against the decompressed limit, data and arrays against the memory
    budget, array shapes against the data they hold. Large data is never memoized, so a second
    reference to an array or to its bytes (two splits sharing one array) is refused.
    """

    def __init__(self, reader: _BoundedReader, budget: MemoryBudget, source: str):
        self._reader = reader
        self._budget = budget
        self._source = source
        self._stack: list = []
        self._marks: list[list] = []
        self._memo: dict = {}
        self._frame: io.BytesIO | None = None
        self._frame_size = 0
        self._opcodes = 0
        self._dict_items = 0
        self._pending: dict[int, np.ndarray] = {}  # arrays made by _reconstruct, not yet built
        # Large data not yet in an array: numpy's pickles put each array's data into its array
        # before the next array's data comes, so a second is data no array will use (a bomb).
        self._loose: _Blob | None = None
        self._globals = {
            ("numpy", "ndarray"): _NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,  # protocol 5
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("_codecs", "encode"): self._latin1_encode,  # protocol 2 from Python 3
            ("__builtin__", "bytes"): _empty_bytes,  # protocol 2: the data of an empty array
        }
        self._callables = [f for f in self._globals.values() if f is not _NDARRAY]

    def _refuse(self, problem: str) -> DatasetError:
        return _reject(self._source, problem)

    # -- reading

    def _in_frame(self) -> bool:
        return self._frame is not None and self._frame.tell() < self._frame_size

    def _read(self, n: int) -> bytes:
        if self._frame is not None:
            data = self._frame.read(n)
            if data or n == 0:
                if len(data) < n:
                    raise pickle.UnpicklingError("pickle exhausted before end of frame")
                return data
            self._frame = None
        return self._reader.read(n)

    def _read_exact(self, n: int) -> bytes:
        data = self._read(n)
        if len(data) < n:
            raise EOFError("the pickle ends in the middle of an opcode")
        return data

    def _unpack(self, fmt: str):
        return struct.unpack(fmt, self._read_exact(struct.calcsize(fmt)))[0]

    def _data(self, n: int, what: str) -> bytes:
        """`n` declared bytes of data, once the limits allow them."""
        if n < 0:
            raise pickle.UnpicklingError(f"negative length for {what}")
        in_frame = self._in_frame()
        if not in_frame:
            self._reader.expect(n, what)
        self._budget.charge(n, f"{what} of {n} bytes")
        return self._read_exact(n)

    def _text(self, n: int, decode) -> str:
        data = self._data(n, "a string")
        # The decoded copy exists next to the raw bytes until these go.
        self._budget.charge(n, f"a string of {n} bytes")
        text = decode(data)
        del data
        self._budget.release(n)
        return text

    def _blob(self, n: int, what: str, *, utf8: bool, text: bool) -> _Blob:
        """`n` declared bytes of large data, read a chunk at a time into one buffer: the raw
        bytes, or for UTF-8 text its latin1 bytes (what _codecs.encode would make of it)."""
        if not self._in_frame():
            self._reader.expect(n, what)
        if self._loose is not None:
            raise self._refuse(
                f"the pickle holds {len(self._loose)} bytes of data that no array took before "
                f"{what} of {n} bytes: a numpy pickle puts each array's data into its array "
                "first; refused as a possible bomb"
            )
        self._budget.charge(n, f"{what} of {n} bytes")
        buffer = np.empty(n, np.uint8)
        decoder = codecs.getincrementaldecoder("utf-8")("surrogatepass") if utf8 else None
        done = filled = 0
        while done < n:
            chunk = self._read_exact(min(PICKLE_READ_CHUNK_BYTES, n - done))
            done += len(chunk)
            if decoder is not None:
                try:
                    chunk = decoder.decode(chunk, final=done == n).encode("latin1")
                except UnicodeEncodeError:
                    raise self._refuse(
                        f"the pickle holds {n} bytes of text that are no array's data"
                    ) from None
            buffer[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
            filled += len(chunk)
        if filled < n:  # UTF-8 took more bytes than the characters it spells
            buffer.resize(filled, refcheck=False)
            self._budget.release(n - filled)
        self._loose = _Blob(buffer, text)
        return self._loose

    def _taken(self, blob: _Blob) -> None:
        if blob is self._loose:
            self._loose = None

    # -- the machine

    def load(self):
        read = self._read
        while True:
            code = read(1)
            if not code:
                raise EOFError("the pickle ends before its STOP opcode")
            self._opcodes += 1
            if self._opcodes > MAX_PICKLE_OPCODES:
                raise self._refuse(
                    f"the pickle has more than {MAX_PICKLE_OPCODES} opcodes; a dataset has a few"
                    " hundred"
                )
            self._budget.charge(PICKLE_OPCODE_BYTES, "the pickle's opcodes")
            handler = _OPCODES.get(code[0])
            if handler is None:
                raise self._refuse(
                    f"the pickle uses the {_opcode_name(code)} opcode, which a numpy dataset never"
                    " needs"
                )
            if handler(self):
                return self._stack.pop()

    def _pop_mark(self) -> list:
        items = self._stack
        self._stack = self._marks.pop()
        return items

    def _proto(self):
        protocol = self._read_exact(1)[0]
        if not MIN_PICKLE_PROTOCOL <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise pickle.UnpicklingError(f"unsupported pickle protocol: {protocol}")

    def _frame_opcode(self):
        size = self._unpack("<Q")
        if self._in_frame():
            raise pickle.UnpicklingError("beginning of a new frame before end of current frame")
        if size > MAX_PICKLE_FRAME_BYTES:
            raise self._refuse(
                f"the pickle has a frame of {size} bytes; pickle's frames are about 64 KiB"
            )
        self._frame = io.BytesIO(self._reader.read_exact(size, "a frame"))
        self._frame_size = size

    def _stop(self):
        return True

    def _mark(self):
        self._marks.append(self._stack)
        self._stack = []

    def _push(value):
        def handler(self):
            self._stack.append(value)

        return handler

    def _empty_list(self):
        self._stack.append([])

    def _empty_dict(self):
        self._stack.append({})

    def _tuple(self):
        items = tuple(self._pop_mark())  # before naming self._stack: popping the mark swaps it
        self._stack.append(items)

    def _tuple_n(n):
        def handler(self):
            if len(self._stack) < n:
                raise pickle.UnpicklingError("stack underflow")
            items = tuple(self._stack[len(self._stack) - n :])
            del self._stack[len(self._stack) - n :]
            self._stack.append(items)

        return handler

    def _list(self):
        items = self._pop_mark()
        self._stack.append(items)

    def _dict(self):
        items = self._pop_mark()
        target = {}
        self._set_items(target, items)
        self._stack.append(target)

    def _set_items(self, target: dict, items: list) -> None:
        self._dict_items += len(items) // 2
        if self._dict_items > MAX_PICKLE_DICT_ITEMS:
            raise self._refuse(
                f"the pickle has dicts of more than {MAX_PICKLE_DICT_ITEMS} items; a dataset has"
                " none"
            )
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]

    def _container(self, kind: type):
        target = self._stack[-1]
        if type(target) is not kind:
            raise pickle.UnpicklingError(f"cannot add items to {_describe(target)}")
        return target

    def _append(self):
        value = self._stack.pop()
        self._container(list).append(value)

    def _appends(self):
        items = self._pop_mark()
        self._container(list).extend(items)

    def _setitem(self):
        value = self._stack.pop()
        key = self._stack.pop()
        self._set_items(self._container(dict), [key, value])

    def _setitems(self):
        items = self._pop_mark()
        self._set_items(self._container(dict), items)

    def _number(fmt: str):
        def handler(self):
            self._stack.append(self._unpack(fmt))

        return handler

    def _long1(self):
        data = self._data(self._unpack("<B"), "an integer")
        self._stack.append(int.from_bytes(data, "little", signed=True))

    def _unicode(fmt: str):
        def handler(self):
            n = self._unpack(fmt)
            if n > MAX_SHARED_DATA_BYTES:
                self._stack.append(self._blob(n, "a string", utf8=True, text=True))
            else:
                self._stack.append(self._text(n, lambda b: str(b, "utf-8", "surrogatepass")))

        return handler

    def _string(fmt: str):
        # Python 2's str: text to Python 3, decoded as latin1 like every Python 2 pickle here.
        def handler(self):
            n = self._unpack(fmt)
            if n > MAX_SHARED_DATA_BYTES:
                self._stack.append(self._blob(n, "a string", utf8=False, text=True))
            else:
                self._stack.append(self._text(n, lambda b: b.decode("latin1")))

        return handler

    def _bytes(fmt: str, what: str = "a bytes object"):
        def handler(self):
            n = self._unpack(fmt)
            if n > MAX_SHARED_DATA_BYTES:
                self._stack.append(self._blob(n, what, utf8=False, text=False))
            else:
                data = self._data(n, what)
                self._stack.append(bytearray(data) if what == "a bytearray" else data)

        return handler

    def _global(self):
        module = self._line("a global's module")
        name = self._line("a global's name")
        self._stack.append(self._find_class(module, name))

    def _line(self, what: str) -> str:
        if self._in_frame():
            line = self._frame.readline(MAX_PICKLE_LINE_BYTES)
        else:
            self._frame = None
            line = self._reader.readline(MAX_PICKLE_LINE_BYTES)
        if not line.endswith(b"\n"):
            raise pickle.UnpicklingError(f"{what} is not a line of at most 4096 bytes")
        return line[:-1].decode("utf-8")

    def _stack_global(self):
        name = self._stack.pop()
        module = self._stack.pop()
        if type(name) is not str or type(module) is not str:
            raise pickle.UnpicklingError("STACK_GLOBAL requires str")
        self._stack.append(self._find_class(module, name))

    def _find_class(self, module: str, name: str):
        try:
            return self._globals[(module, name)]
        except KeyError:
            name = _printable(f"{module}.{name}")  # the pickle's own text: kept on one line
            raise self._refuse(f"pickle refers to {name}, which a dataset may not use") from None

    def _put(self, index: int) -> None:
        value = self._stack[-1]
        if isinstance(value, _Blob) or (
            isinstance(value, str | bytes | bytearray) and len(value) > MAX_SHARED_DATA_BYTES
        ):
            value = _Aliased(len(value))  # never referred to again by a genuine dataset
        self._memo[index] = value

    def _binput(fmt: str):
        def handler(self):
            self._put(self._unpack(fmt))

        return handler

    def _memoize(self):
        self._put(len(self._memo))

    def _binget(fmt: str):
        def handler(self):
            index = self._unpack(fmt)
            try:
                value = self._memo[index]
            except KeyError:
                raise pickle.UnpicklingError(f"memo value not found at index {index}") from None
            if isinstance(value, _Aliased):
                raise self._refuse(
                    f"the pickle refers to the same {value.size} bytes of array data twice: each"
                    " array of a dataset must hold its own (aliased arrays are refused)"
                )
            if isinstance(value, np.ndarray):
                raise self._refuse(
                    "the pickle refers to the same numpy array twice: each split of a dataset"
                    " must hold its own arrays (aliased arrays are refused)"
                )
            self._stack.append(value)

        return handler

    def _reduce(self):
        args = self._stack.pop()
        func = self._stack[-1]
        if not any(func is allowed for allowed in self._callables):
            raise self._refuse(f"the pickle calls {_describe(func)}, which builds no numpy array")
        if type(args) is not tuple:
            raise pickle.UnpicklingError("REDUCE arguments must be a tuple")
        self._stack[-1] = func(*args)

    def _build(self):
        state = self._stack.pop()
        target = self._stack[-1]
        if isinstance(target, np.dtype):
            self._build_dtype(target, state)
        elif isinstance(target, np.ndarray):
            self._stack[-1] = self._build_array(target, state)
        else:
            raise self._refuse(f"the pickle sets the state of {_describe(target)}")

    # -- the globals

    def _dtype(self, code, align=False, copy=False):
        if isinstance(code, bytes):
            code = code.decode("latin1")
        if type(code) is not str or not _DTYPE_CODE.fullmatch(code):
            raise self._refuse(
                f"the pickle asks for the numpy dtype {_short_repr(code)}; a dataset's arrays"
                " have plain number types"
            )
        # Always a copy: BUILD sets its state, which must never reach numpy's shared dtypes.
        return np.dtype(code, bool(align), True)

    def _build_dtype(self, dtype: np.dtype, state) -> None:
        # numpy's dtype __setstate__ trusts its input: a state of another length or with other
        # types in it crashes numpy at once (a segfault: it takes an int for the fields dict),
        # and flags it never sets crash it later (item 8). So the only state that reaches
        # numpy is the one numpy writes for this very dtype, its byte order aside.
        own = dtype.__reduce__()[2]
        if not _same_state(state, own):
            raise self._refuse(_dtype_state_problem(dtype, state, own))
        dtype.__setstate__(state)
        if not _canonical(dtype):
            raise self._refuse(_dtype_problem(dtype))

    def _checked_dtype(self, dtype) -> np.dtype:
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError(f"an array's dtype is {_describe(dtype)}")
        if not _canonical(dtype):
            raise self._refuse(_dtype_problem(dtype))
        return dtype

    def _checked_shape(self, shape) -> tuple[int, ...]:
        if (
            type(shape) is not tuple
            or len(shape) > _MAX_DIMENSIONS
            or not all(type(n) is int and n >= 0 for n in shape)
        ):
            raise self._refuse(f"the pickle declares an array of shape {_short_repr(shape)}")
        return shape

    def _reconstruct(self, subtype, shape, code):
        # numpy pickles an empty placeholder that BUILD then fills from the pickled bytes, so
        # any other shape is a crafted pickle asking for memory it does not pay for.
        if subtype is not _NDARRAY or shape != (0,) or code not in (b"b", "b"):
            raise pickle.UnpicklingError("malformed numpy array reconstruction")
        array = np.empty((0,), np.int8)
        self._pending[id(array)] = array
        return array

    def _build_array(self, array: np.ndarray, state) -> np.ndarray:
        if self._pending.pop(id(array), None) is not array:
            raise self._refuse("the pickle sets the state of a numpy array that it did not make")
        if type(state) is not tuple or len(state) not in (4, 5):
            raise pickle.UnpicklingError("malformed numpy array state")
        shape, dtype, fortran, raw = state[-4:]
        shape = self._checked_shape(shape)
        dtype = self._checked_dtype(dtype)
        if dtype.kind not in _DATA_KINDS or dtype.itemsize == 0:
            # Kept empty, with its dtype for the checks to name: its data is never built.
            return np.empty((0,), dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if not isinstance(raw, bytes | str | _Blob):
            raise pickle.UnpicklingError(f"the data of an array is {_describe(raw)}")
        if len(raw) != nbytes:
            raise self._refuse(
                f"the pickle declares an array of shape {shape} {dtype} ({nbytes} bytes) over "
                f"{len(raw)} bytes of data"
            )
        if isinstance(raw, _Blob):  # large data: the array is a view of its buffer
            self._taken(raw)
            order = "F" if fortran else "C"
            return np.frombuffer(raw.data, dtype=dtype).reshape(shape, order=order)
        # Small data (a few KiB): numpy keeps the bytes as the buffer when it can, else copies.
        self._budget.charge(nbytes, f"an array of shape {shape} {dtype}")
        array.__setstate__((1, shape, dtype, bool(fortran), raw))
        if array.base is raw:
            self._budget.release(nbytes)
        return array

    def _frombuffer(self, buffer, dtype, shape, order):
        # Protocol 5: a view of the pickled buffer, no copy.
        if isinstance(buffer, _Blob) and not buffer.text:
            self._taken(buffer)
            buffer = buffer.data
        elif not isinstance(buffer, bytes | bytearray):
            raise pickle.UnpicklingError(f"an array's buffer is {_describe(buffer)}")
        dtype = self._checked_dtype(dtype)
        shape = self._checked_shape(shape)
        if dtype.kind not in _DATA_KINDS or dtype.itemsize == 0:
            return np.empty((0,), dtype)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != len(buffer):
            raise self._refuse(
                f"the pickle declares an array of shape {shape} {dtype} ({nbytes} bytes) over "
                f"{len(buffer)} bytes of data"
            )
        if order not in ("C", "F"):
            raise pickle.UnpicklingError(f"unknown array order {_short_repr(order)}")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)

    def _latin1_encode(self, text, encoding="latin1", errors="strict"):
        # Protocol 2 spells array bytes as _codecs.encode(text, "latin1"); no other codec may run.
        is_text = type(text) is str or (isinstance(text, _Blob) and text.text)
        if not is_text or encoding not in ("latin1", "latin-1") or errors != "strict":
            raise pickle.UnpicklingError("only latin1 text may be encoded")
        if isinstance(text, _Blob):  # already its latin1 bytes: the same buffer, as bytes
            self._taken(text)
            self._loose = _Blob(text.data, text=False)
            return self._loose
        self._budget.charge(len(text), f"array data of {len(text)} bytes")
        return text.encode("latin1")


def _printable(text: str, limit: int = 120) -> str:
    text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _opcode_name(code: bytes) -> str:
    import pickletools

    op = pickletools.code2op.get(code.decode("latin1"))
    return op.name if op else f"unknown {code!r}"


def _short_repr(value, limit: int = 60) -> str:
    text = repr(value) if not isinstance(value, str | bytes) or len(value) < limit else ""
    return text if text and len(text) <= limit else f"a {type(value).__name__}"


_BYTE_ORDERS = ("<", ">", "=")


def _same_state(state, own: tuple) -> bool:
    """Whether a pickled dtype state is numpy's own for that dtype: same length, every item of
    the same type and value, except a byte order numpy would write on another machine."""
    if type(state) is not tuple or len(state) != len(own) or len(own) < 2:
        return False
    for i, (item, expected) in enumerate(zip(state, own, strict=True)):
        if i == 1 and expected in _BYTE_ORDERS:
            if item not in _BYTE_ORDERS or type(item) is not str:
                return False
        elif type(item) is not type(expected) or item != expected:
            return False
    return True


def _dtype_state_problem(dtype: np.dtype, state, own: tuple) -> str:
    flags_only = (
        type(state) is tuple
        and len(state) == len(own)
        and type(state[-1]) is int
        and _same_state((*state[:-1], own[-1]), own)
    )
    if flags_only:  # numpy's own state but for the flags: what item 8 of issue 10 found
        return (
            f"the pickle sets internals of the numpy dtype {dtype.str} that numpy never gives it"
            f" (flags {state[-1]}; numpy's: {own[-1]})"
        )
    return (
        f"the pickle gives the numpy dtype {dtype.str} a state numpy never writes for it "
        f"({_short_repr(state)})"
    )


def _dtype_problem(dtype: np.dtype) -> str:
    if dtype.names is not None or dtype.subdtype is not None:
        return (
            f"the pickle makes the structured numpy dtype {dtype}; a dataset's arrays hold numbers"
        )
    try:
        reference = np.dtype(dtype.str)
    except (TypeError, ValueError):
        return f"the pickle makes a numpy dtype that numpy cannot rebuild from {dtype.str!r}"
    return (
        f"the pickle sets internals of the numpy dtype {dtype.str} that numpy never gives it "
        f"(flags {dtype.flags}, item size {dtype.itemsize}, alignment {dtype.alignment}; "
        f"numpy's: {reference.flags}, {reference.itemsize}, {reference.alignment})"
    )


_U = _DatasetUnpickler
_OPCODES = {
    pickle.PROTO[0]: _U._proto,
    pickle.FRAME[0]: _U._frame_opcode,
    pickle.STOP[0]: _U._stop,
    pickle.MARK[0]: _U._mark,
    pickle.NONE[0]: _U._push(None),
    pickle.NEWTRUE[0]: _U._push(True),
    pickle.NEWFALSE[0]: _U._push(False),
    pickle.EMPTY_TUPLE[0]: _U._push(()),
    pickle.TUPLE[0]: _U._tuple,
    pickle.TUPLE1[0]: _U._tuple_n(1),
    pickle.TUPLE2[0]: _U._tuple_n(2),
    pickle.TUPLE3[0]: _U._tuple_n(3),
    pickle.EMPTY_LIST[0]: _U._empty_list,
    pickle.LIST[0]: _U._list,
    pickle.APPEND[0]: _U._append,
    pickle.APPENDS[0]: _U._appends,
    pickle.EMPTY_DICT[0]: _U._empty_dict,
    pickle.DICT[0]: _U._dict,
    pickle.SETITEM[0]: _U._setitem,
    pickle.SETITEMS[0]: _U._setitems,
    pickle.BININT[0]: _U._number("<i"),
    pickle.BININT1[0]: _U._number("<B"),
    pickle.BININT2[0]: _U._number("<H"),
    pickle.LONG1[0]: _U._long1,
    pickle.BINFLOAT[0]: _U._number(">d"),
    pickle.BINUNICODE[0]: _U._unicode("<I"),
    pickle.SHORT_BINUNICODE[0]: _U._unicode("<B"),
    pickle.BINUNICODE8[0]: _U._unicode("<Q"),
    pickle.BINSTRING[0]: _U._string("<i"),
    pickle.SHORT_BINSTRING[0]: _U._string("<B"),
    pickle.BINBYTES[0]: _U._bytes("<I"),
    pickle.SHORT_BINBYTES[0]: _U._bytes("<B"),
    pickle.BINBYTES8[0]: _U._bytes("<Q"),
    pickle.BYTEARRAY8[0]: _U._bytes("<Q", "a bytearray"),
    pickle.GLOBAL[0]: _U._global,
    pickle.STACK_GLOBAL[0]: _U._stack_global,
    pickle.BINPUT[0]: _U._binput("<B"),
    pickle.LONG_BINPUT[0]: _U._binput("<I"),
    pickle.MEMOIZE[0]: _U._memoize,
    pickle.BINGET[0]: _U._binget("<B"),
    pickle.LONG_BINGET[0]: _U._binget("<I"),
    pickle.REDUCE[0]: _U._reduce,
    pickle.BUILD[0]: _U._build,
}
del _U

# What a malformed pickle can raise from the machine or from numpy: all end in a DatasetError.
_PICKLE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,  # UnicodeDecodeError among them
    TypeError,
    AttributeError,
    LookupError,
    ArithmeticError,
    MemoryError,
    BufferError,
    struct.error,
    RuntimeError,  # numpy's internal errors; RecursionError
    SystemError,  # numpy's "error return without exception set"
)


def _load_pkl_gz(path, source: str, max_bytes: int, budget: MemoryBudget) -> dict[str, Split]:
    with open(path, "rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
        reader = _GzipReader(gz, max_bytes, source)
        protocol = reader.peek_protocol()
        if protocol is None or protocol < MIN_PICKLE_PROTOCOL:
            raise _reject(source, f"not a pickle of protocol {MIN_PICKLE_PROTOCOL} or later")
        try:
            obj = _DatasetUnpickler(reader, budget, source).load()
        except DatasetError:
            raise
        except _PICKLE_ERRORS as exc:
            raise _reject(
                source, f"not a valid pickle ({type(exc).__name__}: {_one_line(exc)})"
            ) from None
        if not reader.at_end():
            raise _reject(source, "unexpected data after the pickle")

    if not _is_sequence(obj, len(PKL_SPLITS)):
        raise _reject(
            source,
            "pickle must hold a tuple ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))"
            f", got {_describe(obj)}",
        )
    for name, pair in zip(PKL_SPLITS, obj, strict=True):
        if not _is_sequence(pair, 2):
            raise _reject(source, f"the {name} split must be a pair (x, y), got {_describe(pair)}")
    _refuse_shared_arrays(
        source,
        [
            (f"{axis}_{name}", array)
            for name, pair in zip(PKL_SPLITS, obj, strict=True)
            for axis, array in zip("xy", pair, strict=True)
        ],
    )
    return {
        name: _make_split(source, name, pair[0], pair[1], budget)
        for name, pair in zip(PKL_SPLITS, obj, strict=True)
    }


def _refuse_shared_arrays(source: str, named: list[tuple[str, object]]) -> None:
    """Two splits that are one array (or views of one buffer) would be paid for once and
    converted, checked and written once per split: refused, whatever the pickle did."""
    arrays = [(name, a) for name, a in named if isinstance(a, np.ndarray)]
    for i, (first, a) in enumerate(arrays):
        for second, b in arrays[i + 1 :]:
            if a is b or (a.size and b.size and np.may_share_memory(a, b)):
                raise _reject(
                    source,
                    f"{first} and {second} share their data: each split of a dataset must hold"
                    " its own arrays (aliased arrays are refused)",
                )


def _is_sequence(obj, length: int) -> bool:
    return isinstance(obj, tuple | list) and len(obj) == length


def _describe(obj) -> str:
    if isinstance(obj, tuple | list):
        return f"a {type(obj).__name__} of {len(obj)} items"
    if isinstance(obj, _Blob):
        return "a str" if obj.text else "a bytes"
    return f"a {type(obj).__name__}"


# --- npz ----------------------------------------------------------------------------------

_NPZ_ERRORS = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error)
_NPY_LENGTH_FORMATS = {(1, 0): "<H", (2, 0): "<I"}


@dataclass(frozen=True)
class _NpyHeader:
    name: str
    info: zipfile.ZipInfo
    data_offset: int  # where the array's bytes start in the member
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _load_npz(path, source: str, max_bytes: int, budget: MemoryBudget) -> dict[str, Split]:
    _check_zip_directory(path, source)
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise _reject(source, f"not a valid .npz (zip) file ({_one_line(exc)})") from None
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
        headers = [
            _read_npy_header(archive, members[f"{name}.npy"], source, name) for name in wanted
        ]
        # Every array and its float32 copy, from the headers alone: a file that would not fit
        # is refused before any of its data is decompressed.
        budget.check(
            sum(h.nbytes + _conversion_bytes(h.name, h.shape) for h in headers),
            "the arrays and their float32 copies",
        )
        room = max_bytes
        arrays = {}
        for header in headers:
            arrays[header.name], used = _read_npy_data(archive, header, source, room, budget)
            room -= used
    return {
        split: _make_split(source, split, arrays[f"x_{split}"], arrays[f"y_{split}"], budget)
        for split in NPZ_SPLITS
    }


def _check_zip_directory(path, source: str) -> None:
    # zipfile reads the whole central directory and makes an object per entry: a small file
    # of millions of empty entries would cost gigabytes before any array is looked at.
    with open(path, "rb") as f:
        end = zipfile._EndRecData(f)
    if end is not None and end[zipfile._ECD_SIZE] > MAX_ZIP_DIRECTORY_BYTES:
        raise _reject(
            source,
            f"the zip directory is {end[zipfile._ECD_SIZE]} bytes, over the "
            f"{MAX_ZIP_DIRECTORY_BYTES} bytes an .npz of four arrays could need",
        )


def _read_npy_header(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str, name: str
) -> _NpyHeader:
    try:
        with archive.open(info) as member:
            reader = _BoundedReader(member, info.file_size, source)
            version = np.lib.format.read_magic(reader)
            if version not in _NPY_LENGTH_FORMATS:
                raise ValueError(f"unsupported .npy format version {version}")
            length_format = _NPY_LENGTH_FORMATS[version]
            length_bytes = reader.read_exact(struct.calcsize(length_format), "a header length")
            (length,) = struct.unpack(length_format, length_bytes)
            # numpy reads the whole header before it checks its size: checked first here.
            if length > MAX_NPY_HEADER_BYTES:
                raise _reject(
                    source,
                    f"array '{name}' has a header of {length} bytes, over numpy's "
                    f"{MAX_NPY_HEADER_BYTES}",
                )
            header = io.BytesIO(length_bytes + reader.read_exact(length, "a header"))
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(header)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(header)
    except DatasetError:
        raise
    except _NPZ_ERRORS as exc:
        raise _reject(source, f"array '{name}' is unreadable ({_one_line(exc)})") from None
    if dtype.hasobject:
        raise _reject(source, f"array '{name}' holds Python objects, not numbers")
    header = _NpyHeader(name, info, reader.total, tuple(shape), bool(fortran), dtype)
    # zipfile stops at the declared size, so a header claiming more is a lie that would make
    # numpy allocate memory for data that does not exist.
    if header.nbytes > info.file_size:
        raise _reject(source, f"array '{name}' claims more data than it stores")
    return header


def _read_npy_data(
    archive: zipfile.ZipFile, header: _NpyHeader, source: str, room: int, budget: MemoryBudget
) -> tuple[np.ndarray, int]:
    """The array of `header`, read in chunks into one buffer charged before it is made; and
    the decompressed bytes it took, counted against `room` (what is left of the limit)."""
    name, nbytes = header.name, header.nbytes
    budget.charge(nbytes, f"array '{name}' {header.shape} {header.dtype}")
    buffer = np.empty(nbytes, np.uint8)
    try:
        with archive.open(header.info) as member:
            reader = _BoundedReader(member, room, source)
            reader.read_exact(header.data_offset, "a header")
            done = 0
            while done < nbytes:
                chunk = reader.read_exact(min(NPY_READ_CHUNK_BYTES, nbytes - done), "array data")
                buffer[done : done + len(chunk)] = np.frombuffer(chunk, np.uint8)
                done += len(chunk)
    except DatasetError:
        raise
    except _NPZ_ERRORS as exc:
        raise _reject(source, f"array '{name}' is unreadable ({_one_line(exc)})") from None
    order = "F" if header.fortran else "C"
    array = buffer.view(header.dtype).reshape(header.shape, order=order)
    return array, reader.total


# --- checks shared by both layouts --------------------------------------------------------


def _conversion_bytes(name: str, shape: tuple[int, ...]) -> int:
    """An upper bound of the copy _make_split makes of an array: float32 images, int64 labels."""
    n = shape[0] if shape else 0
    return n * FEATURE_DIM * 4 if name.startswith("x_") else n * 8


def _make_split(source: str, split: str, x, y, budget: MemoryBudget) -> Split:
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
    elif low < 0 or high > PIXEL_MAX_INT:
        raise _reject(
            source,
            f"{x_name} has pixels outside 0..{PIXEL_MAX_INT} (min {low}, max {high})",
        )
    low, high = y.min(), y.max()
    if low < 0 or high >= NUM_CLASSES:
        raise _reject(
            source, f"{y_name} has labels outside 0..{NUM_CLASSES - 1} (min {low}, max {high})"
        )

    # The one copy of each array: charged first, given back when numpy could keep x as it is.
    copy_bytes = _conversion_bytes(x_name, x.shape)
    budget.charge(copy_bytes, f"{x_name} as float32")
    features = np.ascontiguousarray(x, dtype=np.float32).reshape(n, FEATURE_DIM)
    if np.may_share_memory(features, x):
        budget.release(copy_bytes)
    elif x.dtype.kind != "f":
        features /= PIXEL_MAX_INT
    budget.charge(_conversion_bytes(y_name, y.shape), f"{y_name} as int64")
    return Split(x=features, y=y.astype(np.int64))


# --- run inputs ---------------------------------------------------------------------------


def write_run_inputs(
    dataset: MnistDataset, out_dir: pathlib.Path, train_shards: int = 1
) -> dict[str, str]:
    """Write the files a run needs under `out_dir`; returns {logical name: relative path}.

    Names: "train_<i>" (RecordIO-protobuf with labels, the training rows split in
    `train_shards` objects: SageMaker's ShardedByS3Key gives each training instance whole
    objects, so there must be one per instance at least), "<split>_transform_input" (the
    validation and test images as CSV, no labels), "<split>_labels" (one integer a line) for
    each split, and "manifest". A dataset without a validation split gets one from the end of
    train (VALIDATION_SHARE_OF_TRAIN).
    """
    out_dir = pathlib.Path(out_dir)
    files: dict[str, str] = {}
    dataset = with_validation(dataset)

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
    for split in TRANSFORM_SPLITS:
        with create(f"{split}_transform_input", transform_input(split)) as out:
            write_pixels_csv(out, dataset.splits[split].x)
    for split in PKL_SPLITS:
        if split in dataset.splits:
            with create(f"{split}_labels", labels_csv(split)) as out:
                out.write(formatlabels_csv(dataset.splits[split].y))

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


def with_validation(dataset: MnistDataset) -> MnistDataset:
    """The dataset, with the last 1/VALIDATION_SHARE_OF_TRAIN of train as its validation split
    when it has none (views: nothing is copied)."""
    if "validation" in dataset.splits:
        return dataset
    train = dataset.splits["train"]
    cut = train.y.shape[0] - train.y.shape[0] // VALIDATION_SHARE_OF_TRAIN
    splits = {
        **dataset.splits,
        "train": Split(train.x[:cut], train.y[:cut]),
        "validation": Split(train.x[cut:], train.y[cut:]),
    }
    return MnistDataset(layout=dataset.layout, splits=splits)


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


def formatlabels_csv(y: np.ndarray) -> bytes:
    """One label 0..9 a line."""
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise ValueError(f"labels must be 0..{NUM_CLASSES - 1}")
    lines = np.empty((y.shape[0], 2), dtype=np.uint8)
    lines[:, 0] = y + ord("0")
    lines[:, 1] = ord("\n")
    return lines.tobytes()
