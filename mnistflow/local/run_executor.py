"""Executes the runs the local KFP API accepts: one at a time, each in a process of its own.

A run is `python -m mnistflow.local.pipeline_runner` on the submitted spec (KFP's local runner
keeps global state and prints to stdout, so each run gets a process of its own, which also
makes a clean stop possible). Its state moves as the API server reports a workflow's
(mnistflow/local/kfp_api.py `transition`): PENDING -> RUNNING -> SUCCEEDED | FAILED. A run
terminated through the API, or running when the executor stops, has its process group sent
SIGTERM (the steps stop their SageMaker jobs), then SIGKILL after RUN_STOP_TIMEOUT_SECONDS, and
ends CANCELING -> FAILED, as a terminated Argo workflow does; one terminated before it started
never starts.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

from mnistflow.local.kfp_api import (
    FAILED,
    PENDING,
    RUNNING,
    RUNS_LOCK,
    SUCCEEDED,
    finish_terminated,
    transition,
)

RUN_STOP_TIMEOUT_SECONDS = 10.0


class LocalRunExecutor:
    def __init__(self, environment: dict[str, str], workdir: Path) -> None:
        """`environment`: what the steps need on top of this process's (the emulator's)."""
        self._environment = environment
        self._workdir = Path(workdir)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        # Under RUNS_LOCK, the API's lock: the run now executing, its process, and whether it
        # was told to stop.
        self._current: subprocess.Popen | None = None
        self._current_run: dict[str, Any] | None = None
        self._signalled = False
        self._started: set[str] = set()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="kfp-runner", daemon=True)
        self._thread.start()

    def submit(self, run: dict[str, Any]) -> None:
        self._queue.put(run)

    def terminate(self, run: dict[str, Any]) -> None:
        """The API set the run CANCELING: stop its process, or end it now if it never started."""
        with RUNS_LOCK:
            if self._current_run is run:
                self._stop_current()
            elif run["run_id"] not in self._started:
                finish_terminated(run)  # its workflow never started; the queue skips it

    def _stop_current(self) -> None:
        """SIGTERM to the run's process group now, SIGKILL if it is still there after the
        timeout (called with RUNS_LOCK held)."""
        process = self._current
        if process is None or process.poll() is not None:
            return
        self._signalled = True
        _signal_group(process, signal.SIGTERM)
        timer = threading.Timer(RUN_STOP_TIMEOUT_SECONDS, _kill_if_alive, (process,))
        timer.daemon = True
        timer.start()

    def _work(self) -> None:
        while (run := self._queue.get()) is not None:
            if not self._stopping.is_set():
                self._execute(run)

    def _execute(self, run: dict[str, Any]) -> None:
        folder = Path(tempfile.mkdtemp(prefix=f"{run['run_id']}-", dir=self._workdir))
        spec_path = folder / "pipeline.yaml"
        spec = run["pipeline_spec"]
        documents = [spec["pipeline_spec"], spec["platform_spec"]] if "root" not in spec else [spec]
        spec_path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
        result_path = folder / "result.json"
        arguments = run["runtime_config"].get("parameters", {})
        with open(folder / "run.log", "w") as log, RUNS_LOCK:
            if run["state"] != PENDING:
                return  # terminated (and ended) while it waited
            self._started.add(run["run_id"])
            run["log_file"] = str(folder / "run.log")
            transition(run, RUNNING)
            self._current_run, self._signalled = run, False
            self._current = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mnistflow.local.pipeline_runner",
                    "--spec",
                    str(spec_path),
                    "--arguments",
                    json.dumps(arguments),
                    "--pipeline-root",
                    str(folder / "pipeline-root"),
                    "--result",
                    str(result_path),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self._environment},
                start_new_session=True,  # its own process group: a stop ends the steps too
            )
            process = self._current
        code = process.wait()
        with RUNS_LOCK:
            signalled = self._signalled
            self._current = self._current_run = None
            if signalled:
                finish_terminated(run)
                return
            result = json.loads(result_path.read_text()) if result_path.exists() else {}
            if code == 0 and result.get("succeeded"):
                transition(run, SUCCEEDED)
                return
            # The server keeps no reason on a failed run (run.proto's `error` is for reading
            # errors); the emulator keeps it for whoever looks at its runs.
            message = result.get("error") or f"the local runner exited with code {code}"
            failed = result.get("failed_task")
            run["failure"] = f"{failed}: {message}" if failed else message
            transition(run, FAILED)

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        with RUNS_LOCK:
            process = self._current
            self._stop_current()
        if process is not None:
            try:
                process.wait(RUN_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()
        self._thread.join(RUN_STOP_TIMEOUT_SECONDS)


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass  # it ended meanwhile


def _kill_if_alive(process: subprocess.Popen) -> None:
    if process.poll() is None:
        _signal_group(process, signal.SIGKILL)
