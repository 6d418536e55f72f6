"""The user's commands: `demo` (the whole flow on this machine) and `compile`."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

SAMPLE_DATASET = Path(__file__).parent / "data" / "mnist-sample.pkl.gz"
DEFAULT_SPEC_PATH = Path("build") / "mnist_pipeline.yaml"


def _demo(args: argparse.Namespace) -> int:
    from mnistflow.local.emulator import AwsEmulator, EmulatorError
    from mnistflow.local.run_once import run_dataset
    from mnistflow.report import describe_local_run

    data: Path = args.data
    if not data.is_file():
        print(f"demo: {data}: no such file", file=sys.stderr)
        return 2
    try:
        emulator = AwsEmulator(port=args.port)
    except EmulatorError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    with emulator, tempfile.TemporaryDirectory(prefix="mnistflow-demo-") as work:
        print(f"AWS emulator on {emulator.endpoint_url}; uploading {data.name} ...", flush=True)
        run = run_dataset(emulator, data, Path(work), echo=args.verbose)
        print(describe_local_run(run))
    return 0 if run.result.succeeded else 1


def _compile(args: argparse.Namespace) -> int:
    from pipeline.compile import compile_pipeline

    print(compile_pipeline(args.output))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnistflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="run the pipeline once on this machine (AWS emulator + KFP local runner)",
        description="Upload a dataset to an emulated bucket, run the compiled pipeline on it "
        "with KFP's local runner, and show what it created.",
    )
    demo.add_argument("--data", type=Path, default=SAMPLE_DATASET, help="a .pkl.gz or .npz")
    demo.add_argument("--port", type=int, default=0, help="emulator port (default: a free one)")
    demo.add_argument("--verbose", action="store_true", help="show the steps' own output")
    demo.set_defaults(func=_demo)

    comp = commands.add_parser("compile", help="write the pipeline's IR YAML")
    comp.add_argument("--output", type=Path, default=DEFAULT_SPEC_PATH)
    comp.set_defaults(func=_compile)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
