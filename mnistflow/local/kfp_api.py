"""A local KFP v2beta1 API on 127.0.0.1: the calls start-run makes (and the SDK's basics), with
runs handed to an executor (the local stack's runs them with kfp.local).

The one KFP emulator of the product: the local stack serves it, and the tests use it too. It can
be served under a path prefix (the EKS API server's service-proxy path) and over TLS, check the
bearer token, and record every request. Its fault hooks are off unless a test turns them on:
a status code per call, delays, dropped connections, hangs, an answer lost after the work was
done, a run committed only after the client gave up, and malformed bodies.

Facts about the real server it follows (kubeflow/pipelines, backend/api/v2beta1/*.proto and
the API server at 2.17.0): JSON field names are snake_case; a filter's predicate operation may
be given by name or number (protojson); an error body is {"code", "message", "details"}.
"""

from __future__ import annotations

import itertools
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote_plus, urlsplit

from core import kfp
from mnistflow.local.emulator import LOOPBACK, EmulatorError

API_PREFIX = "/apis/v2beta1"
STATE_PENDING, STATE_RUNNING = "PENDING", "RUNNING"
STATE_SUCCEEDED, STATE_FAILED, STATE_CANCELED = "SUCCEEDED", "FAILED", "CANCELED"
# filter.proto's Predicate.Operation: the SDK sends the number, the UI the name.
OPERATION_EQUALS = ("EQUALS", kfp.PREDICATE_OPERATIONS["EQUALS"])
# google.rpc.Code values the API server answers with.
GRPC_NOT_FOUND, GRPC_ALREADY_EXISTS, GRPC_INVALID_ARGUMENT, GRPC_UNAUTHENTICATED = 5, 6, 3, 16
_HTTP_TO_GRPC = {400: GRPC_INVALID_ARGUMENT, 401: GRPC_UNAUTHENTICATED, 404: GRPC_NOT_FOUND,
                 409: GRPC_ALREADY_EXISTS, 500: 13, 503: 14}  # fmt: skip


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_body(status: int, message: str, *, old_gateway: bool = False) -> dict[str, Any]:
    """google.rpc.Status as grpc-gateway v2 writes it (backend >= 2.14.0); gateway v1.16 (up to
    2.5.0) also repeats the message under "error" (runtime/errors.go DefaultHTTPError)."""
    body = {"code": _HTTP_TO_GRPC.get(status, 2), "message": message, "details": []}
    return {"error": message, **body} if old_gateway else body


_URL_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_filter(raw_filter: str) -> dict:
    """The `filter` query value as KFP's API server reads it: already decoded once with the
    query, then URL-unescaped again (list_request_util.go parseAPIFilter, Go's
    url.QueryUnescape: `+` becomes a space, a `%` not followed by two hex digits is an error)."""
    if _URL_ESCAPE.search(raw_filter):
        raise ApiError(400, f"failed to parse valid filter from {raw_filter!r}: invalid URL escape")
    try:
        return json.loads(unquote_plus(raw_filter))
    except ValueError as error:
        raise ApiError(400, f"failed to parse valid filter from {raw_filter!r}: {error}") from None


def _matches(item: dict, raw_filter: str | None) -> bool:
    """KFP's Filter, as far as the product and the SDK use it: EQUALS on string fields."""
    if not raw_filter:
        return True
    for predicate in parse_filter(raw_filter).get("predicates", []):
        if predicate.get("operation") not in OPERATION_EQUALS:
            raise ApiError(400, f"filter operation {predicate.get('operation')!r} is not supported")
        value = predicate.get("string_value", predicate.get("stringValue"))
        if item.get(predicate["key"]) != value:
            return False
    return True


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the prefix
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any


@dataclass
class Fault:
    """One fault to inject, `times` times, on calls matching `method` and `path` (a prefix).

    action: "status" (answer `status` without doing the work), "delay" (wait `seconds`, then
    serve), "drop" (close the connection without doing the work), "hang" (never answer),
    "lose_response" (do the work, then close without answering), "commit_late" (wait
    `seconds`, then do the work and answer a client that has most likely given up), "body"
    (answer 200 with `body` as it is, without doing the work).
    """

    action: str
    times: int = 1
    method: str | None = None
    path: str | None = None
    status: int = 500
    seconds: float = 0.0
    body: bytes = b""

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path is None or path.startswith(self.path)
        )


class RunExecutor(Protocol):
    def submit(self, run: dict[str, Any]) -> None: ...

    def stop(self) -> None: ...


class LocalKfpApi:
    """Use as a context manager; `url` is the base URL a client should be given."""

    def __init__(
        self,
        *,
        executor: RunExecutor | None = None,
        prefix: str = "",
        ssl_context: ssl.SSLContext | None = None,
        accept_token: str | Callable[[str], bool] | None = None,
        backend_version: str = kfp.MIN_BACKEND_VERSION,
        port: int = 0,
    ) -> None:
        """`executor` runs created runs (None: they stay PENDING). `accept_token`: None takes any
        request (standalone KFP ignores Authorization); a string, that bearer token only; a
        callable, the tokens it accepts. `backend_version`: a version older than
        core.kfp.MIN_BACKEND_VERSION answers as those backends do, refusing at creation any run
        whose exit handler reads the final status."""
        self.prefix = prefix.rstrip("/")
        self.backend_version = backend_version
        self.requests: list[RecordedRequest] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self._executor = executor
        self._accept_token = accept_token
        self._ssl_context = ssl_context
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        try:
            server = ThreadingHTTPServer((LOOPBACK, port), _handler_for(self))
        except OSError as error:
            raise EmulatorError(f"cannot listen on {LOOPBACK}:{port}: {error.strerror}") from None
        server.daemon_threads = True
        if ssl_context is not None:
            server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="kfp-api", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """scheme://host:port, without the prefix (what eks:DescribeCluster would report)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{LOOPBACK}:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{self.endpoint}{self.prefix}"

    # -- faults and queries, for tests -----------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def runs_named(self, display_name: str) -> list[dict[str, Any]]:
        return [r for r in self.runs.values() if r["display_name"] == display_name]

    # -- the API ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        if not path.startswith(API_PREFIX):
            raise ApiError(404, f"{path} is not under {API_PREFIX}")
        path = path.removeprefix(API_PREFIX)
        if method == "GET" and path == "/healthz":
            return {"commit_sha": "local", "tag_name": "local", "multi_user": False}
        if method == "GET" and path == "/experiments":
            found = [e for e in self.experiments.values() if _matches(e, query.get("filter"))]
            if "namespace" in query:
                found = [e for e in found if e.get("namespace", "") == query["namespace"]]
            return {"experiments": found, "total_size": len(found)} if found else {}
        if method == "POST" and path == "/experiments":
            return self._create_experiment(body or {})
        if method == "GET" and path == "/runs":
            found = [
                _public(r)
                for r in self.runs.values()
                if r["experiment_id"] == query.get("experiment_id", r["experiment_id"])
                and _matches(r, query.get("filter"))
            ]
            return {"runs": found, "total_size": len(found)} if found else {}
        if method == "POST" and path == "/runs":
            return _public(self._create_run(body or {}))
        if method == "GET" and path.startswith("/runs/"):
            run = self.runs.get(path.removeprefix("/runs/"))
            if run is None:
                raise ApiError(404, f"run {path.removeprefix('/runs/')} not found")
            return _public(run)
        raise ApiError(404, f"{method} {API_PREFIX}{path} is not served by the local KFP API")

    def _create_experiment(self, body: dict) -> dict:
        name = body.get("display_name")
        if not name:
            raise ApiError(400, "an experiment needs a display_name")
        namespace = body.get("namespace", "")
        with self._lock:
            if any(
                e["display_name"] == name and e.get("namespace", "") == namespace
                for e in self.experiments.values()
            ):
                raise ApiError(409, f"experiment {name!r} already exists")
            experiment = {
                "experiment_id": f"local-experiment-{next(self._ids)}",
                "display_name": name,
                "description": body.get("description", ""),
                "namespace": namespace,
                "created_at": timestamp(),
                "storage_state": "AVAILABLE",
            }
            self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _create_run(self, body: dict) -> dict:
        if body.get("experiment_id") not in self.experiments:
            raise ApiError(404, f"experiment {body.get('experiment_id')!r} not found")
        if not isinstance(body.get("pipeline_spec"), dict):
            raise ApiError(400, "a run needs an inline pipeline_spec")
        if self.is_old_backend and _reads_task_final_status(body["pipeline_spec"]):
            # backend/src/v2/compiler/argocompiler/dag.go at 2.0.0 to 2.5.0, wrapped on its
            # way up and returned as gRPC Internal (backend/src/common/util/error.go).
            raise ApiError(
                500,
                "Internal error: Failed to create a new run: Failed to generate the"
                ' ExecutionSpec: Failed to compile job: compiling DAG "root": failed to add'
                f" implicit deps: {kfp.OLD_BACKEND_REJECTION}",
            )
        with self._lock:
            run = {
                "run_id": f"local-run-{next(self._ids)}",
                "display_name": body.get("display_name", ""),
                "description": body.get("description", ""),
                "experiment_id": body["experiment_id"],
                "runtime_config": body.get("runtime_config") or {},
                "service_account": body.get("service_account", ""),
                "state": STATE_PENDING,
                "created_at": timestamp(),
                "storage_state": "AVAILABLE",
                "pipeline_spec": body["pipeline_spec"],
            }
            self.runs[run["run_id"]] = run
        if self._executor is not None:
            self._executor.submit(run)
        return run

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return error_body(status, message, old_gateway=self.is_old_backend)

    @property
    def is_old_backend(self) -> bool:
        def parts(version: str) -> tuple[int, ...]:
            return tuple(int(p) for p in version.split("."))

        return parts(self.backend_version) < parts(kfp.MIN_BACKEND_VERSION)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()  # releases hanging and late handlers
        if self._executor is not None:
            self._executor.stop()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LocalKfpApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reads_task_final_status(spec: dict) -> bool:
    """True when a task of the spec takes a `taskFinalStatus` input (an exit handler's)."""
    pipeline = spec.get("pipeline_spec", spec)
    components = [pipeline.get("root", {}), *pipeline.get("components", {}).values()]
    for component in components:
        for task in component.get("dag", {}).get("tasks", {}).values():
            for value in task.get("inputs", {}).get("parameters", {}).values():
                if "taskFinalStatus" in value:
                    return True
    return False


def _public(run: dict) -> dict:
    return {k: v for k, v in run.items() if k not in ("pipeline_spec", "log_file")}


def _handler_for(api: LocalKfpApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib's name)
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            if api.prefix:
                if not path.startswith(api.prefix + "/"):
                    return self._send(404, api.error_body(404, f"not under {api.prefix}"))
                path = path[len(api.prefix) :]
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return self._send(400, api.error_body(400, "the request body is not JSON"))
            with api._lock:
                api.requests.append(RecordedRequest(self.command, path, query, headers, body))
            fault = api._take_fault(self.command, path)
            if fault is not None and fault.action in ("hang", "drop", "status", "body", "delay"):
                if fault.action == "hang":
                    api._stopping.wait()
                    self.close_connection = True
                    return None
                if fault.action == "drop":
                    self.close_connection = True
                    return None
                if fault.action == "status":
                    return self._send(
                        fault.status, api.error_body(fault.status, "injected failure")
                    )
                if fault.action == "body":
                    return self._send_raw(200, fault.body)
                api._stopping.wait(fault.seconds)  # delay, then serve as usual
            if fault is not None and fault.action == "commit_late":
                api._stopping.wait(fault.seconds)
            if not self._authorized(headers):
                return self._send(401, api.error_body(401, "Unauthorized"))
            try:
                status, payload = 200, api.handle(self.command, path, query, body)
            except ApiError as error:
                status, payload = error.status, api.error_body(error.status, str(error))
            if fault is not None and fault.action == "lose_response":
                self.close_connection = True
                return None
            return self._send(status, payload)

        def _authorized(self, headers: dict[str, str]) -> bool:
            accept = api._accept_token
            if accept is None:
                return True
            auth = headers.get("authorization", "")
            if not auth.startswith("Bearer "):
                return False
            token = auth[len("Bearer ") :]
            return bool(accept(token)) if callable(accept) else token == accept

        def _send(self, status: int, payload: Any) -> None:
            self._send_raw(status, json.dumps(payload).encode())

        def _send_raw(self, status: int, data: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                self.close_connection = True  # the client gave up (a late commit)

        do_GET = _serve
        do_POST = _serve

    return Handler
