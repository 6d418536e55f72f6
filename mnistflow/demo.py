"""`demo`: the whole flow on this machine, from the upload to the endpoint's email.

Starts the local stack, uploads the dataset under incoming/, shows the run's progress as the
handlers record it, then prints the run record, the emails that would have gone out, and the
command that calls the endpoint.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from core.contracts import (
    KIND_DATA_REJECTED,
    KIND_ENDPOINT_READY,
    KIND_MODEL_REJECTED,
    KIND_RUN_FAILED,
    STEPS,
    run_key,
)
from core.run_record import RunRecord
from mnistflow.local.emulator import EmulatorError
from mnistflow.local.provision import Email
from mnistflow.local.stack import BUCKET_VARIABLE, KFP_TOKEN_VARIABLE, LocalStack
from mnistflow.status import describe_run

DEMO_TIMEOUT_SECONDS = 300
# One demo at a time per lock file; MNISTFLOW_DEMO_LOCK names another (the tests use their own).
LOCK_FILE_VARIABLE = "MNISTFLOW_DEMO_LOCK"
DEFAULT_LOCK_FILE = Path(tempfile.gettempdir()) / "mnistflow-demo.lock"
_FINAL_KINDS = (KIND_ENDPOINT_READY, KIND_RUN_FAILED, KIND_DATA_REJECTED, KIND_MODEL_REJECTED)
DEMO_PREDICTIONS = 5  # test digits sent to the endpoint once it is announced
# The functions' logs (Powertools' JSON lines, EMF metrics, library warnings) of the last demo
# are kept after it ends, beside its lock file (one per user), and named in its output.
FUNCTION_LOG_SUFFIX = ".functions.log"


def _lock_path() -> Path:
    return Path(os.environ.get(LOCK_FILE_VARIABLE) or DEFAULT_LOCK_FILE)


def _log_path() -> Path:
    lock = _lock_path()
    return lock.with_name(f"{lock.name.removesuffix('.lock')}-{os.getuid()}{FUNCTION_LOG_SUFFIX}")


class DemoError(Exception):
    """Why the demo could not run at all (exit code 2)."""


@dataclass
class DemoOutcome:
    run_key: str
    record: RunRecord | None
    emails: list[Email]
    seconds: float
    timed_out: bool

    @property
    def announced(self) -> bool:
        return any(e.kind == KIND_ENDPOINT_READY for e in self.emails)

    @property
    def reason(self) -> str:
        for email in self.emails:
            if email.kind in (KIND_RUN_FAILED, KIND_DATA_REJECTED):
                # The whole reason (the subject cuts it to stay under 100 characters).
                reasons = [
                    line.partition(":")[2].strip()
                    for line in email.message.splitlines()
                    if line.startswith("Reason:")
                ]
                return reasons[0] if reasons else email.subject
            if email.kind == KIND_MODEL_REJECTED:
                return email.subject.partition(": ")[2] or email.subject
        if self.timed_out:
            return f"no announcement within {DEMO_TIMEOUT_SECONDS} s"
        return "the run ended without an announcement"


class DemoLock:
    """One demo at a time on a machine: a second one says who holds the lock."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path or _lock_path()
        self._file = None

    def __enter__(self) -> DemoLock:
        self._file = open(self._path, "a+")  # noqa: SIM115 (held until __exit__)
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise DemoError(
                f"another demo is running (pid {holder}); wait for it or stop it"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(str(os.getpid()))
        self._file.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._file, fcntl.LOCK_UN)
        self._file.close()


class ProgressView:
    """One updating line in a terminal; a plain line per change otherwise."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._tty = out.isatty()
        self._last = ""
        self._started = time.monotonic()

    def show(self, record: RunRecord | None) -> None:
        if record is None:
            text = "waiting for start-run"
        else:
            steps = record.steps()
            parts = [f"{s}={steps[s][0].lower()}" for s in STEPS if s in steps]
            text = f"{record.overall_status.lower()} {' '.join(parts)}".strip()
        if text == self._last:
            return
        self._last = text
        elapsed = time.monotonic() - self._started
        if self._tty:
            self._out.write(f"\r\033[K[{elapsed:5.1f} s] {text}")
        else:
            self._out.write(f"[{elapsed:5.1f} s] {text}\n")
        self._out.flush()

    def close(self) -> None:
        if self._tty and self._last:
            self._out.write("\n")


def _finished(stack: LocalStack, key: str, emails: list[Email]) -> bool:
    emails.extend(stack.inbox())
    return any(e.run_key == key and e.kind in _FINAL_KINDS for e in emails)


def run_demo(
    data: Path, *, port: int = 0, out: TextIO = sys.stdout, keep_running: bool = False
) -> DemoOutcome:
    """Raises DemoError when it cannot start; otherwise returns what happened."""
    if data.is_dir():
        raise DemoError(f"{data}: is a directory; --data takes one .pkl.gz or .npz file")
    if not data.is_file():
        raise DemoError(f"{data}: no such file")
    if not os.access(data, os.R_OK):
        raise DemoError(f"{data}: not readable")
    with DemoLock(), tempfile.TemporaryDirectory(prefix="mnistflow-demo-") as work:
        try:
            stack = LocalStack(Path(work), port=port, log_path=_log_path())
        except EmulatorError as error:
            raise DemoError(str(error)) from None
        except PermissionError as error:
            raise DemoError(f"cannot write the functions' log: {error}") from None
        with stack:
            print(
                f"Local stack up: AWS emulator {stack.emulator.endpoint_url}, "
                f"KFP API {stack.kfp.url}",
                file=out,
            )
            started = time.monotonic()
            key, version = stack.upload(data)
            bucket = stack.names.data_bucket
            this_run = run_key(bucket, key, version)
            print(f"Uploaded s3://{bucket}/{key} -> run {this_run}", file=out, flush=True)
            emails: list[Email] = []
            view = ProgressView(out)
            done = stack.run_until(
                lambda: _finished(stack, this_run, emails),
                DEMO_TIMEOUT_SECONDS,
                on_round=lambda: view.show(stack.runs.get(this_run)),
            )
            view.close()
            outcome = DemoOutcome(
                this_run, stack.runs.get(this_run), emails, time.monotonic() - started, not done
            )
            _report(outcome, stack, out)
            if keep_running:
                _serve_until_interrupted(stack, out)
    return outcome


def _report(outcome: DemoOutcome, stack: LocalStack, out: TextIO) -> None:
    print(f"\nFinished in {outcome.seconds:.1f} s.\n", file=out)
    if outcome.record:
        print(describe_run(outcome.record, billed=False), file=out)  # the local stack
    for email in outcome.emails:
        print(
            f"\n--- email ({email.kind}) ---\nSubject: {email.subject}\n\n{email.message}", file=out
        )
    endpoints = outcome.record.endpoint_names() if outcome.record else []
    if outcome.announced and endpoints:
        _predict_some(stack, endpoints[0], out)
    failed = [i for i in stack.invocations if i.error]
    for call in failed:
        print(f"\n{call.function} raised: {call.error}", file=out)
    print(f"\nThe functions' logs (as CloudWatch would hold them): {stack.log_path}", file=out)


def _predict_some(stack: LocalStack, endpoint: str, out: TextIO) -> None:
    """The workshop's last step, through the local endpoint: five test digits, read back."""
    from mnistflow.predict import (
        PredictError,
        describe_predictions,
        digit_mapping,
        predict,
        sample_images,
    )

    client = stack.emulator.client
    print(f"\nFive test digits sent to {endpoint}:", file=out)
    try:
        images, labels = sample_images(DEMO_PREDICTIONS)
        mapping = digit_mapping(client("sagemaker"), client("s3"), endpoint)
        answers = predict(
            client("sagemaker"), client("sagemaker-runtime"), endpoint, images, labels, mapping
        )
    except PredictError as error:
        print(f"  predict: {error}", file=out)
        return
    print(describe_predictions(answers), file=out)
    print(
        f"\nOn AWS, the same call (from this repository):\n  ./dev predict --endpoint {endpoint}"
        f" --sample {DEMO_PREDICTIONS}",
        file=out,
    )


def _serve_until_interrupted(stack: LocalStack, out: TextIO) -> None:
    connection = stack.connection()
    exports = " ".join(f"{name}={shlex.quote(value)}" for name, value in connection.items())
    print(
        "\nThe local stack keeps running; Ctrl-C stops it.\n"
        f"  KFP API:  {stack.kfp.url}  (bearer token {connection[KFP_TOKEN_VARIABLE]})\n"
        f"  AWS:      {stack.emulator.endpoint_url}  (every service, SageMaker included;"
        f" credentials {connection['AWS_ACCESS_KEY_ID']}/{connection['AWS_SECRET_ACCESS_KEY']})\n"
        f"  bucket:   {connection[BUCKET_VARIABLE]}\n"
        "In another shell (or before starting a notebook), from the repository:\n"
        f"  export {exports}\n"
        "  ./dev status\n"
        'and in Python, the README\'s five lines ("Notebooks and the KFP SDK").',
        file=out,
        flush=True,
    )
    while True:
        stack.pump()
        time.sleep(1)
