"""Runs a compiled pipeline (the IR YAML start-run submits) with KFP's local subprocess runner."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kfp import components, local

from core.kfp import KFP_LOCAL_TO_BACKEND

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILED_TASK = re.compile(r"Inner task failed: (?P<chain>.+?)\.$")
# The last "SomethingError: message" line a step printed is the reason it failed.
_EXCEPTION_LINE = re.compile(r"^(?:[\w.]+\.)?(?P<type>\w*(?:Error|Exception|Failed)): (?P<msg>.+)$")


@dataclass(frozen=True)
class LocalRunResult:
    succeeded: bool
    outputs: dict = field(default_factory=dict)
    failed_task: str | None = None
    error: str | None = None
    logs: str = ""


class _Tee(io.TextIOBase):
    """Keeps what the steps print, and still shows it when `echo` is set."""

    def __init__(self, echo: bool) -> None:
        self._buffer = io.StringIO()
        self._echo = echo

    def write(self, text: str) -> int:
        self._buffer.write(text)
        if self._echo:
            sys.__stdout__.write(text)
        return len(text)

    def getvalue(self) -> str:
        return self._buffer.getvalue()


def as_current_backend(event: dict) -> dict:
    """The pipeline's final-state event as a current KFP backend's exit handler sends it.

    kfp.local hands the exit handler `SUCCEEDED` where backends from 2.14.0 on hand it
    `COMPLETE` (core.kfp): the local runner's output is translated here, where it leaves
    kfp.local, so the rest of the local stack meets what the cluster would send.
    """
    detail = event.get("detail")
    if not isinstance(detail, dict) or not isinstance(detail.get("state"), str):
        return event
    state = KFP_LOCAL_TO_BACKEND.get(detail["state"], detail["state"])
    return {**event, "detail": {**detail, "state": state}}


def last_error(logs: str) -> str | None:
    lines = (line.strip() for line in _ANSI.sub("", logs).splitlines())
    errors = [m for m in map(_EXCEPTION_LINE.match, lines) if m]
    return f"{errors[-1]['type']}: {errors[-1]['msg']}" if errors else None


@contextlib.contextmanager
def process_environment(values: dict[str, str]) -> Iterator[None]:
    """Sets environment variables for the steps' subprocesses (they inherit it), then restores."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_compiled_pipeline(
    spec_path: Path,
    arguments: dict,
    *,
    pipeline_root: Path,
    environment: dict[str, str],
    echo: bool = False,
) -> LocalRunResult:
    """Runs every step in a subprocess of this Python, with `environment` (e.g. the emulator's)."""
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        raise_on_error=True,
    )
    pipeline = components.load_component_from_file(str(spec_path))
    tee = _Tee(echo)
    with process_environment(environment), contextlib.redirect_stdout(tee):
        try:
            task = pipeline(**arguments)
        except RuntimeError as failure:
            message = _ANSI.sub("", str(failure))
            chain = _FAILED_TASK.search(message)
            failed_task = chain["chain"].split(" inside ")[0].strip("'") if chain else None
            return LocalRunResult(
                succeeded=False,
                failed_task=failed_task,
                error=last_error(tee.getvalue()) or message,
                logs=tee.getvalue(),
            )
    outputs = dict(task.outputs) if task.outputs else {}
    return LocalRunResult(succeeded=True, outputs=outputs, logs=tee.getvalue())


def main(argv: list[str] | None = None) -> int:
    """One run in a process of its own (the local KFP API starts these); writes a result file."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m mnistflow.local.pipeline_runner")
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--arguments", required=True, help="the run's parameters, as JSON")
    parser.add_argument("--pipeline-root", type=Path, required=True)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args(argv)
    result = run_compiled_pipeline(
        args.spec,
        json.loads(args.arguments),
        pipeline_root=args.pipeline_root,
        environment={},
        echo=True,
    )
    summary = {
        "succeeded": result.succeeded,
        "failed_task": result.failed_task,
        "error": result.error,
    }
    args.result.write_text(json.dumps(summary))
    return 0 if result.succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
