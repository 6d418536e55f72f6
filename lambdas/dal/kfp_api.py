"""KFP's v2beta1 REST API over plain HTTP(S), without the kfp SDK (cold start: see Speed).

Every failure becomes a KfpCallFailed that says whether trying again can help, and, for a
create, whether it may have happened anyway (`maybe_done`: the request was sent and its answer
was lost, was a 5xx, or was not a run). An answer that is not what the API gives (HTML from a
proxy or the UI, a JSON list, an object without its id) is UNEXPECTED, never a crash.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from core import kfp
from lambdas.logic.ports import KfpCallFailed, KfpExperiment, KfpHealth, KfpRun, KfpRunsApi

KFP_REQUEST_TIMEOUT_SECONDS = 10.0
KFP_PAGE_SIZE = 100
ERROR_TEXT_MAX_CHARS = 300
API_PREFIX = "/apis/v2beta1"


class BearerTokenSource(Protocol):
    def bearer_token(self) -> str: ...

    def invalidate(self) -> None: ...


def eks_proxy_base_url(cluster_endpoint: str, kfp_namespace: str, port_name: str) -> str:
    """The API server's service proxy to KFP's `ml-pipeline` service on the named port."""
    return cluster_endpoint.rstrip("/") + kfp.service_proxy_path(kfp_namespace, port_name)


def display_name_filter(display_name: str) -> str:
    """The `filter` query value for display_name EQUALS the given value.

    KFP's API server URL-decodes a filter twice (grpc-gateway decodes the query, then
    backend/src/apiserver/server/list_request_util.go parseAPIFilter runs url.QueryUnescape
    again), so the JSON is encoded once here, as KFP's UI does (encodeURIComponent), and once
    more with the rest of the query: a `+` or `%` in a name then reaches the filter as it is.
    """
    predicate = {"key": "display_name", "operation": "EQUALS", "string_value": display_name}
    return quote(json.dumps({"predicates": [predicate]}), safe="")


class KfpHttpApi(KfpRunsApi):
    def __init__(
        self,
        base_url: Callable[[], str],
        tokens: BearerTokenSource,
        ssl_context: Callable[[], ssl.SSLContext | None] = lambda: None,
        namespace: str = "",
        timeout_seconds: float = KFP_REQUEST_TIMEOUT_SECONDS,
    ):
        # base_url and ssl_context are callables: in cluster mode they need eks:DescribeCluster,
        # which runs at the first call, inside the retry loop, not at construction.
        self._base_url = base_url
        self._tokens = tokens
        self._ssl_context = ssl_context
        self._namespace = namespace
        self._timeout = timeout_seconds

    # -- the port -------------------------------------------------------------------------

    def health(self) -> KfpHealth:
        # backend/api/v2beta1/healthz.proto: GET /apis/v2beta1/healthz; main.go answers
        # commit_sha, tag_name, multi_user.
        body = self._call("GET", "/healthz")
        if "tag_name" not in body:
            raise KfpCallFailed(
                KfpCallFailed.UNEXPECTED,
                "GET /apis/v2beta1/healthz: an answer without tag_name: is the URL KFP's API?",
            )
        return KfpHealth(str(body["tag_name"]), bool(body.get("multi_user", False)))

    def find_experiments(self, display_name: str) -> list[KfpExperiment]:
        query = {"filter": display_name_filter(display_name), "page_size": KFP_PAGE_SIZE}
        if self._namespace:
            query["namespace"] = self._namespace
        body = self._call("GET", "/experiments", query=query)
        return [_experiment(e) for e in _listed(body, "experiments")]

    def create_experiment(self, display_name: str, description: str) -> KfpExperiment:
        payload: dict[str, Any] = {"display_name": display_name, "description": description}
        if self._namespace:
            payload["namespace"] = self._namespace
        return _experiment(self._call("POST", "/experiments", body=payload))

    def find_runs(self, experiment_id: str, display_name: str) -> list[KfpRun]:
        query: dict[str, Any] = {
            "experiment_id": experiment_id,
            "filter": display_name_filter(display_name),
            "page_size": KFP_PAGE_SIZE,
        }
        if self._namespace:
            query["namespace"] = self._namespace
        body = self._call("GET", "/runs", query=query)
        return [_run(r) for r in _listed(body, "runs")]

    def create_run(
        self,
        experiment_id: str,
        display_name: str,
        description: str,
        pipeline_spec: dict[str, Any],
        parameters: dict[str, Any],
        service_account: str = "",
    ) -> KfpRun:
        payload = {
            "display_name": display_name,
            "description": description,
            "experiment_id": experiment_id,
            "pipeline_spec": pipeline_spec,
            "runtime_config": {"parameters": parameters},
        }
        if service_account:
            payload["service_account"] = service_account  # run.proto Run.service_account
        return _run(self._call("POST", "/runs", body=payload))

    def get_run(self, run_id: str) -> KfpRun:
        return _run(self._call("GET", f"/runs/{run_id}"))

    # -- HTTP ----------------------------------------------------------------------------

    def _call(
        self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None
    ) -> dict[str, Any]:
        what = f"{method} {API_PREFIX}{path}"
        base = urlsplit(self._base_url())
        target = f"{base.path.rstrip('/')}{API_PREFIX}{path}"
        if query:
            target += "?" + urlencode(query)
        headers = {
            "Accept": "application/json",
            "Authorization": f"Bearer {self._tokens.bearer_token()}",
        }
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        creates = method == "POST"
        connection = self._connection(base)
        sent = False
        try:
            connection.connect()
            sent = True  # from here on, KFP may have acted on the request
            connection.request(method, target, body=data, headers=headers)
            response = connection.getresponse()
            status = response.status
            raw = response.read()
        except TimeoutError as error:
            raise KfpCallFailed(
                KfpCallFailed.TRANSIENT,
                f"{what}: no answer from the KFP API within {self._timeout:g} s",
                maybe_done=creates and sent,
            ) from error
        except ssl.SSLError as error:
            raise KfpCallFailed(
                KfpCallFailed.PERMANENT, f"{what}: TLS failure talking to the KFP API: {error}"
            ) from error
        except (http.client.HTTPException, OSError) as error:
            raise KfpCallFailed(
                KfpCallFailed.TRANSIENT,
                f"{what}: connection to the KFP API failed ({type(error).__name__}: {error})",
                maybe_done=creates and sent,
            ) from error
        finally:
            connection.close()
        if 200 <= status < 300:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise KfpCallFailed(
                    KfpCallFailed.UNEXPECTED,
                    f"{what}: HTTP {status} with a body that is not a JSON object"
                    f" ({_error_text(raw)[:80]}): is the URL KFP's API, not its UI or a proxy?",
                    status,
                    maybe_done=creates,
                )
            return body
        if status in (401, 403):
            self._tokens.invalidate()  # a stale or rotated token: the retry gets a fresh one
        text = _error_text(raw)
        if kfp.OLD_BACKEND_REJECTION in raw.decode("utf-8", "replace"):
            # Not transient: this backend refuses the pipeline's exit handler, every time.
            raise KfpCallFailed(
                KfpCallFailed.PERMANENT,
                f"{what}: HTTP {status}: this KFP backend is older than {kfp.MIN_BACKEND_VERSION}"
                f" and refuses the pipeline's exit handler ('{kfp.OLD_BACKEND_REJECTION}');"
                f" upgrade Kubeflow Pipelines to {kfp.MIN_BACKEND_VERSION} or later",
                status,
            )
        raise KfpCallFailed(
            _kind(status),
            f"{what}: HTTP {status} {text}",
            status,
            maybe_done=creates and status >= 500,
        )

    def _connection(self, base: Any) -> http.client.HTTPConnection:
        host = base.hostname or ""
        if base.scheme == "https":
            return http.client.HTTPSConnection(
                host, base.port, timeout=self._timeout, context=self._ssl_context()
            )
        return http.client.HTTPConnection(host, base.port, timeout=self._timeout)


def _kind(status: int) -> str:
    if status in (401, 403):
        return KfpCallFailed.AUTH
    if status == 404:
        return KfpCallFailed.NOT_FOUND
    if status in (408, 409, 429) or status >= 500:
        # 409: a concurrent create of the same experiment; the next try finds it.
        return KfpCallFailed.TRANSIENT
    return KfpCallFailed.PERMANENT


def _error_text(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        text = str(parsed.get("message") or parsed.get("error") or text)
    text = " ".join(text.split())
    return text[:ERROR_TEXT_MAX_CHARS] if text else "(empty body)"


def _listed(body: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """A list answer's items (KFP leaves the field out when there are none)."""
    items = body.get(field) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise KfpCallFailed(
            KfpCallFailed.UNEXPECTED, f"KFP API answered a list request without a list of {field}"
        )
    return items


def _experiment(body: dict[str, Any]) -> KfpExperiment:
    if not body.get("experiment_id"):
        raise KfpCallFailed(KfpCallFailed.UNEXPECTED, "KFP API answered without an experiment_id")
    return KfpExperiment(
        experiment_id=str(body["experiment_id"]),
        display_name=str(body.get("display_name", "")),
    )


def _run(body: dict[str, Any]) -> KfpRun:
    if not body.get("run_id"):
        # From a create, the run may still have been made: the caller looks before creating.
        raise KfpCallFailed(
            KfpCallFailed.UNEXPECTED, "KFP API answered without a run_id", maybe_done=True
        )
    return KfpRun(
        run_id=str(body["run_id"]),
        display_name=str(body.get("display_name", "")),
        experiment_id=str(body.get("experiment_id", "")),
        created_at=str(body.get("created_at", "")),
        state=kfp.runtime_state(body.get("state")),
    )
