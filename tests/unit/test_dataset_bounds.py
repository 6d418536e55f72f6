"""Preprocess's load is bounded by its input's declared and decompressed size and by the step's
memory, and every malformed pickle ends in a DatasetError (issue 10, items 7 and 8).

Each test names what today's loader (before this change) did with the same file.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from core.settings import BY_KEY, SettingError, read_context
from pipeline.steps import dataset as ds
from pipeline.steps.dataset import (
    MAX_DATASET_BYTES,
    MEMORY_RESERVE_BYTES,
    PREPROCESS_MEMORY,
    DatasetError,
    load_dataset,
    memory_bytes,
)

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct
    from numpy.core.numeric import _frombuffer

REPO = Path(__file__).resolve().parents[2]
SOURCE = "s3://b/incoming/x.pkl.gz"
NPZ_SOURCE = "s3://b/incoming/x.npz"
MiB = 1024**2


# --- helpers ------------------------------------------------------------------------------


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def _labels(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % 10


def _classic(n=(100, 10, 10)):
    return tuple((_pixels(k, i), _labels(k)) for i, k in enumerate(n))


def _write_pkl_gz(path, obj, protocol=2):
    with gzip.open(path, "wb", compresslevel=1) as out:
        pickle.dump(obj, out, protocol=protocol)
    return path


def _refused(path, source=SOURCE, **kwargs) -> str:
    with pytest.raises(DatasetError) as raised:
        load_dataset(path, source=source, **kwargs)
    message = str(raised.value)
    assert "\n" not in message
    return message.removeprefix(f"{source}: ")


def _peak_of(call) -> int:
    """The peak of Python's and numpy's traced allocations while `call` runs."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _refused_with_peak(path, source=SOURCE, **kwargs) -> tuple[str, int]:
    outcome = {}

    def load():
        outcome["message"] = _refused(path, source, **kwargs)

    peak = _peak_of(load)
    return outcome["message"], peak


def _load_in_a_child(path, source=SOURCE) -> str:
    """Loads in a fresh interpreter: a numpy crash (today's loader segfaults on some of these
    files) fails the test instead of killing the test run."""
    code = (
        "import sys\n"
        "from pipeline.steps.dataset import DatasetError, load_dataset\n"
        "try:\n"
        "    load_dataset(sys.argv[1], source=sys.argv[2])\n"
        "    print('LOADED')\n"
        "except DatasetError as e:\n"
        "    print('REFUSED', e)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path), source],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 0 and not done.stderr, (
        f"the load ended with exit code {done.returncode}: {done.stderr[-600:]}"
    )
    return done.stdout.strip().removeprefix(f"REFUSED {source}: ")


class _Dtype:
    """Pickles as numpy pickles a dtype, with its state's flags (or whole state) replaced."""

    def __init__(self, code, *, flags=None, state=None, args=None):
        self.code, self.flags, self.state, self.args = code, flags, state, args

    def __reduce__(self):
        _, args, state = np.dtype(self.code).__reduce__()
        if self.flags is not None:
            state = (*state[:-1], self.flags)
        return (np.dtype, self.args or args, self.state or state)


class _Array:
    """Pickles as numpy pickles an array (protocol 2 to 4), with any shape, dtype and data."""

    def __init__(self, shape, dtype, data, placeholder=(0,)):
        self.shape, self.dtype, self.data, self.placeholder = shape, dtype, data, placeholder

    def __reduce__(self):
        return (
            _reconstruct,
            (np.ndarray, self.placeholder, b"b"),
            (1, self.shape, self.dtype, False, self.data),
        )


class _View:
    """Pickles as numpy pickles an array with protocol 5: a view of a pickled buffer."""

    def __init__(self, buffer, dtype, shape):
        self.buffer, self.dtype, self.shape = buffer, dtype, shape

    def __reduce__(self):
        return (_frombuffer, (self.buffer, self.dtype, self.shape, "C"))


def _with_train_x(x, protocol=2):
    (_, yt), valid, test = _classic()
    return ((x, yt), valid, test)


def _gzip_pickle(path, *parts) -> Path:
    """A gzip'd protocol-2 pickle from raw opcode bytes, streamed (a bomb never sits in memory)."""
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(pickle.PROTO + b"\x02")
        for part in parts:
            if isinstance(part, bytes):
                out.write(part)
            else:
                for chunk in part:
                    out.write(chunk)
    return path


def _zeros(n: int, chunk: int = MiB):
    while n > 0:
        yield bytes(min(chunk, n))
        n -= chunk


# --- the decompressed limit ---------------------------------------------------------------


def test_a_declared_string_past_the_limit_is_refused_before_it_is_read(tmp_path):
    """Today: read 1.5 MB under a 1 MB limit (it allowed 2 x), then failed with EOFError."""
    n = 1_500_000
    path = _gzip_pickle(tmp_path / "bomb.pkl.gz", b"X" + struct.pack("<I", n), _zeros(n))
    message, peak = _refused_with_peak(path, max_bytes=1_000_000)
    assert message == (
        "declares a string of 1500000 bytes, which would take it past the limit of 1000000 "
        "decompressed bytes (max_dataset_bytes; 999993 left); refused as a possible gzip bomb"
    )
    assert peak < 200_000  # none of the string was read


def test_a_gzip_bomb_at_the_default_limit_is_refused_unread(tmp_path):
    """The issue's case: 3 GiB declared behind a small gzip; today it reached 6.2 GB."""
    n = 3 * 1024**3
    path = _gzip_pickle(tmp_path / "bomb.pkl.gz", b"\x8d" + struct.pack("<Q", n), _zeros(MiB))
    message, peak = _refused_with_peak(path)
    assert message == (
        f"declares a string of {n} bytes, which would take it past the limit of "
        f"{MAX_DATASET_BYTES} decompressed bytes (max_dataset_bytes; {MAX_DATASET_BYTES - 11} "
        "left); refused as a possible gzip bomb"
    )
    assert peak < 200_000


def test_many_small_strings_stop_at_the_decompressed_limit(tmp_path):
    """8 MB of 4 KiB strings in a list (small enough to be kept as they are): refused at the
    string that would pass 1 MB (today: read on to 2 MB), so the load held under the limit."""
    size, count = 4000, 2000
    strings = (b"X" + struct.pack("<I", size) + bytes(size) for _ in range(count))
    path = _gzip_pickle(tmp_path / "bomb.pkl.gz", b"](", strings, b"e.")
    assert path.stat().st_size < 100_000
    message, peak = _refused_with_peak(path, max_bytes=1_000_000)
    assert message.startswith(
        "declares a string of 4000 bytes, which would take it past the limit of 1000000 "
        "decompressed bytes (max_dataset_bytes; "
    )
    assert peak < 1_000_000 + 300_000  # the strings held, gzip's own buffers


def test_large_data_no_array_takes_is_refused_at_the_next(tmp_path):
    """64 KiB strings in a list: a numpy pickle never holds two arrays' data at once, so the
    second is refused, whatever the limit (today: read on to twice the limit)."""
    size = 64 * 1024
    strings = (b"X" + struct.pack("<I", size) + bytes(size) for _ in range(128))
    path = _gzip_pickle(tmp_path / "bomb.pkl.gz", b"](", strings, b"e.")
    message, peak = _refused_with_peak(path)
    assert message == (
        "the pickle holds 65536 bytes of data that no array took before a string of 65536 bytes:"
        " a numpy pickle puts each array's data into its array first; refused as a possible bomb"
    )
    assert peak < 2 * size + 200_000


def test_a_stream_of_small_opcodes_stops_at_the_decompressed_limit(tmp_path):
    """No length to check in advance: the bytes are counted as gzip lets them out."""
    path = _gzip_pickle(tmp_path / "ops.pkl.gz", b"](", b"N" * 200_000, b"e.")
    assert _refused(path, max_bytes=100_000) == (
        "decompresses to more than 100000 bytes, the limit (max_dataset_bytes); "
        "refused as a possible gzip bomb"
    )


def test_the_reader_never_asks_gzip_for_more_than_the_limit():
    """Whatever a pickle declares, the stream is asked for at most one byte past the limit."""

    class Stream:
        asked: list[int] = []

        def read(self, n):
            self.asked.append(n)
            return bytes(min(n, 10))

    reader = ds._BoundedReader(Stream(), 100, SOURCE)
    reader.read(10**12)
    reader.read(10**12)
    assert max(Stream.asked) <= 101


def test_a_genuine_dataset_at_exactly_the_limit_loads(tmp_path):
    """The limit counts decompressed bytes: a dataset of exactly that many loads."""
    data = pickle.dumps(_classic(), protocol=2)
    path = tmp_path / "d.pkl.gz"
    path.write_bytes(gzip.compress(data))
    assert load_dataset(path, source=SOURCE, max_bytes=len(data)).splits["train"].y.shape == (100,)
    assert "decompresses to more than" in _refused(path, max_bytes=len(data) - 1)


# --- aliased arrays -----------------------------------------------------------------------


def test_three_splits_that_are_one_pair_are_refused(tmp_path):
    """Today: accepted (the issue's 198 KB pickle reached 2.47 GB this way)."""
    pair = (_pixels(100), _labels(100))
    path = _write_pkl_gz(tmp_path / "a.pkl.gz", (pair, pair, pair))
    assert _refused(path) == (
        "x_train and x_validation share their data: each split of a dataset must hold its own "
        "arrays (aliased arrays are refused)"
    )


def test_one_array_referred_to_by_two_splits_is_refused(tmp_path):
    """The pickle's memo hands the same array to a second split. Today: accepted."""
    x, y = _pixels(100), _labels(100)
    path = _write_pkl_gz(tmp_path / "a.pkl.gz", ((x, y), (x, _labels(100)), (x, _labels(100))))
    assert _refused(path) == (
        "the pickle refers to the same numpy array twice: each split of a dataset must hold its "
        "own arrays (aliased arrays are refused)"
    )


@pytest.mark.parametrize("protocol", [2, 5])
def test_two_arrays_over_one_buffer_are_refused(tmp_path, protocol):
    """Two arrays built over the same pickled bytes (protocol 2: _codecs.encode of one string;
    protocol 5: _frombuffer of one buffer). Today: accepted."""
    data = _pixels(100).tobytes()
    f4 = np.dtype("f4")
    if protocol == 5:
        x1, x2 = _View(data, f4, (100, 784)), _View(data, f4, (100, 784))
    else:
        x1, x2 = _Array((100, 784), f4, data), _Array((100, 784), f4, data)
    obj = ((x1, _labels(100)), (x2, _labels(100)), (_pixels(10), _labels(10)))
    path = _write_pkl_gz(tmp_path / "a.pkl.gz", obj, protocol=protocol)
    assert _refused(path) == (
        f"the pickle refers to the same {len(data)} bytes of array data twice: each array of a "
        "dataset must hold its own (aliased arrays are refused)"
    )


# --- declared shapes and the memory budget ------------------------------------------------


def test_a_huge_shape_over_a_few_bytes_is_refused_by_name(tmp_path):
    path = _write_pkl_gz(
        tmp_path / "s.pkl.gz", _with_train_x(_Array((10**6, 784), np.dtype("f4"), bytes(4)))
    )
    message, peak = _refused_with_peak(path)
    assert message == (
        "the pickle declares an array of shape (1000000, 784) float32 (3136000000 bytes) over "
        "4 bytes of data"
    )
    assert peak < 2_000_000


def test_a_huge_shape_over_a_protocol_5_buffer_is_refused(tmp_path):
    view = _View(bytes(8), np.dtype("f4"), (10**9, 784))
    path = _write_pkl_gz(tmp_path / "s.pkl.gz", _with_train_x(view), protocol=5)
    assert _refused(path) == (
        "the pickle declares an array of shape (1000000000, 784) float32 (3136000000000 bytes) "
        "over 8 bytes of data"
    )


def test_a_huge_object_array_is_never_allocated(tmp_path):
    """Today: numpy allocated 10^8 object slots for a 1-item list and the process segfaulted."""
    x = _Array((10**8,), np.dtype("O"), [0.0])
    path = _write_pkl_gz(tmp_path / "o.pkl.gz", _with_train_x(x))
    assert _load_in_a_child(path) == (
        "x_train has dtype object; expected floats in [0, 1] or integers 0..255"
    )
    message, peak = _refused_with_peak(path)
    assert peak < 2_000_000


def test_a_placeholder_of_any_other_shape_is_refused(tmp_path):
    x = _Array((0,), np.dtype("f4"), b"", placeholder=(10**12,))
    path = _write_pkl_gz(tmp_path / "s.pkl.gz", _with_train_x(x))
    assert _refused(path) == (
        "not a valid pickle (UnpicklingError: malformed numpy array reconstruction)"
    )


def test_a_dataset_over_the_memory_budget_is_refused_before_allocating(tmp_path):
    """2 MB of pixels with 1 MiB of budget: refused while reading, before the array exists.
    Today there was no budget."""
    path = _write_pkl_gz(tmp_path / "d.pkl.gz", _classic((700, 10, 10)))
    limit = MEMORY_RESERVE_BYTES + MiB
    message, peak = _refused_with_peak(path, memory_limit=limit)
    assert message.endswith(
        f"over the memory budget of {MiB} bytes (preprocess_memory, {limit} bytes, less "
        f"{MEMORY_RESERVE_BYTES} for the runtime); refused before allocating"
    )
    assert peak < MiB + 200_000


def test_the_float32_copies_are_charged_before_they_are_made(tmp_path):
    """uint8 images are small in the file but 4 x bigger as float32: the copy is refused."""
    (xt, yt), valid, test = _classic((2000, 10, 10))
    images = (xt * 255).astype(np.uint8)  # 1.5 MB, 6 MB as float32
    path = _write_pkl_gz(tmp_path / "u8.pkl.gz", ((images, yt), valid, test), protocol=4)
    limit = MEMORY_RESERVE_BYTES + 4 * MiB
    message = _refused(path, memory_limit=limit)
    assert message.startswith("x_train as float32 would need 6272000 bytes more")
    assert load_dataset(path, source=SOURCE, memory_limit=limit + 8 * MiB).splits


def test_a_genuine_dataset_stays_within_twice_its_arrays(tmp_path):
    """The classic layout, protocol 2: the load's peak is under 2 x the final arrays."""
    path = _write_pkl_gz(tmp_path / "d.pkl.gz", _classic((3000, 500, 500)))
    loaded = {}
    peak = _peak_of(lambda: loaded.setdefault("d", load_dataset(path, source=SOURCE)))
    final = sum(s.x.nbytes + s.y.nbytes for s in loaded["d"].splits.values())
    assert peak < 2 * final


# --- dtypes (item 8) ----------------------------------------------------------------------


@pytest.mark.parametrize("flags", [1, 2, 4, 8, 16, 32, 63])
def test_a_dtype_with_flags_numpy_never_sets_is_refused(tmp_path, flags):
    """Today: SystemError for 63, RuntimeErrors from numpy for 1, and accepted for most."""
    x = _Array((100, 784), _Dtype("f4", flags=flags), _pixels(100).tobytes())
    path = _write_pkl_gz(tmp_path / "f.pkl.gz", _with_train_x(x))
    assert _load_in_a_child(path) == (
        f"the pickle sets internals of the numpy dtype <f4 that numpy never gives it (flags "
        f"{flags}; numpy's: 0)"
    )


def test_the_systemerror_pickle_of_the_issue_is_refused_in_process(tmp_path):
    """Object flags on a float32 dtype over bytes: today an uncaught SystemError."""
    x = _Array((100, 784), _Dtype("f4", flags=63), _pixels(100).tobytes())
    path = _write_pkl_gz(tmp_path / "f.pkl.gz", _with_train_x(x))
    assert _refused(path).startswith("the pickle sets internals of the numpy dtype <f4")


def test_object_flags_over_a_list_never_reach_numpy(tmp_path):
    """Today: accepted, with numpy writing 8-byte object pointers into a 4-byte float buffer."""
    x = _Array((100, 784), _Dtype("f4", flags=2), [0.0] * 78_400)
    path = _write_pkl_gz(tmp_path / "f.pkl.gz", _with_train_x(x))
    assert _load_in_a_child(path).startswith("the pickle sets internals of the numpy dtype <f4")


@pytest.mark.parametrize(
    ("dtype", "problem"),
    [
        (_Dtype("f4", args=("f4,i8", False, True)), "the numpy dtype 'f4,i8'"),
        (_Dtype("f4", args=("(2,3)f4", False, True)), "the numpy dtype '(2,3)f4'"),
        (_Dtype("f4", args=([("a", "f4")], False, True)), "the numpy dtype [('a', 'f4')]"),
    ],
    ids=["structured", "subarray", "fields-list"],
)
def test_structured_dtypes_are_refused(tmp_path, dtype, problem):
    x = _Array((100, 784), dtype, _pixels(100).tobytes())
    path = _write_pkl_gz(tmp_path / "s.pkl.gz", _with_train_x(x))
    message = _refused(path)
    assert message.startswith("the pickle asks for ") and problem in message


@pytest.mark.parametrize(
    "state",
    [
        (3, "|", None, ("a",), {"a": (np.dtype("f4"), 0)}, 4, 4, 16),  # fields on a float
        (3, "<", None, -1, -1, 0),  # 6 items: numpy reads -1 as the fields dict and segfaults
        (3, "<", None, None, None, 8, 4, 0),  # another item size
        (3, "<", None, None, None, -1, -1, 0.0),  # flags of another type
        (3, "?", None, None, None, -1, -1, 0),  # no byte order
        [3, "<", None, None, None, -1, -1, 0],  # a list
    ],
    ids=["fields", "six-items", "item-size", "float-flags", "byte-order", "list"],
)
def test_a_dtype_state_numpy_never_writes_never_reaches_numpy(tmp_path, state):
    """Found by fuzzing this loader: numpy's dtype __setstate__ crashes on a state of another
    shape even on a copy of the dtype, so only numpy's own state for that dtype is passed."""
    x = _Array((100, 784), _Dtype("f4", state=state), _pixels(100).tobytes())
    path = _write_pkl_gz(tmp_path / "s.pkl.gz", _with_train_x(x))
    assert _load_in_a_child(path).startswith(
        "the pickle gives the numpy dtype <f4 a state numpy never writes for it ("
    )


def test_a_big_endian_dtype_is_numpys_own_and_loads(tmp_path):
    x = _pixels(100).astype(">f4")
    path = _write_pkl_gz(tmp_path / "be.pkl.gz", _with_train_x(x))
    got = load_dataset(path, source=SOURCE).splits["train"].x
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x)


# --- every malformed pickle is a DatasetError ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "opcode"),
    [(b"N2.", "DUP"), (b"\x8b\x05\x00\x00\x00abcde.", "LONG4"), (b"(i__main__\nX\n.", "INST")],
)
def test_an_opcode_no_numpy_pickle_uses_is_refused(tmp_path, body, opcode):
    path = tmp_path / "op.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02" + body))
    assert _refused(path) == (
        f"the pickle uses the {opcode} opcode, which a numpy dataset never needs"
    )


def test_a_refused_global_is_named_on_one_line(tmp_path):
    """Found by fuzzing: a name with a newline in it (STACK_GLOBAL takes any string)."""
    path = tmp_path / "g.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x04\x8c\x05numpy\x8c\x08nd\narray\x93."))
    assert _refused(path) == "pickle refers to numpy.nd\\narray, which a dataset may not use"


def test_a_pickle_of_more_opcodes_than_a_dataset_has_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "MAX_PICKLE_OPCODES", 1000)
    path = tmp_path / "ops.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02](" + b"N" * 2000 + b"e."))
    assert _refused(path) == "the pickle has more than 1000 opcodes; a dataset has a few hundred"


def test_a_dict_of_colliding_keys_is_refused_before_it_costs_quadratic_time(tmp_path):
    """Integer keys 2**61 - 1 apart share one hash: 5,000 of them would take seconds."""

    def key(i: int) -> bytes:  # LONG1 of 16 bytes
        return b"\x8a\x10" + ((2**61 - 1) * i).to_bytes(16, "little", signed=True)

    items = b"".join(key(i) + b"N" for i in range(5000))
    path = tmp_path / "d.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02}(" + items + b"u."))
    assert _refused(path) == "the pickle has dicts of more than 1000 items; a dataset has none"


def test_every_mutation_of_a_pickle_is_a_one_line_dataset_error(tmp_path):
    """400 corrupted copies of a small pickle of arrays (1 to 3 bytes changed anywhere: opcodes,
    lengths, dtypes, shapes, data): each ends in a DatasetError, never another exception.
    Its splits are under MIN_IMAGES, so even a harmless change ends in one."""
    data = pickle.dumps(_classic((3, 2, 2)), protocol=2)
    rng = np.random.default_rng(10)
    path = tmp_path / "m.pkl.gz"
    for _ in range(400):
        mutated = bytearray(data)
        for at in rng.integers(2, len(data), size=rng.integers(1, 4)):
            mutated[at] = int(rng.integers(0, 256))
        path.write_bytes(gzip.compress(bytes(mutated), compresslevel=1))
        with pytest.raises(DatasetError) as raised:
            load_dataset(path, source=SOURCE)
        assert "\n" not in str(raised.value)


def test_a_pickle_cut_anywhere_in_its_opcodes_is_a_dataset_error(tmp_path):
    data = pickle.dumps(_classic((100, 10, 10)), protocol=4)
    path = tmp_path / "cut.pkl.gz"
    for end in range(3, 400, 3):
        path.write_bytes(gzip.compress(data[:end], compresslevel=1))
        with pytest.raises(DatasetError):
            load_dataset(path, source=SOURCE)


def test_a_python_2_cpickle_file_loads(tmp_path):
    """What Python 2's cPickle wrote (the original mnist.pkl.gz): numpy.core names, array bytes
    as str (BINSTRING), dtype arguments as ints, memo puts."""

    def array(a: np.ndarray) -> bytes:
        shape = b"".join(b"J" + struct.pack("<i", n) for n in a.shape)
        shape += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[a.ndim]
        code = a.dtype.str[1:].encode()
        raw = a.tobytes()
        return (
            b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b"
            b"\x87Rq\x03(K\x01" + shape + b"cnumpy\ndtype\nq\x04U" + bytes([len(code)]) + code
            + b"K\x00K\x01\x87Rq\x05(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
            + b"\x89T" + struct.pack("<i", len(raw)) + raw + b"tb"
        )  # fmt: skip

    splits = _classic()
    body = b"".join(array(x) + array(y) + b"\x86" for x, y in splits) + b"\x87."
    path = tmp_path / "py2.pkl.gz"
    path.write_bytes(gzip.compress(b"\x80\x02" + body))
    dataset = load_dataset(path, source=SOURCE)
    np.testing.assert_array_equal(dataset.splits["validation"].x, splits[1][0])
    np.testing.assert_array_equal(dataset.splits["test"].y, splits[2][1])


# --- npz ----------------------------------------------------------------------------------


def _keras(n_train=100, n_test=10):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_an_npz_member_that_inflates_past_the_budget_is_refused_before_reading(tmp_path):
    """24 MB of zeros zipped to kilobytes, 94 MB as float32, against 16 MiB of budget: refused
    from the headers, before a byte of data is decompressed. Today: no budget, all read."""
    arrays = _keras()
    arrays["x_train"] = np.zeros((30_000, 28, 28), np.uint8)
    arrays["y_train"] = np.zeros(30_000, np.uint8)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 200_000
    limit = MEMORY_RESERVE_BYTES + 16 * MiB
    message, peak = _refused_with_peak(path, NPZ_SOURCE, memory_limit=limit)
    need = 30_000 * 784 * 5 + 30_000 * 9 + 10 * 784 * 5 + 10 * 9  # uint8 + float32, u8 + i64
    assert message.startswith(f"the arrays and their float32 copies would need {need} bytes")
    assert message.endswith("refused before allocating")
    assert peak < 1_000_000


def test_an_npz_member_past_the_decompressed_limit_is_refused(tmp_path):
    """The zip's own sizes are the limit's first line; its output is counted as well."""
    arrays = _keras()
    arrays["x_train"] = np.zeros((3000, 28, 28), np.uint8)
    arrays["y_train"] = np.zeros(3000, np.uint8)
    path = tmp_path / "z.npz"
    np.savez_compressed(path, **arrays)
    assert _refused(path, NPZ_SOURCE, max_bytes=1_000_000).startswith("arrays would decompress to ")


def test_an_npy_header_of_megabytes_is_refused_before_it_is_read(tmp_path):
    """Today numpy read all 50 MB of the header before checking its size."""
    path = tmp_path / "h.npz"
    np.savez(path, **{k: v for k, v in _keras().items() if k != "x_train"})
    length = 50_000_000
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            member.write(b"\x93NUMPY\x02\x00" + struct.pack("<I", length))
            for chunk in _zeros(length, 8 * MiB):
                member.write(chunk.replace(b"\0", b" "))
    message, peak = _refused_with_peak(path, NPZ_SOURCE)
    assert message == "array 'x_train' has a header of 50000000 bytes, over numpy's 10000"
    assert peak < 2_000_000


def test_a_zip_directory_bigger_than_an_npz_needs_is_refused(tmp_path, monkeypatch):
    """Millions of empty entries would cost zipfile gigabytes; the directory size is checked
    before zipfile reads it."""
    monkeypatch.setattr(ds, "MAX_ZIP_DIRECTORY_BYTES", 2000)
    path = tmp_path / "many.npz"
    np.savez(path, **_keras())
    with zipfile.ZipFile(path, "a") as archive:
        for i in range(50):
            archive.writestr(f"padding-{i}.npy", b"")
    message = _refused(path, NPZ_SOURCE)
    assert message.startswith("the zip directory is ") and "an .npz of four arrays" in message


def test_a_keras_npz_loads_within_its_budget(tmp_path):
    arrays = _keras(3000, 500)
    path = tmp_path / "k.npz"
    np.savez(path, **arrays)
    dataset = load_dataset(path, source=NPZ_SOURCE, memory_limit=MEMORY_RESERVE_BYTES + 16 * MiB)
    np.testing.assert_array_equal(
        dataset.splits["train"].x, arrays["x_train"].reshape(3000, 784) / np.float32(255)
    )


def test_a_fortran_ordered_npy_loads(tmp_path):
    arrays = _keras()
    arrays["x_test"] = np.asfortranarray(arrays["x_test"])
    path = tmp_path / "f.npz"
    np.savez(path, **arrays)
    got = load_dataset(path, source=NPZ_SOURCE).splits["test"].x
    np.testing.assert_array_equal(got, arrays["x_test"].reshape(10, 784) / np.float32(255))


# --- the setting and the pods -------------------------------------------------------------


def test_the_default_memory_is_twice_the_data_limit_plus_the_reserve():
    assert memory_bytes(PREPROCESS_MEMORY) == 2 * MAX_DATASET_BYTES + MEMORY_RESERVE_BYTES


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("4608Mi", 4608 * MiB), ("3Gi", 3 * 1024**3), ("500M", 500 * 10**6), ("1024", 1024)],
)
def test_memory_quantities_are_read_as_kubernetes_reads_them(quantity, expected):
    assert memory_bytes(quantity) == expected


@pytest.mark.parametrize("value", ["512Mi", "4.5Gi", "4608", "4608MB", "0Gi"])
def test_a_preprocess_memory_the_pod_or_the_budget_cannot_use_is_refused(value):
    context = {"eks_cluster_name": "c", "preprocess_memory": value}
    with pytest.raises(SettingError, match="preprocess_memory"):
        read_context(context)
    assert read_context({**context, "preprocess_memory": "6Gi"}).preprocess_memory == "6Gi"


def test_the_pods_memory_is_the_parameter_for_preprocess_and_small_for_the_rest(tmp_path):
    from pipeline.compile import compile_pipeline

    spec = yaml.safe_load(compile_pipeline(tmp_path / "p.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    channel = "{{$.inputs.parameters['pipelinechannel--preprocess_memory']}}"
    assert executors["exec-preprocess"]["container"]["resources"] == {
        "resourceMemoryLimit": channel,
        "resourceMemoryRequest": channel,
    }
    for name, executor in executors.items():
        if name != "exec-preprocess":
            resources = executor["container"]["resources"]
            assert (resources["resourceMemoryRequest"], resources["resourceMemoryLimit"]) == (
                "256Mi",
                "512Mi",
            ), name
    parameter = spec["root"]["inputDefinitions"]["parameters"]["preprocess_memory"]
    assert parameter["parameterType"] == "STRING"
    assert parameter["defaultValue"] == BY_KEY["preprocess_memory"].default == PREPROCESS_MEMORY


def test_preprocess_passes_the_pods_memory_to_the_load(monkeypatch):
    from pipeline.steps import steps

    seen = {}

    class S3:
        def head_object(self, **kwargs):
            return {"ContentLength": 10}

        def download_file(self, bucket, key, local, ExtraArgs):  # noqa: N803
            Path(local).write_bytes(b"x" * 10)

    def load(path, *, source, max_bytes, memory_limit):
        seen["memory_limit"] = memory_limit
        raise DatasetError("stop")

    monkeypatch.setattr(steps, "load_dataset", load)
    with pytest.raises(DatasetError):
        steps.preprocess(
            S3(), dataset_uri="s3://b/k.npz", dataset_version="", run_key="k", memory="6Gi"
        )
    assert seen == {"memory_limit": 6 * 1024**3}
