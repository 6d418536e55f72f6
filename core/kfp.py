"""Kubeflow Pipelines' vocabulary as the product meets it: one table that the KFP adapter, the
final-state parser, the exit handler and the local KFP API all read.

Sources (kubeflow/pipelines, read at tag 2.17.0 unless said otherwise):
- backend/src/v2/driver/resolve.go: the exit handler's `PipelineTaskFinalStatus.state` is the MLMD
  execution state of the exit-handler DAG (third_party/ml-metadata/.../metadata_store.proto:
  NEW, RUNNING, COMPLETE, FAILED, CACHED, CANCELED), from backend 2.14.0 on (commit 0d857b6f);
  samples/v2/pipeline_with_input_status_state.py asserts 'COMPLETE'.
- sdk/python/kfp/local/orchestrator/orchestrator_utils.py (kfp 2.17): kfp.local says 'SUCCEEDED'
  or 'FAILED'; sdk/python/kfp/dsl/task_final_status.py and api/v2alpha1/pipeline_spec.proto
  (Vertex's contract) say 'SUCCEEDED', 'FAILED' or 'CANCELLED'.
- backend/src/v2/compiler/argocompiler/dag.go at 2.0.0 to 2.5.0: run creation fails with
  "task final status not supported yet" (gRPC Internal, HTTP 500) for any pipeline with an exit
  handler that reads the final status; 2.14.0 is the first release without it.
- backend/api/v2beta1/run.proto: RuntimeState; filter.proto: Predicate.Operation; a terminated
  run's states: storage/run_store.go TerminateRun and resource/resource_manager.go.
- manifests/kustomize/base/pipeline/ml-pipeline-apiserver-service.yaml: service `ml-pipeline`,
  port `http` 8888; env/cert-manager/platform-agnostic-standalone-tls renames it `tls` (HTTPS).
"""

from __future__ import annotations

MIN_BACKEND_VERSION = "2.14.0"
# What a backend older than MIN_BACKEND_VERSION answers when the run is created.
OLD_BACKEND_REJECTION = "task final status not supported yet"

# The exit handler's final state, as each KFP flavour spells it -> what it means.
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
CANCELED = "CANCELED"
FINAL_STATES = {
    "COMPLETE": SUCCEEDED,  # backend >= 2.14.0 (MLMD)
    "SUCCEEDED": SUCCEEDED,  # kfp.local, Vertex
    "FAILED": FAILED,
    "CANCELED": CANCELED,  # MLMD
    "CANCELLED": CANCELED,  # Vertex
}
# What a current backend spells as COMPLETE, kfp.local spells SUCCEEDED.
KFP_LOCAL_TO_BACKEND = {"SUCCEEDED": "COMPLETE"}


def final_state(state: str) -> str | None:
    """SUCCEEDED, FAILED or CANCELED for a final state KFP reports; None when it is unknown."""
    return FINAL_STATES.get(state.strip().upper())


# v2beta1 RuntimeState (run.proto), by number.
RUNTIME_STATES = (
    "RUNTIME_STATE_UNSPECIFIED",
    "PENDING",
    "RUNNING",
    "SUCCEEDED",
    "SKIPPED",
    "FAILED",
    "CANCELING",
    "CANCELED",
    "PAUSED",
)
FINISHED_RUNTIME_STATES = ("SUCCEEDED", "SKIPPED", "FAILED", "CANCELED")
# backend/src/apiserver/storage/run_store.go TerminateRun: the states a run can be terminated
# from. It is then CANCELING, and FAILED once Argo has stopped its workflow (the phase Argo gives
# it; resource/resource_manager.go ReportWorkflowResource): the backend does not make CANCELED.
TERMINABLE_RUNTIME_STATES = ("PAUSED", "PENDING", "RUNNING", "RUNTIME_STATE_UNSPECIFIED")
# sdk/python/kfp/client/client.py (kfp 2.17) wait_for_run_completion returns on these states,
# lower-cased, only: a run left CANCELING or CANCELED is waited for until the timeout.
SDK_WAIT_FINISH_STATES = ("succeeded", "failed", "skipped", "error")

# filter.proto's Predicate.Operation: name -> number (there is no 4).
PREDICATE_OPERATIONS = {
    "OPERATION_UNSPECIFIED": 0,
    "EQUALS": 1,
    "NOT_EQUALS": 2,
    "GREATER_THAN": 3,
    "GREATER_THAN_EQUALS": 5,
    "LESS_THAN": 6,
    "LESS_THAN_EQUALS": 7,
    "IN": 8,
    "IS_SUBSTRING": 9,
}

API_SERVICE = "ml-pipeline"
DEFAULT_HTTP_PORT_NAME = "http"


def service_proxy_name(port_name: str) -> str:
    """The API server's service-proxy name for KFP's API: `ml-pipeline:http`, or with the TLS
    overlay's port, `https:ml-pipeline:tls` (the scheme makes the API server use TLS)."""
    if port_name == DEFAULT_HTTP_PORT_NAME:
        return f"{API_SERVICE}:{port_name}"
    return f"https:{API_SERVICE}:{port_name}"


def service_proxy_path(namespace: str, port_name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/services/{service_proxy_name(port_name)}/proxy"


def run_url(ui_base_url: str, run_id: str) -> str:
    """The run's page in KFP's UI (frontend/src/components/Router.tsx: `/runs/details/:rid`,
    under the hash router), or "" when the UI's address or the run is not known."""
    if not ui_base_url or not run_id:
        return ""
    return f"{ui_base_url}/#/runs/details/{run_id}"


def runtime_state(value: object) -> str:
    """A run's `state` as its name, whether the API spelled the enum by name or by number."""
    if isinstance(value, int) and 0 <= value < len(RUNTIME_STATES):
        return RUNTIME_STATES[value]
    return str(value or "")
