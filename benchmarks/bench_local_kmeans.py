"""Benchmark: the local SageMaker's k-means against scikit-learn's KMeans and MiniBatchKMeans.

Each trainer fits the sample's 3,000 training digits (mnistflow/data/mnist-sample.pkl.gz) for
k in 10, 16 and 32, over the same seeds; each cluster is then named after its majority digit
on the 1,000 validation digits, and the accuracy is measured on the 1,000 test digits (what the
pipeline's evaluate step does). The local trainer runs with the pipeline's hyperparameters
(mini_batch_size=500, the built-in image's defaults otherwise), as a training job runs it.
A last row scores the same clusters against shuffled labels: what a dataset whose labels are
noise gets.

Both sides run in child processes on one thread each (OMP/OpenBLAS), so their times compare.
scikit-learn is never a product requirement: it lives in benchmarks/.venv-sklearn, made here.

Run from the repo root: `.venv/bin/python benchmarks/bench_local_kmeans.py` (not a test).
Exit 1 when the local trainer's mean accuracy falls more than MAX_SHORTFALL_POINTS short of
the best scikit-learn trainer's at some k.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mnistflow" / "data" / "mnist-sample.pkl.gz"
SKLEARN_VENV = REPO / "benchmarks" / ".venv-sklearn"
SKLEARN_REQUIREMENT = "scikit-learn>=1.5,<2"  # never a product requirement
KS = (10, 16, 32)
SEEDS = range(20)
MINI_BATCH_SIZE = 500  # the pipeline's default (core/settings.py)
MAX_SHORTFALL_POINTS = 3.0
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Each child prints one line "RESULT <json>": {trainer: {k: [{seed, seconds, val, test}]}},
# where val and test are the cluster of each validation and test image.
LOCAL_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    from mnistflow.local.kmeans import parse_hyperparameters, train
    from pipeline.steps.kmeans_model import closest_clusters

    work, batch = sys.argv[1], sys.argv[4]
    ks, seeds = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    x, val, test = (np.load(f"{work}/{name}.npy") for name in ("train", "val", "test"))
    runs = {}
    for k in ks:
        hp = parse_hyperparameters({"k": str(k), "feature_dim": "784", "mini_batch_size": batch})
        for seed in seeds:
            start = time.perf_counter()
            centroids = train(x, hp, seed=seed).centroids
            seconds = time.perf_counter() - start
            runs.setdefault(str(k), []).append({
                "seed": seed, "seconds": seconds,
                "val": closest_clusters(centroids, val)[0].tolist(),
                "test": closest_clusters(centroids, test)[0].tolist(),
            })
    print("RESULT " + json.dumps({"local k-means (SageMaker's algorithm)": runs}))
    """
)

SKLEARN_CHILD = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    import sklearn
    from sklearn.cluster import KMeans, MiniBatchKMeans

    work, batch = sys.argv[1], int(sys.argv[4])
    ks, seeds = json.loads(sys.argv[2]), json.loads(sys.argv[3])
    x, val, test = (np.load(f"{work}/{name}.npy") for name in ("train", "val", "test"))
    trainers = {
        "KMeans (defaults)": lambda k, s: KMeans(n_clusters=k, random_state=s),
        "KMeans (n_init=10)": lambda k, s: KMeans(n_clusters=k, n_init=10, random_state=s),
        f"MiniBatchKMeans (batch {batch})": lambda k, s: MiniBatchKMeans(
            n_clusters=k, batch_size=batch, random_state=s
        ),
    }
    result = {}
    for name, make in trainers.items():
        for k in ks:
            for seed in seeds:
                model = make(k, seed)
                start = time.perf_counter()
                model.fit(x)
                seconds = time.perf_counter() - start
                result.setdefault(name, {}).setdefault(str(k), []).append({
                    "seed": seed, "seconds": seconds,
                    "val": model.predict(val).tolist(), "test": model.predict(test).tolist(),
                })
    print("SKLEARN " + sklearn.__version__)
    print("RESULT " + json.dumps(result))
    """
)


def ensure_sklearn_venv() -> Path:
    python = SKLEARN_VENV / "bin" / "python"
    probe = [str(python), "-c", "import sklearn"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {SKLEARN_VENV} with {SKLEARN_REQUIREMENT} ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(SKLEARN_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", SKLEARN_REQUIREMENT], check=True)
    return python


def run_child(python: Path, code: str, work: Path) -> tuple[dict, str]:
    done = subprocess.run(
        [str(python), "-c", code, str(work), json.dumps(KS), json.dumps(list(SEEDS))]
        + [str(MINI_BATCH_SIZE)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={**os.environ, **ONE_THREAD, "PYTHONPATH": str(REPO)},
    )
    lines = done.stdout.splitlines()
    result = json.loads(next(ln for ln in lines if ln.startswith("RESULT ")).split(" ", 1)[1])
    version = next((ln.split(" ", 1)[1] for ln in lines if ln.startswith("SKLEARN ")), "")
    return result, version


def accuracy(val_clusters, test_clusters, y_val, y_test, k: int) -> float:
    """Each cluster named after its majority digit on validation, scored on test."""
    val_clusters, test_clusters = np.asarray(val_clusters), np.asarray(test_clusters)
    digit = np.full(k, -1)
    for cluster in range(k):
        labels = y_val[val_clusters == cluster]
        if len(labels):
            digit[cluster] = np.bincount(labels, minlength=10).argmax()
    return float((digit[test_clusters] == y_test).mean())


def main() -> int:
    sys.path.insert(0, str(REPO))
    from pipeline.steps.dataset import load_dataset

    splits = load_dataset(SAMPLE, source=str(SAMPLE)).splits
    y_val, y_test = splits["validation"].y, splits["test"].y
    sklearn_python = ensure_sklearn_venv()
    with tempfile.TemporaryDirectory(prefix="bench-kmeans-") as tmp:
        work = Path(tmp)
        for name, split in (("train", "train"), ("val", "validation"), ("test", "test")):
            np.save(work / f"{name}.npy", splits[split].x)
        local, _ = run_child(Path(sys.executable), LOCAL_CHILD, work)
        sklearn, version = run_child(sklearn_python, SKLEARN_CHILD, work)
    results = {**local, **sklearn}
    [local_name] = local

    rows, failures, summary = [], [], {}
    for k in KS:
        baseline = None
        for name, by_k in results.items():
            runs = by_k[str(k)]
            scores = [accuracy(r["val"], r["test"], y_val, y_test, k) for r in runs]
            seconds = statistics.median(r["seconds"] for r in runs)
            summary[(name, k)] = (statistics.mean(scores), min(scores), max(scores), seconds)
            if name == "KMeans (defaults)":
                baseline = summary[(name, k)]
        for name in results:
            mean, low, high, seconds = summary[(name, k)]
            rows.append(
                (
                    k,
                    name,
                    f"{mean:.3f}",
                    f"{low:.3f}-{high:.3f}",
                    f"{(mean - baseline[0]) * 100:+.1f}",
                    f"{seconds:.3f}",
                    f"{seconds / baseline[3]:.2f}x",
                )
            )
        best = max(summary[(name, k)][0] for name in sklearn)
        shortfall = (best - summary[(local_name, k)][0]) * 100
        if shortfall > MAX_SHORTFALL_POINTS:
            failures.append(f"k={k}: {shortfall:.1f} points short of scikit-learn's best")
        # the stand-in trains with seed 0: what a local run gets, every time
        seed0 = results[local_name][str(k)][0]
        rows.append(
            (
                k,
                "  local, seed 0 (every local run)",
                f"{accuracy(seed0['val'], seed0['test'], y_val, y_test, k):.3f}",
                "",
                "",
                "",
                "",
            )
        )
    rng = np.random.default_rng(0)
    noisy_val, noisy_test = rng.permutation(y_val), rng.permutation(y_test)
    noise = [
        accuracy(r["val"], r["test"], noisy_val, noisy_test, 32) for r in results[local_name]["32"]
    ]
    rows.append((32, "  local, labels shuffled (noise)", f"{np.mean(noise):.3f}", "", "", "", ""))

    header = ("k", "trainer", "accuracy", "min-max", "vs KMeans (pts)", "fit s", "time ratio")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    print(
        f"sample: {len(splits['train'].y)} train / {len(y_val)} validation / {len(y_test)} test; "
        f"seeds {SEEDS.start}-{SEEDS.stop - 1}; one thread each; scikit-learn {version}"
    )
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(f"OK: the local trainer is within {MAX_SHORTFALL_POINTS:g} points of scikit-learn")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
