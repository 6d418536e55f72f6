"""A small KFP v2beta1 REST server on 127.0.0.1 that records requests and fails on demand.

Implements what the start-run Lambda uses: experiments list/create, runs list (display_name
filter), runs create/get. Optionally served under a path prefix (the EKS service proxy path)
and over TLS.
"""

from __future__ import annotations

import itertools
import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"


@dataclass
class RecordedRequest:
    method: str
    path: str  # without the prefix
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any


@dataclass
class _Fault:
    action: str  # "status", "drop", "hang", "lose_create_response"
    times: int
    status: int = 500
    method: str | None = None
    path_prefix: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_prefix is None or path.startswith(self.path_prefix)
        )


@dataclass
class FakeKfpState:
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeKfpServer:
    """Use as a context manager; `url` is the base URL the Lambda should be given."""

    def __init__(
        self,
        prefix: str = "",
        ssl_context: ssl.SSLContext | None = None,
        accept_token: Any = None,
    ):
        self.prefix = prefix.rstrip("/")
        self.requests: list[RecordedRequest] = []
        self.state = FakeKfpState()
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._ssl_context = ssl_context
        # None: any Authorization accepted; str: exact bearer token; callable: predicate.
        self._accept_token = accept_token
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> FakeKfpServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        server.daemon_threads = False
        server.block_on_close = True  # server_close() joins the request threads
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-kfp", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # releases hanging handlers
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}{self.prefix}"

    @property
    def endpoint(self) -> str:
        """The base URL without the prefix (what eks:DescribeCluster would report)."""
        return self.url[: len(self.url) - len(self.prefix)] if self.prefix else self.url

    # -- programming failures ------------------------------------------------------------

    def fail(self, status: int, times: int = 1, method: str | None = None, path: str | None = None):
        self._add(_Fault("status", times, status, method, path))

    def drop_connection(self, times: int = 1, method: str | None = None, path: str | None = None):
        self._add(_Fault("drop", times, method=method, path_prefix=path))

    def hang(self, times: int = 1, method: str | None = None, path: str | None = None):
        """Never answer (until the client gives up or the server stops)."""
        self._add(_Fault("hang", times, method=method, path_prefix=path))

    def lose_create_run_response(self, times: int = 1):
        """Create the run, then drop the connection before answering."""
        self._add(_Fault("lose_create_response", times, method="POST", path_prefix=f"{API}/runs"))

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and fault.matches(method, path):
                    fault.times -= 1
                    return fault
        return None

    # -- queries for tests ---------------------------------------------------------------

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def runs_named(self, display_name: str) -> list[dict[str, Any]]:
        return [r for r in self.state.runs.values() if r["display_name"] == display_name]

    # -- the API -------------------------------------------------------------------------

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self._accept_token is None:
            return True
        auth = headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return False
        token = auth[len("Bearer ") :]
        if callable(self._accept_token):
            return bool(self._accept_token(token))
        return token == self._accept_token

    def _respond(self, method: str, path: str, query: dict[str, str], body: Any):
        with self._lock:
            if method == "GET" and path == f"{API}/experiments":
                found = _filtered(self.state.experiments.values(), query.get("filter"))
                if "namespace" in query:
                    found = [e for e in found if e.get("namespace") == query["namespace"]]
                return 200, {"experiments": found, "total_size": len(found)} if found else {}
            if method == "POST" and path == f"{API}/experiments":
                name = (body or {}).get("display_name", "")
                if any(e["display_name"] == name for e in self.state.experiments.values()):
                    return 409, {"code": 6, "message": f"experiment {name} already exists"}
                experiment = {
                    "experiment_id": f"exp-{next(self._ids)}",
                    "display_name": name,
                    "description": body.get("description", ""),
                    "namespace": body.get("namespace", ""),
                    "created_at": _now(),
                    "storage_state": "AVAILABLE",
                }
                self.state.experiments[experiment["experiment_id"]] = experiment
                return 200, experiment
            if method == "GET" and path == f"{API}/runs":
                runs = _filtered(self.state.runs.values(), query.get("filter"))
                if query.get("experiment_id"):
                    runs = [r for r in runs if r["experiment_id"] == query["experiment_id"]]
                return 200, {"runs": runs, "total_size": len(runs)} if runs else {}
            if method == "POST" and path == f"{API}/runs":
                experiment_id = (body or {}).get("experiment_id", "")
                if experiment_id not in self.state.experiments:
                    return 404, {"code": 5, "message": f"experiment {experiment_id} not found"}
                run = {
                    "run_id": f"run-{next(self._ids)}",
                    "experiment_id": experiment_id,
                    "display_name": body.get("display_name", ""),
                    "description": body.get("description", ""),
                    "pipeline_spec": body.get("pipeline_spec"),
                    "runtime_config": body.get("runtime_config"),
                    "created_at": _now(),
                    "state": "PENDING",
                    "storage_state": "AVAILABLE",
                }
                self.state.runs[run["run_id"]] = run
                return 200, run
            if method == "GET" and path.startswith(f"{API}/runs/"):
                run = self.state.runs.get(path.rsplit("/", 1)[1])
                return (200, run) if run else (404, {"code": 5, "message": "run not found"})
        return 404, {"code": 5, "message": f"no route {method} {path}"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _filtered(items: Any, raw_filter: str | None) -> list[dict[str, Any]]:
    items = list(items)
    if not raw_filter:
        return items
    for predicate in json.loads(raw_filter).get("predicates", []):
        operation = predicate.get("operation")
        if operation not in ("EQUALS", 1):
            raise ValueError(f"fake KFP supports EQUALS only, got {operation!r}")
        value = predicate.get("string_value", predicate.get("stringValue"))
        items = [item for item in items if item.get(predicate["key"]) == value]
    return items


def _handler_for(fake: FakeKfpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
            return

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            path = parts.path
            if fake.prefix:
                if not path.startswith(fake.prefix + "/"):
                    self._send(404, {"message": f"not under {fake.prefix}"})
                    return
                path = path[len(fake.prefix) :]
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            headers = {k.lower(): v for k, v in self.headers.items()}
            with fake._lock:
                fake.requests.append(RecordedRequest(self.command, path, query, headers, body))
            fault = fake._take_fault(self.command, path)
            if fault is not None and fault.action == "hang":
                fake._stopping.wait()
                self.close_connection = True
                return
            if fault is not None and fault.action == "drop":
                self.close_connection = True
                return
            if fault is not None and fault.action == "status":
                self._send(fault.status, {"code": 16, "message": f"injected HTTP {fault.status}"})
                return
            if not fake._authorized(headers):
                self._send(401, {"code": 16, "message": "Unauthorized"})
                return
            status, payload = fake._respond(self.command, path, query, body)
            if fault is not None and fault.action == "lose_create_response":
                self.close_connection = True
                return
            self._send(status, payload)

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

    return Handler
