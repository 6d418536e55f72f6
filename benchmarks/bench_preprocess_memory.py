"""Benchmark: preprocess's peak memory on hostile files and on a full-size MNIST, against its cap.

Run from the repo root: `.venv/bin/python benchmarks/bench_preprocess_memory.py` (not a test).
Every case runs in a fresh interpreter with the product's defaults (max_dataset_bytes 2 GiB,
preprocess_memory 4608Mi): `load_dataset` (and `write_run_inputs` when the file loads), with
peak RSS from /proc/self/status VmHWM, as benchmarks/bench_preprocess.py measures it.

`--tree DIR` runs the same children against another checkout of the repository (for example
`git archive HEAD | tar -x -C /tmp/base`), to compare with the loader before a change. Those
children get an address-space limit (`--address-space-gib`, 8 by default), so an unbounded
loader fails there instead of taking the machine's memory; a crash is reported as such.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.steps.dataset import (  # noqa: E402
    MAX_DATASET_BYTES,
    MEMORY_RESERVE_BYTES,
    PREPROCESS_MEMORY,
    memory_bytes,
)

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct

CAP = memory_bytes(PREPROCESS_MEMORY)  # the pod's request and limit
BUDGET = CAP - MEMORY_RESERVE_BYTES  # what the load itself may hold
N_TRAIN, N_VALID, N_TEST = 50_000, 10_000, 10_000
FEATURE_DIM = 784
MB = 1e6
MiB = 1024**2
GiB = 1024**3

CHILD = textwrap.dedent(
    """
    import json, resource, sys, tempfile, time
    from pathlib import Path
    if len(sys.argv) > 3:
        limit = int(sys.argv[3])
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import numpy as np
    from pipeline.steps.dataset import DatasetError, load_dataset, write_run_inputs

    def rss():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    baseline = rss()
    start = time.perf_counter()
    final = 0
    try:
        dataset = load_dataset(sys.argv[1], source=sys.argv[2])
        final = sum(s.x.nbytes + s.y.nbytes for s in dataset.splits.values())
        with tempfile.TemporaryDirectory() as out:
            write_run_inputs(dataset, Path(out))
        outcome = "loaded and written"
    except DatasetError as error:
        outcome = "refused: " + str(error).split(": ", 1)[1]
    except BaseException as error:
        outcome = f"{type(error).__name__}: {error}"[:300]
    print(json.dumps({
        "outcome": outcome, "seconds": time.perf_counter() - start,
        "baseline_rss": baseline, "peak_rss": rss(), "final_bytes": final,
    }))
    """
)


# --- the files ------------------------------------------------------------------------------


def _zeros(n: int, chunk: int = 64 * MiB) -> Iterator[bytes]:
    block = bytes(chunk)
    while n > 0:
        yield block if n >= chunk else bytes(n)
        n -= chunk


def _write_gzip(path: Path, *parts) -> Path:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as out:
        for part in parts:
            for chunk in [part] if isinstance(part, bytes) else part:
                out.write(chunk)
    return path


class _Array:
    """Pickles as numpy pickles an array, with whatever shape, dtype and data it is given."""

    def __init__(self, shape, dtype, data):
        self.shape, self.dtype, self.data = shape, dtype, data

    def __reduce__(self):
        return (
            _reconstruct,
            (np.ndarray, (0,), b"b"),
            (1, self.shape, self.dtype, False, self.data),
        )


def _labels(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64) % 10


def _with_train_x(x, n: int) -> tuple:
    """x as x_train over n labels, and two small genuine splits of their own."""
    small = [(np.zeros((10, FEATURE_DIM), np.float32), _labels(10)) for _ in range(2)]
    return ((x, _labels(n)), *small)


def full_mnist_pkl(path: Path) -> Path:
    """As benchmarks/bench_preprocess.py: random float32 pixels, protocol 2, 50k/10k/10k."""
    rng = np.random.default_rng(0)
    x = rng.random((N_TRAIN + N_VALID + N_TEST, FEATURE_DIM), dtype=np.float32)
    y = rng.integers(0, 10, len(x)).astype(np.int64)
    cuts = np.cumsum([N_TRAIN, N_VALID])
    splits = tuple(zip(np.split(x, cuts), np.split(y, cuts), strict=True))
    with gzip.open(path, "wb", compresslevel=1) as out:
        pickle.dump(splits, out, protocol=2)
    return path


def full_mnist_npz(path: Path) -> Path:
    """The Keras layout: uint8 images (n, 28, 28), uint8 labels, 60k/10k."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60_000), ("test", 10_000)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, n, dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def gzip_bomb_one_string(path: Path) -> Path:
    """The issue's bomb: a 3 GiB string of zeros, 3 MB gzip'd (today: 6.2 GB, then EOFError)."""
    n = 3 * GiB
    return _write_gzip(path, b"\x80\x02\x8d" + struct.pack("<Q", n), _zeros(n))


def gzip_bomb_many_strings(path: Path) -> Path:
    """48 strings of 64 MiB (3 GiB of zeros) in a list: each fits, together they do not."""
    size = 64 * MiB
    strings = (b"\x8d" + struct.pack("<Q", size) + bytes(size) for _ in range(48))
    return _write_gzip(path, b"\x80\x02](", strings, b"e.")


def aliased_splits(path: Path) -> Path:
    """The issue's aliasing pickle: one pair of arrays as all three splits (196 MB of zeros,
    ~200 KB gzip'd; today accepted at 2.47 GB)."""
    pair = (np.zeros((250_000, FEATURE_DIM), np.uint8), _labels(250_000))
    with gzip.open(path, "wb", compresslevel=6) as out:
        pickle.dump((pair, pair, pair), out, protocol=2)
    return path


def huge_declared_shape(path: Path) -> Path:
    """x_train declares (10^9, 784) float32 (3.1 TB) over 4 bytes of data."""
    x = _Array((10**9, FEATURE_DIM), np.dtype("f4"), bytes(4))
    obj = _with_train_x(x, 100)
    with gzip.open(path, "wb") as out:
        pickle.dump(obj, out, protocol=2)
    return path


def huge_object_array(path: Path) -> Path:
    """x_train declares 10^8 Python objects over a one-item list (today: a segfault)."""
    x = _Array((10**8,), np.dtype("O"), [0.0])
    obj = _with_train_x(x, 100)
    with gzip.open(path, "wb") as out:
        pickle.dump(obj, out, protocol=2)
    return path


def over_the_budget(path: Path) -> Path:
    """Real data, no lie: 1.2 GB of uint8 images (1.2 MB gzip'd) whose float32 copy (4.7 GB)
    is over the budget. Protocol 3, the array streamed in as one BINBYTES."""
    n = 1_500_000
    marker = b"\xab" * 100_000
    x = _Array((n, FEATURE_DIM), np.dtype("u1"), marker)
    obj = _with_train_x(x, n)
    data = pickle.dumps(obj, protocol=3)
    head, tail = data.split(b"B" + struct.pack("<I", len(marker)) + marker)
    return _write_gzip(
        path, head + b"B" + struct.pack("<I", n * FEATURE_DIM), _zeros(n * 784), tail
    )


def npz_bomb(path: Path) -> Path:
    """An .npz whose x_train.npy is 1.9 GB of zeros deflated to ~2 MB: under the 2 GiB limit,
    but 1.9 GB + 7.6 GB as float32."""
    n = 2_400_000
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "|u1", "fortran_order": False, "shape": (n, 28, 28)}
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            for chunk in _zeros(n * 784):
                member.write(chunk)
        for name, array in {
            "y_train": np.zeros(n, np.uint8),
            "x_test": np.zeros((10, 28, 28), np.uint8),
            "y_test": np.zeros(10, np.uint8),
        }.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(f"{name}.npy", buffer.getvalue())
    return path


CASES: list[tuple[str, str, Callable[[Path], Path]]] = [
    ("full-size MNIST .pkl.gz (70,000 x 784 float32, protocol 2)", "pkl.gz", full_mnist_pkl),
    ("full-size MNIST .npz (70,000 x 28 x 28 uint8)", "npz", full_mnist_npz),
    ("gzip bomb: one 3 GiB string", "pkl.gz", gzip_bomb_one_string),
    ("gzip bomb: 48 strings of 64 MiB", "pkl.gz", gzip_bomb_many_strings),
    ("aliased splits: one 196 MB pair as all three", "pkl.gz", aliased_splits),
    ("huge declared shape: (10^9, 784) over 4 bytes", "pkl.gz", huge_declared_shape),
    ("huge declared shape: 10^8 objects over 1", "pkl.gz", huge_object_array),
    ("genuine but over the budget: 1.2 GB uint8", "pkl.gz", over_the_budget),
    (".npz bomb: a 1.9 GB member deflated", "npz", npz_bomb),
]


# --- running ------------------------------------------------------------------------------


def run_case(path: Path, layout: str, tree: Path, address_space: int | None) -> dict:
    argv = [sys.executable, "-c", CHILD, str(path), f"s3://bench/incoming/data.{layout}"]
    if address_space:
        argv.append(str(address_space))
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
    )
    if done.returncode != 0:
        name = signal.Signals(-done.returncode).name if done.returncode < 0 else done.returncode
        return {"outcome": f"crashed ({name})", "peak_rss": None, "baseline_rss": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="the checkout whose loader runs")
    parser.add_argument("--address-space-gib", type=int, default=8)
    parser.add_argument("--only", help="run the cases whose name contains this")
    args = parser.parse_args()
    other_tree = args.tree.resolve() != REPO
    address_space = args.address_space_gib * GiB if other_tree else None

    print(f"tree: {args.tree}; max_dataset_bytes {MAX_DATASET_BYTES}")
    print(
        f"cap (preprocess_memory {PREPROCESS_MEMORY}) {CAP / MB:.0f} MB; the load's budget "
        f"{BUDGET / MB:.0f} MB (the cap less {MEMORY_RESERVE_BYTES / MB:.0f} MB for the runtime)\n"
    )
    failures = []
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for name, layout, make in CASES:
            if args.only and args.only not in name:
                continue
            path = make(Path(tmp) / f"case.{layout}")
            size = path.stat().st_size
            result = run_case(path, layout, args.tree, address_space)
            path.unlink()
            rows.append((name, size, result))
            peak, base = result["peak_rss"], result["baseline_rss"]
            if peak is None:
                print(f"{name}\n  file {size / MB:.1f} MB: {result['outcome']}\n")
                failures.append(f"{name}: {result['outcome']}")
                continue
            over = peak - base
            line = (
                f"  file {size / MB:.1f} MB, {result['seconds']:.1f} s; peak RSS {peak / MB:.0f} MB"
                f" = {peak / CAP:.1%} of the cap; over the baseline after imports "
                f"{over / MB:.0f} MB"
            )
            if result.get("final_bytes"):
                line += f" = {over / result['final_bytes']:.2f}x the final arrays"
                line += f" ({result['final_bytes'] / MB:.1f} MB)"
            print(f"{name}\n{line}\n  {result['outcome'][:160]}\n")
            if peak > CAP:
                failures.append(f"{name}: peak {peak / MB:.0f} MB is over the cap")
            if result.get("final_bytes") and over > 2 * result["final_bytes"]:
                failures.append(f"{name}: peak over 2x the final arrays")
    if not other_tree:
        for failure in failures:
            print(f"FAIL: {failure}")
        if not failures:
            print("OK: every case under the cap; the genuine files under 2x their final arrays")
    return 1 if failures and not other_tree else 0


if __name__ == "__main__":
    sys.exit(main())
