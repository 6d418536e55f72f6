"""A local KFP API on 127.0.0.1: the v2beta1 calls start-run makes, runs executed by kfp.local.

Experiments and runs live in memory. A created run is queued and executed, one at a time, by
`python -m mnistflow.local.pipeline_runner` in its own process (KFP's local runner keeps global
state and prints to stdout, so each run gets a process of its own, which also makes a clean
stop possible).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from mnistflow.local.emulator import LOOPBACK, EmulatorError

API_PREFIX = "/apis/v2beta1"
RUN_STOP_TIMEOUT_SECONDS = 10.0
STATE_PENDING, STATE_RUNNING = "PENDING", "RUNNING"
STATE_SUCCEEDED, STATE_FAILED, STATE_CANCELED = "SUCCEEDED", "FAILED", "CANCELED"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _matches(item: dict, raw_filter: str | None) -> bool:
    """KFP's Filter, as far as start-run uses it: EQUALS predicates on string fields."""
    if not raw_filter:
        return True
    for predicate in json.loads(raw_filter).get("predicates", []):
        if predicate.get("operation") != "EQUALS":
            raise ValueError(f"filter operation {predicate.get('operation')!r} is not supported")
        if item.get(predicate["key"]) != predicate.get("string_value"):
            return False
    return True


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LocalKfpApi:
    """Serves the API and executes runs; use as a context manager. `url` is its base URL."""

    def __init__(self, environment: dict[str, str], workdir: Path, port: int = 0) -> None:
        self._environment = environment
        self._workdir = Path(workdir)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._current: subprocess.Popen | None = None
        self._stopping = threading.Event()
        try:
            self._server = ThreadingHTTPServer((LOOPBACK, port), _handler_for(self))
        except OSError as error:
            raise EmulatorError(f"cannot listen on {LOOPBACK}:{port}: {error.strerror}") from None
        self._server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="kfp-api", daemon=True),
            threading.Thread(target=self._execute_runs, name="kfp-runner", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- the API ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        if method == "GET" and path == "/experiments":
            found = [e for e in self.experiments.values() if _matches(e, query.get("filter"))]
            return {"experiments": found, "total_size": len(found)}
        if method == "POST" and path == "/experiments":
            return self._create_experiment(body)
        if method == "GET" and path == "/runs":
            found = [
                _public(r)
                for r in self.runs.values()
                if r["experiment_id"] == query.get("experiment_id", r["experiment_id"])
                and _matches(r, query.get("filter"))
            ]
            return {"runs": found, "total_size": len(found)}
        if method == "POST" and path == "/runs":
            return _public(self._create_run(body))
        if method == "GET" and path.startswith("/runs/"):
            run = self.runs.get(path.removeprefix("/runs/"))
            if run is None:
                raise ApiError(404, f"run {path.removeprefix('/runs/')} not found")
            return _public(run)
        raise ApiError(404, f"{method} {API_PREFIX}{path} is not served by the local KFP API")

    def _create_experiment(self, body: dict) -> dict:
        name = (body or {}).get("display_name")
        if not name:
            raise ApiError(400, "an experiment needs a display_name")
        with self._lock:
            if any(e["display_name"] == name for e in self.experiments.values()):
                raise ApiError(409, f"experiment {name!r} already exists")
            experiment = {
                "experiment_id": f"local-experiment-{next(self._ids)}",
                "display_name": name,
                "description": body.get("description", ""),
                "created_at": _now(),
                "storage_state": "AVAILABLE",
            }
            self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _create_run(self, body: dict) -> dict:
        body = body or {}
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(400, f"experiment {body.get('experiment_id')!r} does not exist")
        if not isinstance(body.get("pipeline_spec"), dict):
            raise ApiError(400, "a run needs an inline pipeline_spec")
        with self._lock:
            run = {
                "run_id": f"local-run-{next(self._ids)}",
                "display_name": body.get("display_name", ""),
                "experiment_id": body["experiment_id"],
                "runtime_config": body.get("runtime_config", {}),
                "state": STATE_PENDING,
                "created_at": _now(),
                "pipeline_spec": body["pipeline_spec"],
            }
            self.runs[run["run_id"]] = run
        self._queue.put(run["run_id"])
        return run

    # -- executing runs --------------------------------------------------------------------

    def _execute_runs(self) -> None:
        while (run_id := self._queue.get()) is not None:
            if not self._stopping.is_set():
                self._execute(self.runs[run_id])

    def _execute(self, run: dict) -> None:
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
            run.update(state=STATE_CANCELED, finished_at=_now())
            return
        result = json.loads(result_path.read_text()) if result_path.exists() else {}
        if code == 0 and result.get("succeeded"):
            run.update(state=STATE_SUCCEEDED, finished_at=_now())
        else:
            message = result.get("error") or f"the local runner exited with code {code}"
            failed = result.get("failed_task")
            run.update(
                state=STATE_FAILED,
                finished_at=_now(),
                error={"code": 2, "message": f"{failed}: {message}" if failed else message},
            )

    # -- lifecycle -------------------------------------------------------------------------

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
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(RUN_STOP_TIMEOUT_SECONDS)

    def __enter__(self) -> LocalKfpApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _public(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("pipeline_spec", "log_file")}


def _handler_for(api: LocalKfpApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
            pass

        def _serve(self, method: str) -> None:
            url = urlsplit(self.path)
            if not self.headers.get("Authorization", "").startswith("Bearer "):
                return self._send(401, {"error": "a bearer token is required", "code": 16})
            if not url.path.startswith(API_PREFIX):
                return self._send(404, {"error": f"{url.path} is not under {API_PREFIX}"})
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            try:
                body = json.loads(self.rfile.read(length)) if length else None
                answer = api.handle(method, url.path.removeprefix(API_PREFIX), query, body)
            except ApiError as error:
                return self._send(error.status, {"error": str(error), "message": str(error)})
            except ValueError as error:
                return self._send(400, {"error": str(error), "message": str(error)})
            return self._send(200, answer)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
