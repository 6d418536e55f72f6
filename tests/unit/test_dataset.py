"""load_dataset and write_run_inputs on the real samples, and on files that must be refused."""

from __future__ import annotations

import builtins
import gzip
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from pipeline.steps import dataset as ds
from pipeline.steps.dataset import (
    MAX_DATASET_BYTES,
    MIN_IMAGES,
    DatasetError,
    MnistDataset,
    Split,
    format_pixels_csv,
    load_dataset,
    write_run_inputs,
)
from tests.conftest import SAMPLE_DIR

PKL_SAMPLE = SAMPLE_DIR / "mnist-sample.pkl.gz"
NPZ_SAMPLE = SAMPLE_DIR / "mnist-sample.npz"
PKL_SOURCE = "s3://b/incoming/x.pkl.gz"
NPZ_SOURCE = "s3://b/incoming/x.npz"
CSV_MAX_ERROR = 5e-7 + 1e-9  # half of the last of CSV_DECIMALS, plus float32 slack


# --- helpers ------------------------------------------------------------------------------


def _pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 784), dtype=np.float32)


def _labels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 10, n).astype(np.int64)


def _classic(n_train=MIN_IMAGES["train"], n_valid=10, n_test=10):
    """A minimal valid ((x, y), (x, y), (x, y)) tuple in the classic layout."""
    return tuple((_pixels(n, i), _labels(n, i)) for i, n in enumerate((n_train, n_valid, n_test)))


def _write_pkl_gz(path, obj, protocol=2):
    with gzip.open(path, "wb") as out:
        pickle.dump(obj, out, protocol=protocol)
    return path


def _keras(n_train=MIN_IMAGES["train"], n_test=10):
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def _write_npz(path, arrays):
    np.savez(path, **arrays)
    return path


def _refused(path, source, **kwargs) -> str:
    with pytest.raises(DatasetError) as excinfo:
        load_dataset(path, source=source, **kwargs)
    return str(excinfo.value)


def _raw_classic_sample():
    # Our own repository file, so a plain unpickle is safe here.
    with gzip.open(PKL_SAMPLE, "rb") as f:
        return pickle.load(f)  # noqa: S301


def _parse_recordio(data: bytes):
    """(features, label) of each record, read back by walking the framing and the protobuf."""
    records, at = [], 0
    while at < len(data):
        magic, length = struct.unpack_from("<II", data, at)
        assert magic == 0xCED7230A
        payload = data[at + 8 : at + 8 + length]
        at += 8 + length + (-length % 4)
        # The tensors' packed values are the payload's last bytes of each map entry; for
        # dense 784-float rows the label entry is the final 20 bytes.
        label = struct.unpack("<f", payload[-4:])[0]
        features = np.frombuffer(payload[-20 - 784 * 4 : -20], dtype="<f4")
        records.append((features, label))
    return records


# --- the real samples ---------------------------------------------------------------------


def test_classic_sample_loads_with_its_three_splits():
    """Given the pkl.gz sample, when loaded, then it has the classic splits, exactly as stored."""
    dataset = load_dataset(PKL_SAMPLE, source=PKL_SOURCE)
    assert dataset.layout == "pkl.gz"
    assert {k: v.y.shape[0] for k, v in dataset.splits.items()} == {
        "train": 3000,
        "validation": 1000,
        "test": 1000,
    }
    raw = _raw_classic_sample()
    for (x_raw, y_raw), split in zip(raw, ("train", "validation", "test"), strict=True):
        got = dataset.splits[split]
        assert got.x.dtype == np.float32 and got.x.shape == (len(y_raw), 784)
        assert got.x.flags.c_contiguous
        assert got.y.dtype == np.int64
        np.testing.assert_array_equal(got.x, x_raw)
        np.testing.assert_array_equal(got.y, y_raw)
        assert 0.0 <= got.x.min() and got.x.max() <= 1.0
        assert set(np.unique(got.y)) == set(range(10))


def test_keras_sample_loads_scaled_and_flattened():
    """Given the npz sample, when loaded, then x is uint8/255 flattened to float32 (n, 784)."""
    dataset = load_dataset(NPZ_SAMPLE, source=NPZ_SOURCE)
    assert dataset.layout == "npz"
    with np.load(NPZ_SAMPLE) as raw:
        for split, n in (("train", 3000), ("test", 1000)):
            got = dataset.splits[split]
            assert got.x.shape == (n, 784) and got.x.dtype == np.float32
            assert got.x.flags.c_contiguous
            expected = raw[f"x_{split}"].reshape(n, 784).astype(np.float32) / np.float32(255)
            np.testing.assert_array_equal(got.x, expected)
            assert got.y.dtype == np.int64
            np.testing.assert_array_equal(got.y, raw[f"y_{split}"])
    assert set(dataset.splits) == {"train", "test"}


def test_the_layout_comes_from_the_source_not_the_local_name(tmp_path):
    """Given a download saved without a suffix, when loaded as .npz, then it loads."""
    local = tmp_path / "download"
    local.write_bytes(NPZ_SAMPLE.read_bytes())
    assert load_dataset(local, source="s3://b/incoming/MNIST.NPZ").layout == "npz"


def test_run_inputs_of_the_classic_sample(tmp_path):
    """Given the pkl.gz sample, when its run inputs are written, then every file holds its split."""
    dataset = load_dataset(PKL_SAMPLE, source=PKL_SOURCE)
    files = write_run_inputs(dataset, tmp_path)
    assert files == {
        "train_0": "train/train-001-of-001.recordio",
        "validation_transform_input": "transform-input/validation.csv",
        "test_transform_input": "transform-input/test.csv",
        "train_labels": "labels/train.csv",
        "validation_labels": "labels/validation.csv",
        "test_labels": "labels/test.csv",
        "manifest": "manifest.json",
    }
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == (
        sorted(files.values())
    )

    train, test = dataset.splits["train"], dataset.splits["test"]
    records = _parse_recordio((tmp_path / files["train_0"]).read_bytes())
    assert len(records) == 3000
    for i in (0, 1, 2999):
        np.testing.assert_array_equal(records[i][0], train.x[i])
        assert records[i][1] == train.y[i]

    assert len((tmp_path / files["validation_transform_input"]).read_text().splitlines()) == 1000
    text = (tmp_path / files["test_transform_input"]).read_text()
    lines = text.splitlines()
    assert len(lines) == 1000 and text.endswith("\n")
    assert all(line.count(",") == 783 for line in lines)
    back = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64)
    assert np.abs(back - test.x).max() <= CSV_MAX_ERROR
    # Every 8-bit grey level survives the text.
    np.testing.assert_array_equal(np.rint(back * 255), np.rint(test.x * 255))

    for split in ("train", "validation", "test"):
        labels = (tmp_path / files[f"{split}_labels"]).read_text()
        assert labels == "".join(f"{v}\n" for v in dataset.splits[split].y)

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest == {
        "layout": "pkl.gz",
        "feature_dim": 784,
        "counts": {"train": 3000, "validation": 1000, "test": 1000},
        "csv_decimals": 6,
        "files": files,
    }


def test_the_keras_sample_gets_its_validation_split_from_the_end_of_train(tmp_path):
    """Given the npz sample (train and test only), when its run inputs are written, then the last
    sixth of train is the validation split, scored by the transform, not trained on."""
    dataset = load_dataset(NPZ_SAMPLE, source=NPZ_SOURCE)
    files = write_run_inputs(dataset, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"] == {"train": 2500, "validation": 500, "test": 1000}
    train = dataset.splits["train"]
    validation = (tmp_path / "out" / files["validation_labels"]).read_text().split()
    assert [int(v) for v in validation] == train.y[2500:].tolist()
    records = _parse_recordio((tmp_path / "out" / files["train_0"]).read_bytes())
    assert len(records) == 2500
    lines = (tmp_path / "out" / files["validation_transform_input"]).read_text().splitlines()
    assert len(lines) == 500


def test_pixel_csv_is_compact_and_exact_for_round_values():
    """Given typical pixels, when formatted, then whole numbers and trailing zeros are dropped."""
    x = np.array(
        [[0, 1, 0.5, 1 / 255, 0.25, 0.9999996], [0.0000004, 0.1, 0.123456, 0.0000006, 1, 0]],
        dtype=np.float32,
    )
    assert format_pixels_csv(x) == (
        b"0,1,0.5,0.003922,0.25,1\n"  # 0.9999996 rounds to 1 at six decimals
        b"0,0.1,0.123456,0.000001,1,0\n"
    )


def test_pixel_csv_rejects_out_of_range_values():
    """Given a pixel above 1, when formatted, then the writer refuses instead of garbling it."""
    with pytest.raises(ValueError, match=r"pixels must be in \[0, 1\]"):
        format_pixels_csv(np.array([[1.5]], dtype=np.float32))


# --- accepted variants --------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_binary_pickle_protocol_loads(tmp_path, protocol):
    """Given the same arrays pickled with protocol 2..5, when loaded, then they come back equal."""
    classic = _classic()
    path = _write_pkl_gz(tmp_path / "d.pkl.gz", classic, protocol=protocol)
    dataset = load_dataset(path, source=PKL_SOURCE)
    np.testing.assert_array_equal(dataset.splits["test"].x, classic[2][0])
    np.testing.assert_array_equal(dataset.splits["train"].y, classic[0][1])


def test_a_pickle_written_by_numpy_1_loads(tmp_path):
    """Given a pickle naming numpy.core (numpy 1.x), when loaded, then it is accepted."""
    data = pickle.dumps(_classic(), protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "d.pkl.gz"
    path.write_bytes(gzip.compress(data.replace(b"numpy._core.", b"numpy.core.")))
    assert load_dataset(path, source=PKL_SOURCE).splits["train"].x.shape == (100, 784)


def test_dtype_variants_are_converted(tmp_path):
    """Given float64 pixels, (n, 28, 28) images and int32/uint8 labels, then they normalize."""
    (xt, yt), (xv, yv), (xs, ys) = _classic()
    variant = (
        (xt.astype(np.float64), yt.astype(np.int32)),
        (xv.reshape(-1, 28, 28), yv.astype(np.uint8)),
        ((xs * 255).astype(np.uint8), ys),  # integer grey levels are scaled like Keras
    )
    dataset = load_dataset(_write_pkl_gz(tmp_path / "v.pkl.gz", variant), source=PKL_SOURCE)
    for split in dataset.splits.values():
        assert split.x.dtype == np.float32 and split.x.shape[1] == 784
        assert split.y.dtype == np.int64
    np.testing.assert_array_equal(dataset.splits["train"].x, xt)
    np.testing.assert_array_equal(
        dataset.splits["test"].x, (xs * 255).astype(np.uint8).astype(np.float32) / 255
    )


# --- refused files: size and container ----------------------------------------------------


@pytest.mark.parametrize("source", [PKL_SOURCE, NPZ_SOURCE])
def test_an_empty_file_is_refused(tmp_path, source):
    """Given an empty file, when loaded, then it is refused by name as empty."""
    path = tmp_path / "empty"
    path.touch()
    assert _refused(path, source) == f"{source}: the file is empty"


@pytest.mark.parametrize("source", [PKL_SOURCE, NPZ_SOURCE])
def test_a_file_over_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch, source):
    """Given a sparse file one byte over the limit, when loaded, then only its size is looked at."""
    path = tmp_path / "huge"
    path.write_bytes(b"not a dataset at all")
    os.truncate(path, MAX_DATASET_BYTES + 1)  # sparse: no disk used

    def no_reading(*args, **kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(ds, "_load_pkl_gz", no_reading)
    monkeypatch.setattr(ds, "_load_npz", no_reading)
    monkeypatch.setattr(builtins, "open", no_reading)
    assert _refused(path, source) == (
        f"{source}: {MAX_DATASET_BYTES + 1} bytes is over the limit of {MAX_DATASET_BYTES} "
        "bytes; not read"
    )


def test_a_smaller_limit_refuses_the_real_sample(tmp_path):
    """Given max_bytes below the sample's size, when loaded, then the size is what is refused."""
    size = PKL_SAMPLE.stat().st_size
    assert _refused(PKL_SAMPLE, PKL_SOURCE, max_bytes=size - 1) == (
        f"{PKL_SOURCE}: {size} bytes is over the limit of {size - 1} bytes; not read"
    )


@pytest.mark.parametrize(
    "source", ["s3://b/incoming/x.csv", "s3://b/incoming/x.gz", "s3://b/incoming/x.pkl"]
)
def test_an_unsupported_suffix_is_refused(source):
    """Given a name that is neither .pkl.gz nor .npz, when loaded, then it is refused unread."""
    assert _refused(PKL_SAMPLE, source) == (
        f"{source}: unsupported file type; expected a name ending in .pkl.gz or .npz"
    )


def test_a_truncated_gzip_is_refused(tmp_path):
    """Given the sample cut in half, when loaded, then the gzip truncation is named."""
    path = tmp_path / "cut.pkl.gz"
    path.write_bytes(PKL_SAMPLE.read_bytes()[: PKL_SAMPLE.stat().st_size // 2])
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: gzip data is truncated"


def test_a_gzip_cut_just_before_its_trailer_is_refused(tmp_path):
    """Given a gzip missing only its CRC trailer, when loaded, then it is still found truncated."""
    path = tmp_path / "cut.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_classic(), protocol=2))[:-8])
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: gzip data is truncated"


def test_a_file_that_is_not_gzip_is_refused(tmp_path):
    """Given plain bytes named .pkl.gz, when loaded, then it is refused as not gzip."""
    path = tmp_path / "plain.pkl.gz"
    path.write_bytes(b"hello, this is text")
    assert _refused(path, PKL_SOURCE).startswith(f"{PKL_SOURCE}: not a gzip file (")


def test_a_gzip_bomb_is_stopped_at_the_decompression_limit(tmp_path):
    """Given 8 MB of text that gzips to kilobytes, when loaded with a 1 MB limit, then it is
    refused from its declared length, before any of it is read (tests/unit/test_dataset_bounds.py
    has the other bombs)."""
    payload = b"\x80\x02X" + struct.pack("<I", 8_000_000) + b"a" * 8_000_000
    path = tmp_path / "bomb.pkl.gz"
    path.write_bytes(gzip.compress(payload))
    assert path.stat().st_size < 1_000_000
    assert _refused(path, PKL_SOURCE, max_bytes=1_000_000) == (
        f"{PKL_SOURCE}: declares a string of 8000000 bytes, which would take it past the limit "
        "of 1000000 decompressed bytes (max_dataset_bytes; 999993 left); refused as a possible "
        "gzip bomb"
    )


# --- refused files: the pickle is code --------------------------------------------------------


class _RunsShell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _RunsPython:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize(
    ("payload", "protocol", "refused_global"),
    [
        (_RunsShell, 2, f"{os.system.__module__}.system"),
        (_RunsPython, 2, "__builtin__.exec"),  # protocol 2 spells builtins the Python 2 way
        (_RunsPython, 4, "builtins.exec"),
    ],
    ids=["os.system", "exec-protocol-2", "exec-protocol-4"],
)
def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(
    tmp_path, payload, protocol, refused_global
):
    """Given a pickle whose x_train would run code, when loaded, then it is refused unrun."""
    marker = tmp_path / "pwned"
    (xt, yt), valid, test = _classic()
    evil = ((payload(marker), yt), valid, test)
    path = _write_pkl_gz(tmp_path / "evil.pkl.gz", evil, protocol=protocol)
    assert _refused(path, PKL_SOURCE) == (
        f"{PKL_SOURCE}: pickle refers to {refused_global}, which a dataset may not use"
    )
    assert not marker.exists()


def test_the_code_running_pickle_is_live():
    """Control for the test above: a plain unpickle of the same payload does run it."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        marker = os.path.join(work, "pwned")
        pickle.loads(pickle.dumps(_RunsPython(marker), protocol=2))  # noqa: S301
        assert os.path.exists(marker)


def test_a_numpy_function_outside_the_array_types_is_refused(tmp_path):
    """Given a pickle calling numpy.load, when loaded, then numpy is not admitted wholesale."""

    class _Loads:
        def __reduce__(self):
            return (np.load, ("/etc/passwd",))

    path = _write_pkl_gz(tmp_path / "np.pkl.gz", _Loads())
    message = _refused(path, PKL_SOURCE)
    assert message.startswith(f"{PKL_SOURCE}: pickle refers to numpy.")
    assert message.endswith("load, which a dataset may not use")


def test_codecs_encode_is_admitted_for_latin1_only(tmp_path):
    """Given a pickle asking _codecs.encode for another codec, when loaded, then it is refused."""
    import codecs

    class _Zlib:
        def __reduce__(self):
            return (codecs.encode, (b"x" * 10, "zlib"))

    path = _write_pkl_gz(tmp_path / "codec.pkl.gz", _Zlib())
    assert _refused(path, PKL_SOURCE) == (
        f"{PKL_SOURCE}: not a valid pickle (UnpicklingError: only latin1 text may be encoded)"
    )


def test_a_protocol_0_pickle_is_refused(tmp_path):
    """Given a text (protocol 0) pickle, when loaded, then it is refused by protocol."""
    path = _write_pkl_gz(tmp_path / "p0.pkl.gz", _classic(), protocol=0)
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: not a pickle of protocol 2 or later"


def test_data_after_the_pickle_is_refused(tmp_path):
    """Given bytes after the pickle's STOP, when loaded, then the file is refused."""
    path = tmp_path / "tail.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps(_classic(), protocol=2) + b"extra"))
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: unexpected data after the pickle"


def test_a_pickle_of_the_wrong_structure_is_refused(tmp_path):
    """Given a dict instead of the three pairs, when loaded, then the expected tuple is named."""
    path = _write_pkl_gz(tmp_path / "d.pkl.gz", {"x": 1})
    assert _refused(path, PKL_SOURCE) == (
        f"{PKL_SOURCE}: pickle must hold a tuple ((x_train, y_train), (x_valid, y_valid), "
        "(x_test, y_test)), got a dict"
    )


# --- refused files: the arrays ------------------------------------------------------------


def _with_train(x=None, y=None):
    (xt, yt), valid, test = _classic()
    return ((xt if x is None else x, yt if y is None else y), valid, test)


@pytest.mark.parametrize(
    ("train", "problem"),
    [
        (
            _with_train(x=np.zeros((100, 27, 27), np.float32)),
            "x_train has shape (100, 27, 27); expected (n, 784) or (n, 28, 28)",
        ),
        (
            _with_train(x=np.zeros((100, 784, 1), np.float32)),
            "x_train has shape (100, 784, 1); expected (n, 784) or (n, 28, 28)",
        ),
        (
            _with_train(x=np.full((100, 784), "a")),
            "x_train has dtype <U1; expected floats in [0, 1] or integers 0..255",
        ),
        (
            _with_train(x=np.zeros((100, 784), dtype=object)),
            "x_train has dtype object; expected floats in [0, 1] or integers 0..255",
        ),
        (
            _with_train(x=np.zeros((100, 784), dtype=bool)),
            "x_train has dtype bool; expected floats in [0, 1] or integers 0..255",
        ),
        (
            _with_train(y=np.zeros(100, np.float32)),
            "y_train has dtype float32; expected integer labels",
        ),
        (_with_train(y=np.zeros((100, 1), np.int64)), "y_train has shape (100, 1); expected (n,)"),
        (_with_train(x=[[0.0] * 784] * 100), "x_train is a list of 100 items, not a numpy array"),
        (
            _with_train(y=np.zeros(99, np.int64)),
            "x_train has 100 images but y_train has 99 labels",
        ),
    ],
    ids=[
        "27x27",
        "3-d",
        "strings",
        "objects",
        "bool",
        "float-labels",
        "2-d-labels",
        "list",
        "lengths",
    ],
)
def test_arrays_of_the_wrong_shape_or_dtype_are_refused(tmp_path, train, problem):
    """Given a malformed train split, when loaded, then the array and its problem are named."""
    path = _write_pkl_gz(tmp_path / "bad.pkl.gz", train)
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: {problem}"


def _poisoned(value, at=(3, 5)):
    x = _pixels(100)
    x[at] = value
    return x


@pytest.mark.parametrize(
    ("x", "problem"),
    [
        (_poisoned(np.nan), "x_train contains NaN"),
        (_poisoned(1.5), "x_train has pixels outside [0, 1] (min 0, max 1.5)"),
        (_poisoned(-0.25), "x_train has pixels outside [0, 1] (min -0.25, max 1)"),
        (_poisoned(np.inf), "x_train has pixels outside [0, 1] (min 0, max inf)"),
        (
            np.full((100, 784), 256, np.int16),
            "x_train has pixels outside 0..255 (min 256, max 256)",
        ),
    ],
    ids=["nan", "above-1", "negative", "inf", "int-above-255"],
)
def test_pixels_out_of_range_are_refused(tmp_path, x, problem):
    """Given a bad pixel value, when loaded, then the problem and the range are named."""
    if x.dtype.kind == "f":
        x[0, 0], x[1, 1] = 0.0, 1.0  # pin the extremes the message reports
    path = _write_pkl_gz(tmp_path / "bad.pkl.gz", _with_train(x=x))
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: {problem}"


@pytest.mark.parametrize(
    ("bad_label", "problem"),
    [(10, "min 0, max 10"), (-1, "min -1, max 9")],
)
def test_labels_outside_0_to_9_are_refused(tmp_path, bad_label, problem):
    """Given a label of 10 or -1, when loaded, then the labels' range is named."""
    y = np.arange(100, dtype=np.int64) % 10
    y[42] = bad_label
    path = _write_pkl_gz(tmp_path / "bad.pkl.gz", _with_train(y=y))
    assert _refused(path, PKL_SOURCE) == (
        f"{PKL_SOURCE}: y_train has labels outside 0..9 ({problem})"
    )


@pytest.mark.parametrize(
    ("sizes", "problem"),
    [
        ((99, 10, 10), "the train split has 99 images; at least 100 are required"),
        ((100, 9, 10), "the validation split has 9 images; at least 10 are required"),
        ((100, 10, 0), "the test split has 0 images; at least 10 are required"),
    ],
)
def test_fewer_images_than_the_minimum_are_refused(tmp_path, sizes, problem):
    """Given a split one image short of MIN_IMAGES, when loaded, then the split is named."""
    path = _write_pkl_gz(tmp_path / "small.pkl.gz", _classic(*sizes))
    assert _refused(path, PKL_SOURCE) == f"{PKL_SOURCE}: {problem}"


def test_a_keras_split_below_the_minimum_is_refused(tmp_path):
    """Given an npz with 9 test images, when loaded, then the test split is named."""
    path = _write_npz(tmp_path / "small.npz", _keras(n_test=9))
    assert _refused(path, NPZ_SOURCE) == (
        f"{NPZ_SOURCE}: the test split has 9 images; at least 10 are required"
    )


# --- refused files: npz -------------------------------------------------------------------


def test_an_npz_missing_an_array_is_refused(tmp_path):
    """Given an npz without y_train, when loaded, then the missing array is named."""
    arrays = _keras()
    del arrays["y_train"]
    path = _write_npz(tmp_path / "m.npz", arrays)
    assert _refused(path, NPZ_SOURCE) == f"{NPZ_SOURCE}: array 'y_train' is missing"


def test_an_npz_missing_several_arrays_names_them_all(tmp_path):
    """Given an npz with only the train arrays, when loaded, then both test arrays are named."""
    arrays = _keras()
    path = _write_npz(tmp_path / "m.npz", {k: v for k, v in arrays.items() if "train" in k})
    assert _refused(path, NPZ_SOURCE) == f"{NPZ_SOURCE}: arrays 'x_test', 'y_test' are missing"


def test_an_npz_holding_python_objects_is_refused_without_unpickling(tmp_path):
    """Given an npz whose x_train is an object array, when loaded, then it is never unpickled."""
    arrays = _keras()
    arrays["x_train"] = np.array([_RunsShell(tmp_path / "pwned")] * 100, dtype=object)
    path = _write_npz(tmp_path / "o.npz", arrays)
    assert _refused(path, NPZ_SOURCE) == (
        f"{NPZ_SOURCE}: array 'x_train' holds Python objects, not numbers"
    )
    assert not (tmp_path / "pwned").exists()


def test_an_npz_with_the_wrong_image_shape_is_refused(tmp_path):
    """Given 32x32 images, when loaded, then the shape is named."""
    arrays = _keras()
    arrays["x_test"] = np.zeros((10, 32, 32), np.uint8)
    path = _write_npz(tmp_path / "s.npz", arrays)
    assert _refused(path, NPZ_SOURCE) == (
        f"{NPZ_SOURCE}: x_test has shape (10, 32, 32); expected (n, 784) or (n, 28, 28)"
    )


def test_an_npz_that_would_decompress_beyond_the_limit_is_refused(tmp_path):
    """Given a compressed npz declaring 2 MB of members, when loaded with a 1 MB limit, refused."""
    arrays = _keras()
    arrays["x_train"] = np.zeros((2600, 28, 28), np.uint8)  # 2 MB of zeros, kilobytes zipped
    arrays["y_train"] = np.zeros(2600, np.uint8)
    path = tmp_path / "z.npz"
    np.savez_compressed(path, **arrays)
    assert path.stat().st_size < 1_000_000
    with zipfile.ZipFile(path) as archive:
        declared = sum(info.file_size for info in archive.infolist())
    assert _refused(path, NPZ_SOURCE, max_bytes=1_000_000) == (
        f"{NPZ_SOURCE}: arrays would decompress to {declared} bytes, over the limit of "
        "1000000 bytes"
    )


def test_an_npy_header_claiming_more_data_than_stored_is_refused(tmp_path):
    """Given an x_train header claiming 10^9 images over a few bytes, when loaded, then refused."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)}
    )
    path = tmp_path / "lie.npz"
    _write_npz(path, {k: v for k, v in _keras().items() if k != "x_train"})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("x_train.npy", header.getvalue() + b"\0" * 64)
    assert _refused(path, NPZ_SOURCE) == (
        f"{NPZ_SOURCE}: array 'x_train' claims more data than it stores"
    )


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    """Given plain bytes named .npz, when loaded, then it is refused as not a zip."""
    path = tmp_path / "plain.npz"
    path.write_bytes(b"hello, this is text")
    assert _refused(path, NPZ_SOURCE) == (
        f"{NPZ_SOURCE}: not a valid .npz (zip) file (File is not a zip file)"
    )


# --- the value types ----------------------------------------------------------------------


def test_split_refuses_arrays_it_does_not_describe():
    """Given float64 pixels, when a Split is built directly, then it is refused."""
    with pytest.raises(ValueError, match=r"x must be float32 \(n, 784\), got float64"):
        Split(x=np.zeros((1, 784)), y=np.zeros(1, np.int64))


def test_write_run_inputs_refuses_labels_it_cannot_write(tmp_path):
    """Given a hand-built dataset with a label of 12, when written, then nothing garbles it."""
    split = Split(x=_pixels(10), y=np.full(10, 12, np.int64))
    dataset = MnistDataset(layout="npz", splits={"train": split, "test": split})
    with pytest.raises(ValueError, match=r"labels must be 0\.\.9"):
        write_run_inputs(dataset, tmp_path)


@pytest.mark.parametrize("shards", [2, 3])
def test_training_shards_hold_every_row_once_in_order(tmp_path, shards):
    # Given the sample, when its training data is written in several shards
    dataset = load_dataset(NPZ_SAMPLE, source=NPZ_SOURCE)
    files = write_run_inputs(dataset, tmp_path, train_shards=shards)
    # Then the shards, read in order, hold every training image once, with its label
    parts = [_parse_recordio((tmp_path / files[f"train_{i}"]).read_bytes()) for i in range(shards)]
    assert all(parts) and sum(len(part) for part in parts) == 2500  # (500 kept for validation)
    rows = [record for part in parts for record in part]
    train = dataset.splits["train"]
    for i in (0, 1249, 1250, 2499):
        np.testing.assert_array_equal(rows[i][0], train.x[i])
        assert rows[i][1] == train.y[i]
