"""Benchmark: preprocessing a full-size MNIST upload, and our RecordIO writer against the SDK's.

Run from the repo root: `.venv/bin/python benchmarks/bench_preprocess.py` (not a test).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SDK_VENV = REPO / "benchmarks" / ".venv-sdk"
SDK_REQUIREMENT = "sagemaker>=2,<3"  # never a product requirement: it lives in its own venv

N_TRAIN, N_VALID, N_TEST = 50_000, 10_000, 10_000
N_ROWS = N_TRAIN + N_VALID + N_TEST
FEATURE_DIM = 784
RAW_BYTES = N_ROWS * FEATURE_DIM * 4  # the float32 array: 219.5 MB
PICKLE_PROTOCOL = 2  # what the classic mnist.pkl.gz uses, and the costliest to load
GZIP_LEVEL = 1  # random pixels do not compress; a higher level only slows the setup
END_TO_END_RUNS = 3
OUR_WRITER_RUNS = 3
MIN_SPEEDUP = 10
MAX_PEAK_OVER_RAW = 3
MB = 1e6

# The end-to-end child: imports first, then the baseline, then the work, then the peak RSS.
# Peak RSS is VmHWM from /proc/self/status, not ru_maxrss: Linux carries ru_maxrss across
# exec, so a child would inherit this (larger) process's peak and report nothing.
END_TO_END_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from pipeline.steps.dataset import load_dataset, write_run_inputs

    def rss():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024

    baseline = rss()
    start = time.perf_counter()
    dataset = load_dataset(sys.argv[1], source="s3://bench/incoming/mnist.pkl.gz")
    loaded = time.perf_counter()
    files = write_run_inputs(dataset, Path(sys.argv[2]))
    done = time.perf_counter()
    sizes = {k: (Path(sys.argv[2]) / v).stat().st_size for k, v in files.items()}
    print(json.dumps({
        "load_s": loaded - start, "write_s": done - loaded, "total_s": done - start,
        "baseline_rss": baseline, "peak_rss": rss(), "sizes": sizes,
    }))
    """
)

SDK_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from sagemaker.amazon.common import write_numpy_to_dense_tensor

    x = np.load(sys.argv[1])
    y = np.load(sys.argv[2]).astype(np.float32)
    start = time.perf_counter()
    with open(sys.argv[3], "wb") as out:
        write_numpy_to_dense_tensor(out, x, y)
    print("RESULT " + json.dumps({"seconds": time.perf_counter() - start}))
    """
)


def ensure_sdk_venv() -> Path:
    python = SDK_VENV / "bin" / "python"
    probe = [str(python), "-c", "import sagemaker.amazon.common"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {SDK_VENV} with {SDK_REQUIREMENT} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(SDK_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", SDK_REQUIREMENT], check=True)
    return python


def make_inputs(work: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    x = rng.random((N_ROWS, FEATURE_DIM), dtype=np.float32)
    y = rng.integers(0, 10, N_ROWS).astype(np.int64)
    x_path, y_path = work / "x.npy", work / "y.npy"
    np.save(x_path, x)
    np.save(y_path, y)
    cuts = np.cumsum([N_TRAIN, N_VALID])
    splits = tuple(zip(np.split(x, cuts), np.split(y, cuts), strict=True))
    pkl_path = work / "mnist.pkl.gz"
    with gzip.open(pkl_path, "wb", compresslevel=GZIP_LEVEL) as out:
        pickle.dump(splits, out, protocol=PICKLE_PROTOCOL)
    return x_path, y_path, pkl_path


def run_end_to_end(pkl_path: Path, work: Path) -> list[dict]:
    results = []
    for run in range(END_TO_END_RUNS):
        out_dir = work / f"out-{run}"
        done = subprocess.run(
            [sys.executable, "-c", END_TO_END_CHILD, str(pkl_path), str(out_dir)],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return results


def time_our_writer(x_path: Path, y_path: Path, out: Path) -> float:
    from pipeline.steps.recordio import write_dense_tensor

    x, y = np.load(x_path), np.load(y_path).astype(np.float32)
    timings = []
    for _ in range(OUR_WRITER_RUNS):
        start = time.perf_counter()
        with open(out, "wb") as f:
            write_dense_tensor(f, x, y)
        timings.append(time.perf_counter() - start)
    return min(timings)


def time_sdk_writer(sdk_python: Path, x_path: Path, y_path: Path, out: Path) -> float:
    done = subprocess.run(
        [str(sdk_python), "-c", SDK_CHILD, str(x_path), str(y_path), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))["seconds"]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main() -> int:
    sdk_python = ensure_sdk_venv()
    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        work = Path(tmp)
        x_path, y_path, pkl_path = make_inputs(work)
        e2e = run_end_to_end(pkl_path, work)
        ours_s = time_our_writer(x_path, y_path, work / "ours.recordio")
        sdk_s = time_sdk_writer(sdk_python, x_path, y_path, work / "sdk.recordio")
        identical = sha256(work / "ours.recordio") == sha256(work / "sdk.recordio")
        recordio_bytes = (work / "ours.recordio").stat().st_size
        pkl_bytes = pkl_path.stat().st_size

    peak = max(r["peak_rss"] - r["baseline_rss"] for r in e2e)
    speedup = sdk_s / ours_s
    median = {k: statistics.median(r[k] for r in e2e) for k in ("load_s", "write_s", "total_s")}
    sizes = e2e[0]["sizes"]
    rows = [
        ("input .pkl.gz (protocol 2, 50k/10k/10k)", f"{pkl_bytes / MB:.1f} MB"),
        ("raw float32 array, 70,000 x 784", f"{RAW_BYTES / MB:.1f} MB"),
        (f"end to end, median of {END_TO_END_RUNS}", f"{median['total_s']:.2f} s"),
        ("  load_dataset", f"{median['load_s']:.2f} s"),
        ("  write_run_inputs", f"{median['write_s']:.2f} s"),
        ("peak RSS over baseline (VmHWM)", f"{peak / MB:.0f} MB = {peak / RAW_BYTES:.2f}x raw"),
        (
            "train.recordio / test.csv",
            f"{sizes['train'] / MB:.1f} / {sizes['transform_input'] / MB:.1f} MB",
        ),
        (f"write_dense_tensor, best of {OUR_WRITER_RUNS}", f"{ours_s:.3f} s"),
        ("SDK write_numpy_to_dense_tensor", f"{sdk_s:.2f} s"),
        ("speedup", f"{speedup:.1f}x"),
        ("RecordIO output byte-identical to SDK's", "yes" if identical else "NO"),
        ("RecordIO size", f"{recordio_bytes / MB:.1f} MB"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")

    failures = []
    if speedup < MIN_SPEEDUP:
        failures.append(f"speedup {speedup:.1f}x is under {MIN_SPEEDUP}x")
    if peak > MAX_PEAK_OVER_RAW * RAW_BYTES:
        failures.append(f"peak {peak / RAW_BYTES:.2f}x raw is over {MAX_PEAK_OVER_RAW}x")
    if not identical:
        failures.append("our RecordIO differs from the SDK's")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(f"OK: >= {MIN_SPEEDUP}x faster, peak < {MAX_PEAK_OVER_RAW}x raw, byte-identical")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
