"""Benchmark: each step's time with the baked step image against the pip-at-start steps before it.

Before pipeline/image existed, every step was compiled with `packages_to_install` (boto3, numpy)
and KFP's own install of kfp, so each step ran `pip install` when it started. Now the image has
them and the compiled steps install nothing. Measured side by side, in one run:

- the sample through the whole compiled pipeline under KFP's local runner (the local stack's
  runner, against the emulator), compiled both ways, per step (from the runner's own log);
- what a step on a cluster paid before: the same pip install into a fresh, empty virtualenv (as
  in a fresh python:3.11-slim container), with pip's download cache warm; a baked image pays
  nothing at start.

Run: .venv/bin/python benchmarks/bench_step_image.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "mnistflow" / "data" / "mnist-sample.pkl.gz"
# What every step installed at start before (pipeline/components.py at commit 67c917b):
# packages_to_install, plus kfp itself (install_kfp_package defaulted to True).
BEFORE_PACKAGES = ["kfp==2.17.3", "boto3==1.43.11", "numpy==2.4.6"]

VARIANTS = {"pip at step start (before)": True, "baked image (now)": False}

_RUN_ONE = """
import json, sys, tempfile, time
from pathlib import Path
sys.path.insert(0, {benchmarks!r})
from bench_demo import step_seconds
import pipeline.components as components
if {with_pip!r}:
    from kfp import dsl
    def _component(func):
        return dsl.component(
            func,
            base_image=components.BASE_IMAGE,
            packages_to_install={packages!r},
            embedded_artifact_path=components.embedded_runtime_dir(),
        )
    components._component = _component
from mnistflow.local.emulator import AwsEmulator
from tests.integration.pipeline_harness import run_dataset
with AwsEmulator() as emulator, tempfile.TemporaryDirectory() as work:
    started = time.perf_counter()
    run = run_dataset(emulator, Path({sample!r}), Path(work))
    total = time.perf_counter() - started
    assert run.result.succeeded, run.result.error
    log = Path(work) / "steps.log"
    log.write_text(run.result.logs)
    print(json.dumps({{"total": total, "steps": step_seconds(log)}}))
"""


def run_pipeline(with_pip: bool) -> dict:
    script = _RUN_ONE.format(
        benchmarks=str(REPO / "benchmarks"),
        with_pip=with_pip,
        packages=BEFORE_PACKAGES[1:],
        sample=str(SAMPLE),
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def fresh_container_install() -> float:
    """Seconds to pip install the step packages into an empty virtualenv (warm pip cache)."""
    with tempfile.TemporaryDirectory() as folder:
        venv.create(folder, with_pip=True)
        started = time.perf_counter()
        subprocess.run(
            [f"{folder}/bin/python", "-m", "pip", "install", "--quiet",
             "--disable-pip-version-check", *BEFORE_PACKAGES],
            stderr=subprocess.DEVNULL,
            check=True,
        )  # fmt: skip
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-fresh", action="store_true", help="skip the fresh-venv install")
    args = parser.parse_args()

    results: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):  # interleaved, so drift hits both alike
        for name, with_pip in VARIANTS.items():
            results[name].append(run_pipeline(with_pip))

    before, now = (results[name] for name in VARIANTS)
    steps = sorted(before[0]["steps"])
    print(f"median of {args.repeat} runs of the sample through the compiled pipeline (kfp.local)")
    print(f"{'step':24} {'before s':>9} {'now s':>7} {'now/before':>11}")
    for step in steps:
        b = statistics.median(r["steps"][step] for r in before)
        n = statistics.median(r["steps"][step] for r in now)
        print(f"{step:24} {b:9.2f} {n:7.2f} {n / b:11.2f}")
    b_total = statistics.median(r["total"] for r in before)
    n_total = statistics.median(r["total"] for r in now)
    b_steps = statistics.median(sum(r["steps"].values()) for r in before)
    n_steps = statistics.median(sum(r["steps"].values()) for r in now)
    print(f"{'all steps':24} {b_steps:9.2f} {n_steps:7.2f} {n_steps / b_steps:11.2f}")
    print(f"{'pipeline, end to end':24} {b_total:9.2f} {n_total:7.2f} {n_total / b_total:11.2f}")

    if not args.skip_fresh:
        fresh = statistics.median(fresh_container_install() for _ in range(args.repeat))
        print(
            f"\nper step on a cluster before: pip install of {' '.join(BEFORE_PACKAGES)} into an"
            f" empty venv, warm pip cache: {fresh:.1f} s (median of {args.repeat}); baked: 0 s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
