"""Executes the runs the local KFP API accepts: one at a time, each in a process of its own.

A run is `python -m mnistflow.local.pipeline_runner` on the submitted spec (KFP's local runner
keeps global state and prints to stdout, so each run gets a process of its own, which also
makes a clean stop possible). The run's state moves PENDING -> RUNNING -> SUCCEEDED | FAILED,
or CANCELED when the executor stops under it.
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
    STATE_CANCELED,
    STATE_FAILED,
    STATE_RUNNING,
    STATE_SUCCEEDED,
    timestamp,
)

RUN_STOP_TIMEOUT_SECONDS = 10.0


class LocalRunExecutor:
    def __init__(self, environment: dict[str, str], workdir: Path) -> None:
        """`environment`: what the steps need on top of this process's (the emulator's)."""
        self._environment = environment
        self._workdir = Path(workdir)
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._current: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._work, name="kfp-runner", daemon=True)
        self._thread.start()

    def submit(self, run: dict[str, Any]) -> None:
        self._queue.put(run)

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
        run.update(state=STATE_RUNNING, log_file=str(folder / "run.log"))
        with open(folder / "run.log", "w") as log:
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
                start_new_session=True,  # its own process group: stop() ends the steps too
            )
            code = self._current.wait()
        self._current = None
        if self._stopping.is_set():
            run.update(state=STATE_CANCELED, finished_at=timestamp())
            return
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        if code == 0 and result.get("succeeded"):
            run.update(state=STATE_SUCCEEDED, finished_at=timestamp())
            return
        message = result.get("error") or f"the local runner exited with code {code}"
        failed = result.get("failed_task")
        run.update(
            state=STATE_FAILED,
            finished_at=timestamp(),
            error={"code": 2, "message": f"{failed}: {message}" if failed else message},
        )

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(None)
        current = self._current
        if current is not None and current.poll() is None:
            os.killpg(current.pid, signal.SIGTERM)
            try:
                current.wait(RUN_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(current.pid, signal.SIGKILL)
                current.wait()
        self._thread.join(RUN_STOP_TIMEOUT_SECONDS)
