"""Cold start of the start-run Lambda versus a kfp.Client version of the same job.

Measures, side by side: the time to import the handler module in a fresh interpreter (median
of several runs, with the Lambda's environment set) and the unzipped size of each package built
the way the asset builder builds it (pip --platform manylinux2014_x86_64 --only-binary=:all:
--target; boto3/botocore excluded, as the runtime provides them).

    .venv/bin/python benchmarks/bench_cold_start.py [--runs 9] [--skip-size]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = REPO / "lambdas"
# What the Lambda asset ships (stacks.lambda_asset.PACKAGES; not imported: it loads the CDK).
PACKAGES = ("core", "lambdas")
BENCH = REPO / "benchmarks"
TARGET_IMPORT_RATIO = 0.40
TARGET_PACKAGE_BYTES = 10 * 1024 * 1024
PIP_PLATFORM_ARGS = [
    "--platform",
    "manylinux2014_x86_64",
    "--only-binary=:all:",
    "--python-version",
    "3.12",
    "--implementation",
    "cp",
]
KFP_CLIENT_ROOT_DISTRIBUTION = "kfp"
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer"}

VARIANTS = {
    "start-run (this Lambda)": "import lambdas.handlers.start_run",
    "kfp.Client version": "import kfp_client_handler",
    "start-run + Powertools Tracer": (
        "import lambdas.handlers.start_run\nfrom aws_lambda_powertools import Tracer\nTracer()"
    ),
    "boto3 alone": "import boto3",
}


def lambda_environment(spec_path: Path) -> dict[str, str]:
    """start-run's environment as the stack sets it (cluster mode), from the settings schema."""
    from core import contracts
    from core.settings import environment, read_context

    settings = read_context({"eks_cluster_name": "mnist-cluster"})
    values = {
        **settings,
        "runs_table_name": "mnistflow-runs",
        "notification_topic_arn": "arn:aws:sns:eu-west-1:123456789012:mnistflow-notifications",
        "data_bucket_name": "mnistflow-data-123456789012",
        "kfp_token_secret_arn": "",
        "pipeline_spec_path": str(spec_path),
        "sagemaker_role_arn": "arn:aws:iam::123456789012:role/mnistflow-sagemaker",
        "event_bus_name": contracts.PIPELINE_EVENT_BUS,
    }
    return {
        **os.environ,
        **environment(contracts.START_RUN, values),
        "PYTHONDONTWRITEBYTECODE": "",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        # the kfp.Client version reads these
        "KFP_URL": "https://kfp.example.com",
        "KFP_EXPERIMENT_NAME": "mnist-uploads",
    }


def import_seconds(statement: str, env: dict[str, str], runs: int) -> list[float]:
    """Import time measured inside a fresh interpreter each run (bytecode cache warm)."""
    code = (
        "import time\n_t = time.perf_counter()\n" + statement + "\nprint(time.perf_counter() - _t)"
    )
    # Run from this folder, so `import kfp_client_handler` finds the comparison module.
    subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=BENCH, check=True, capture_output=True
    )
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            cwd=BENCH,
            check=True,
            capture_output=True,
            text=True,
        )
        samples.append(float(done.stdout.strip().splitlines()[-1]))
    return samples


def tree_bytes(root: Path, with_pycache: bool) -> int:
    total = 0
    for path in root.rglob("*"):
        if path.is_file() and (with_pycache or "__pycache__" not in path.parts):
            total += path.stat().st_size
    return total


def build(target: Path, requirement_args: list[str], extra_sources: list[Path]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *PIP_PLATFORM_ARGS,
            "--target",
            str(target),
            *requirement_args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    for source in extra_sources:
        destination = target / source.name
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination)
    # boto3/botocore come with the runtime; drop them if a dependency pulled them in.
    for name in ("boto3", "botocore", "s3transfer"):
        for path in target.glob(f"{name}*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


def installed_closure_bytes(root: str, with_pycache: bool) -> tuple[int, list[str]]:
    """Size of a distribution and everything it requires, as installed in this venv.

    kfp is published as an sdist only, so pip --platform --only-binary=:all: cannot build the
    kfp.Client package; its installed files here (CPython 3.11, manylinux) stand in for it.
    """
    from importlib import metadata

    from packaging.requirements import Requirement

    seen: set[str] = set()
    pending = [root]
    total = 0
    while pending:
        name = pending.pop().lower().replace("_", "-")
        if name in seen or name in RUNTIME_PROVIDED:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            if not with_pycache and "__pycache__" in file.parts:
                continue
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return total, sorted(seen)


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:.2f} MiB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--skip-size", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        scratch_path = Path(scratch)
        spec = scratch_path / "pipeline.yaml"
        spec.write_text("pipelineInfo: {name: mnist}\nroot: {}\n")
        env = lambda_environment(spec)

        print(f"Import time of the handler module, fresh interpreter, median of {args.runs}:")
        medians = {}
        for label, statement in VARIANTS.items():
            samples = import_seconds(statement, env, args.runs)
            medians[label] = statistics.median(samples)
            print(
                f"  {label:30s} {medians[label]:.3f} s  (min {min(samples):.3f}, "
                f"max {max(samples):.3f})"
            )
        ratio = medians["start-run (this Lambda)"] / medians["kfp.Client version"]
        print(
            f"  ratio start-run / kfp.Client      {ratio:.0%}  (target <= "
            f"{TARGET_IMPORT_RATIO:.0%}: {'met' if ratio <= TARGET_IMPORT_RATIO else 'MISSED'})"
        )
        tracer_ratio = medians["start-run + Powertools Tracer"] / medians["kfp.Client version"]
        print(f"  ratio with Powertools Tracer    {tracer_ratio:.0%}")

        if args.skip_size:
            return 0
        print("Unzipped package size (pip --platform manylinux2014_x86_64, no boto3):")
        ours = scratch_path / "start-run-package"
        build(ours, ["-r", str(LAMBDAS / "requirements.txt")], [REPO / p for p in PACKAGES])
        sizes = {"start-run (this Lambda)": (tree_bytes(ours, False), tree_bytes(ours, True))}
        kfp_sources, closure = installed_closure_bytes(KFP_CLIENT_ROOT_DISTRIBUTION, False)
        kfp_all, _ = installed_closure_bytes(KFP_CLIENT_ROOT_DISTRIBUTION, True)
        sizes["kfp.Client version"] = (kfp_sources, kfp_all)
        print(
            f"  (kfp.Client package = installed kfp + {len(closure) - 1} dependencies, "
            "without boto3; kfp has no wheel for pip --platform)"
        )
        for label in sizes:
            print(
                f"  {label:30s} {mib(sizes[label][0])} sources; "
                f"{mib(sizes[label][1])} with pip's __pycache__"
            )
        size = sizes["start-run (this Lambda)"][0]
        print(
            f"  ratio start-run / kfp.Client      "
            f"{size / sizes['kfp.Client version'][0]:.0%}  (target < "
            f"{mib(TARGET_PACKAGE_BYTES)}: {'met' if size < TARGET_PACKAGE_BYTES else 'MISSED'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
