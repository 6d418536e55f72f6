"""A local KFP v2beta1 API on 127.0.0.1 that answers as KFP's API server does: the calls start-run
makes and every call `kfp.Client` makes for health, experiments and runs. Runs are handed to an
executor (the local stack's runs them with kfp.local).

The one KFP emulator of the product: the local stack serves it, and the tests use it too
(tests/conformance drives it with the real kfp.Client). It can be served under a path prefix (the
EKS API server's service-proxy path) and over TLS, check the bearer token, and record every
request. Its fault hooks are off unless a test turns them on: a status code per call, delays,
dropped connections, hangs, an answer lost after the work was done, a run committed only after
the client gave up, and malformed bodies.

What it follows, from kubeflow/pipelines at tag 2.17.0 (the v2beta1 protos are the same from
2.14.0 on, but for run.proto's plugins fields); each function names its own source:
- Routes: backend/api/v2beta1/{healthz,experiment,run}.proto `google.api.http` options; healthz
  is served outside the gateway, to any method, without auth (backend/src/apiserver/main.go
  buildHTTPRouter).
- JSON: snake_case field names, enums by name, timestamps in RFC 3339, zero values left out
  (common/utils.go CustomMarshaler: UseProtoNames, EmitUnpopulated false); a request may spell a
  field either way, and a field the message does not have is refused (DiscardUnknown false).
- Errors: google.rpc.Status, {"code", "message", "details": [google.rpc.Status]}, the message the
  server's internal chain of wraps and the detail its user message (common/util/error.go
  UserError.GRPCStatus); HTTP status from the code (grpc-gateway runtime/errors.go); a backend
  older than 2.14.0 (gateway v1.16) also repeats the message under "error".
- Filters, sorting and paging: server/list_request_util.go, list/list.go, filter/filter.go,
  model/{run,experiment}.go (below, at `compile_filter` and `LocalKfpApi._list`).
- Single-user mode (standalone KFP) unless `multi_user`: the namespace parameter is replaced by
  "" everywhere (resource/resource_manager.go ReplaceNamespace).
- Runs: created PENDING with one state_history entry, then as the persistence agent reports them;
  a terminated run is CANCELING, then FAILED, which is what Argo's phase becomes
  (storage/run_store.go TerminateRun, resource_manager.go ReportWorkflowResource); runtime
  parameters are checked against the spec's root inputDefinitions at creation
  (template/v2_template.go validatePipelineJobInputs).

Where it is not the server, on purpose: ids are `local-experiment-N` / `local-run-N`, not UUIDs,
and timestamps have microseconds (the server's have seconds): ties in created_at order by id on
the server. There is no Default experiment until a run is created without an experiment (the
server makes it at start-up). String comparisons in filters ignore case, as MySQL's default
collation does (the server's stock database, mysql:8.4), but not accents. A spec without a
`schemaVersion` (the hand-written ones of the adapter's tests) is taken as it is; a compiled spec
has its schema version and runtime parameters checked (not the rest of the server's compile). It
cannot filter on state_history or runtime_details, nor sort by a metric, and answers 400 saying
so. A failed run says why in its `failure` key here, not in the API (nor does the server's run).
An experiment without a name is refused with 400 (the server
says 500, toModelExperiment's InternalServerError): tests/integration/test_fakes_contract.py pins
400. Identity (multi-user's kubeflow-userid header, token review) is not checked: `accept_token`
stands for whatever guards the API. Calls it does not serve answer 501 and say so.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import re
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote_plus, urlsplit

from core import kfp
from mnistflow.local.emulator import LOOPBACK, EmulatorError

API_PREFIX = "/apis/v2beta1"
HEALTHZ_PATHS = (f"{API_PREFIX}/healthz", "/apis/v1beta1/healthz")

# run.proto RuntimeState (core.kfp.RUNTIME_STATES has them by number).
(UNSPECIFIED, PENDING, RUNNING, SUCCEEDED, SKIPPED, FAILED, CANCELING, CANCELED, PAUSED) = (
    kfp.RUNTIME_STATES
)
# model/run.go RuntimeState.ToV1: the v1 `Conditions` column, which the `status` filter key reads.
V1_CONDITIONS = {
    UNSPECIFIED: "Unknown",
    PENDING: "Pending",
    PAUSED: "Pending",
    RUNNING: "Running",
    SUCCEEDED: "Succeeded",
    SKIPPED: "Skipped",
    FAILED: "Failed",
    CANCELED: "Failed",
    CANCELING: "Terminating",
}
AVAILABLE, ARCHIVED = "AVAILABLE", "ARCHIVED"  # run.proto / experiment.proto StorageState
EPOCH = "1970-01-01T00:00:00Z"  # timestamppb.New(time.Unix(0, 0)): an unfinished run's finished_at
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 20, 200  # server/list_request_util.go
DEFAULT_SERVICE_ACCOUNT = "pipeline-runner"  # apiserver/common/const.go
# resource/resource_manager.go CreateDefaultExperiment
DEFAULT_EXPERIMENT_NAME = "Default"
DEFAULT_EXPERIMENT_DESCRIPTION = (
    "All runs created without specifying an experiment will be grouped here."
)
SCHEMA_VERSION = "2.1.0"  # template/v2_template.go SCHEMA_VERSION_2_1_0
LITERALS_SINCE = "2.16.0"  # first tag whose validatePipelineJobInputs checks literals
STATUS_TYPE = "type.googleapis.com/google.rpc.Status"
SHUTDOWN_POLL_SECONDS = 0.05

# google.rpc.Code
(OK, CANCELLED, UNKNOWN, INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, ALREADY_EXISTS,
 PERMISSION_DENIED, RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNIMPLEMENTED,
 INTERNAL, UNAVAILABLE, DATA_LOSS, UNAUTHENTICATED) = range(17)  # fmt: skip
# grpc-gateway v2 runtime/errors.go HTTPStatusFromCode.
HTTP_STATUS = {CANCELLED: 499, UNKNOWN: 500, INVALID_ARGUMENT: 400, DEADLINE_EXCEEDED: 504,
               NOT_FOUND: 404, ALREADY_EXISTS: 409, PERMISSION_DENIED: 403, RESOURCE_EXHAUSTED: 429,
               FAILED_PRECONDITION: 400, ABORTED: 409, OUT_OF_RANGE: 400, UNIMPLEMENTED: 501,
               INTERNAL: 500, UNAVAILABLE: 503, DATA_LOSS: 500, UNAUTHENTICATED: 401}  # fmt: skip
# An HTTP status a test asks for -> the code a server answering it would have put in the body.
_HTTP_TO_GRPC = {400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED,
                 404: NOT_FOUND, 409: ALREADY_EXISTS, 429: RESOURCE_EXHAUSTED, 500: INTERNAL,
                 501: UNIMPLEMENTED, 503: UNAVAILABLE, 504: DEADLINE_EXCEEDED}  # fmt: skip

# One lock for every run and experiment dict: the API's, and the executor's (RUNS_LOCK) too.
_LOCK = RUNS_LOCK = threading.RLock()


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _seconds(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339).timestamp())


def _go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote), near enough for messages."""
    return json.dumps(text, ensure_ascii=False)


def _go_value(value: Any) -> str:
    """Go's %v of a filter value: 5, text, [a b]."""
    if isinstance(value, tuple | list):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    return str(value)


def _version(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# -- errors -----------------------------------------------------------------------------------


class ApiError(Exception):
    """A google.rpc.Status as the API server answers it.

    From a KFP util.UserError (backend/src/common/util/error.go): `message` is the internal chain
    of wraps (GRPCStatus puts it in the status), `external` the user message, which it adds as
    the one detail. The gateway's own errors (a body that does not parse, a route it does not
    know) have no detail (`external` None).
    """

    def __init__(
        self, code: int, message: str, external: str | None = None, detail_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.external = code, message, external
        self.detail_code = code if detail_code is None else detail_code

    @property
    def status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    def wrap(self, context: str) -> ApiError:
        """util.Wrap / Wrapf: pkg/errors' "context: cause"; the code and user message stay."""
        return ApiError(self.code, f"{context}: {self.message}", self.external, self.detail_code)

    def body(self, *, old_gateway: bool = False) -> dict[str, Any]:
        """grpc-gateway v2 marshals the status with KFP's marshaler, which leaves out an empty
        details list; v1.16 (backends up to 2.5.0) adds "error" (runtime/errors.go)."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.external is not None:
            body["details"] = [
                {"@type": STATUS_TYPE, "code": self.detail_code, "message": self.external}
            ]
        return {"error": self.message, **body} if old_gateway else body


def invalid_input(message: str) -> ApiError:
    """util.NewInvalidInputError."""
    return ApiError(INVALID_ARGUMENT, f"Invalid input error: {message}", message)


def invalid_input_with_details(cause: str, message: str) -> ApiError:
    """util.NewInvalidInputErrorWithDetails."""
    return ApiError(INVALID_ARGUMENT, f"InvalidInputError: {message}: {cause}", message)


def resource_not_found(resource: str, name: str) -> ApiError:
    """util.NewResourceNotFoundError."""
    message = f"{resource} {name} not found"
    return ApiError(NOT_FOUND, f"ResourceNotFoundError: {message}", message)


def already_exists(message: str) -> ApiError:
    """util.NewAlreadyExistError."""
    return ApiError(ALREADY_EXISTS, f"Already exist error: {message}", message)


def internal(cause: ApiError | str, message: str) -> ApiError:
    """util.NewInternalServerError: whatever the cause, Internal and "Internal Server Error"."""
    text = cause.message if isinstance(cause, ApiError) else cause
    return ApiError(INTERNAL, f"InternalServerError: {message}: {text}", "Internal Server Error")


def failed_precondition(cause: str, message: str) -> ApiError:
    """util.NewFailedPreconditionError."""
    return ApiError(FAILED_PRECONDITION, f"FailedPreconditionError: {message}: {cause}", message)


def unknown_api_version(what: str, value: str) -> ApiError:
    """util.NewUnknownApiVersionError ("Error using %s with %T")."""
    message = f"Error using {what} with {value}"
    return ApiError(INVALID_ARGUMENT, f"UnknownApiVersionError: {message}", message)


def not_supported_here(message: str) -> ApiError:
    """Something the server does that this emulator does not: the server's kind of 400."""
    return invalid_input(f"the local KFP API {message}")


def error_body(status: int, message: str, *, old_gateway: bool = False) -> dict[str, Any]:
    """The body of an error answered by HTTP status (injected faults, the token check)."""
    return ApiError(_HTTP_TO_GRPC.get(status, UNKNOWN), message).body(old_gateway=old_gateway)


# -- filters ----------------------------------------------------------------------------------

_URL_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def parse_filter(raw_filter: str) -> Any:
    """The `filter` query value as KFP's API server reads it: already decoded once with the
    query, then URL-unescaped again (list_request_util.go parseAPIFilter, Go's
    url.QueryUnescape: `+` becomes a space, a `%` not followed by two hex digits is an error),
    then JSON."""
    bad = _URL_ESCAPE.search(raw_filter)
    if bad:
        escape = raw_filter[bad.start() : bad.start() + 3]
        raise _bad_filter(raw_filter, f"invalid URL escape {_go_quote(escape)}")
    try:
        return json.loads(unquote_plus(raw_filter))
    except ValueError as error:
        raise _bad_filter(raw_filter, f"proto: syntax error: {error}") from None


def _bad_filter(raw_filter: str, reason: str) -> ApiError:
    return invalid_input(f"failed to parse valid filter from {_go_quote(raw_filter)}: {reason}")


# filter.proto Predicate.value: proto name -> JSON name, and the Go type filter.go's toValue gives.
_VALUE_FIELDS = {
    "int_value": ("intValue", "int32"),
    "long_value": ("longValue", "int64"),
    "string_value": ("stringValue", "string"),
    "timestamp_value": ("timestampValue", "int64"),  # Unix seconds
    "int_values": ("intValues", "[]int32"),
    "long_values": ("longValues", "[]int64"),
    "string_values": ("stringValues", "[]string"),
}
_OPERATION_NAMES = {number: name for name, number in kfp.PREDICATE_OPERATIONS.items()}
_SCALAR_OPERATIONS = ("EQUALS", "NOT_EQUALS", "GREATER_THAN", "GREATER_THAN_EQUALS", "LESS_THAN",
                      "LESS_THAN_EQUALS")  # fmt: skip


@dataclass(frozen=True)
class Predicate:
    operation: str  # filter.proto Operation name
    key: str  # the API field name, as sent
    value: Any  # int, str, or a tuple of them
    go_type: str


def compile_filter(raw_filter: str | None) -> tuple[Predicate, ...]:
    """A `filter` query value -> its predicates, refused as the server refuses it.

    list_request_util.go parseAPIFilter: double URL-decoding (parse_filter), then protojson into
    filter.proto's Filter, which takes an enum by name or number and a field by its proto name
    or JSON name (protobuf-go encoding/protojson; the server's transformJSONForBackwardCompatibility
    renames `stringValue` and the like first, to the same effect). filter/filter.go New:
    toPredicate (operation, value, key) for every predicate, then checkPredicate.
    """
    if not raw_filter:
        return ()
    parsed = parse_filter(raw_filter)
    if not isinstance(parsed, dict):
        raise _bad_filter(raw_filter, "proto: syntax error: a Filter is a JSON object")
    for name in parsed:
        if name != "predicates":
            raise _bad_filter(raw_filter, f"proto: unknown field {_go_quote(name)}")
    raw_predicates = parsed.get("predicates") or []
    if not isinstance(raw_predicates, list):
        raise _bad_filter(raw_filter, "proto: invalid value for repeated field predicates")
    predicates = [_predicate(raw_filter, p) for p in raw_predicates]
    for predicate in predicates:
        _check_predicate(predicate)
    return tuple(predicates)


def _predicate(raw_filter: str, raw: Any) -> Predicate:
    if not isinstance(raw, dict):
        raise _bad_filter(raw_filter, "proto: syntax error: a Predicate is a JSON object")
    known = {"operation", "key"} | set(_VALUE_FIELDS) | {j for j, _ in _VALUE_FIELDS.values()}
    for name in raw:
        if name not in known:
            raise _bad_filter(raw_filter, f"proto: unknown field {_go_quote(name)}")
    operation = raw.get("operation", 0)
    if isinstance(operation, str) and not isinstance(operation, bool):
        if operation not in kfp.PREDICATE_OPERATIONS:
            raise _bad_filter(
                raw_filter,
                f"proto: invalid value for enum field operation: {_go_quote(operation)}",
            )
        name: str | None = operation
    elif isinstance(operation, int) and not isinstance(operation, bool):
        name = _OPERATION_NAMES.get(operation)  # an unknown number parses (open enum)
    else:
        raise _bad_filter(raw_filter, f"proto: invalid value for enum field operation: {operation}")
    values = [
        (proto, raw.get(proto, raw.get(json_name)))
        for proto, (json_name, _) in _VALUE_FIELDS.items()
        if raw.get(proto, raw.get(json_name)) is not None
    ]
    if len(values) > 1:
        raise _bad_filter(
            raw_filter,
            f"proto: error parsing {_go_quote(values[1][0])}, oneof"
            " kubeflow.pipelines.backend.api.v2beta1.Predicate.value is already set",
        )
    # filter.go toPredicate: the operation, then the value, then the key.
    if name is None or name == "OPERATION_UNSPECIFIED":
        raise unknown_api_version("Filter.Predicate.Operation", "go_client.Predicate_Operation")
    if not values:
        raise unknown_api_version("Filter.Predicate.Value", "<nil>")
    proto, raw_value = values[0]
    value = _value(raw_filter, proto, raw_value)
    key = raw.get("key", "")
    if not isinstance(key, str):
        raise _bad_filter(raw_filter, "proto: invalid value for string field key")
    if key == "":
        raise invalid_input(
            f"Predicate key cannot be empty for operation {name} and value {_go_value(value)}"
        )
    return Predicate(name, key, value, _VALUE_FIELDS[proto][1])


def _value(raw_filter: str, proto: str, raw: Any) -> Any:
    """protojson's reading of one value: int64 may be a JSON string, a timestamp is RFC 3339."""

    def integer(item: Any) -> int:
        if isinstance(item, bool):
            raise ValueError(item)
        if isinstance(item, int):
            return item
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, str) and re.fullmatch(r"-?\d+", item):
            return int(item)
        raise ValueError(item)

    def text(item: Any) -> str:
        if not isinstance(item, str):
            raise ValueError(item)
        return item

    def moment(item: Any) -> int:
        if not isinstance(item, str):
            raise ValueError(item)
        return _seconds(item.replace("z", "Z"))

    try:
        if proto in ("int_value", "long_value"):
            return integer(raw)
        if proto == "string_value":
            return text(raw)
        if proto == "timestamp_value":
            return moment(raw)
        items = raw.get("values", []) if isinstance(raw, dict) else None
        if not isinstance(items, list):
            raise ValueError(raw)
        convert = text if proto == "string_values" else integer
        return tuple(convert(item) for item in items)
    except ValueError:
        raise _bad_filter(
            raw_filter, f"proto: invalid value for {proto} field: {json.dumps(raw)}"
        ) from None


def _check_predicate(predicate: Predicate) -> None:
    """filter/filter.go checkPredicate (its messages as they are, argument order included)."""
    is_list = isinstance(predicate.value, tuple)
    if predicate.operation == "IN" and not is_list:
        raise invalid_input(f"cannot use IN operator with scalar type {predicate.go_type}")
    if predicate.operation in _SCALAR_OPERATIONS and is_list:
        raise invalid_input(
            f"cannot use scalar operator {predicate.operation} on array type {predicate.go_type}"
        )
    if predicate.operation == "IS_SUBSTRING" and not isinstance(predicate.value, str):
        raise invalid_input(
            f"cannot use non string value type string with operator {_go_value(predicate.value)}"
        )


# -- what can be listed, filtered and sorted --------------------------------------------------


@dataclass(frozen=True)
class _Field:
    model: str  # the server's model field (what sorting and page tokens name)
    kind: str  # "string" | "time"
    get: Callable[[dict], Any] | None  # None: the emulator does not keep it


def _item(name: str) -> Callable[[dict], Any]:
    return lambda item: item.get(name, "")


@dataclass(frozen=True)
class _Listable:
    name: str  # the Go type, as messages name it
    fields: dict[str, _Field]  # API name -> field (model/*.go APIToModelFieldMap)
    key: str  # the API name of the primary key
    model_name: str  # list/list.go token ModelName

    def field(self, api_name: str) -> _Field | None:
        return self.fields.get(api_name)


_RUN_ID = _Field("UUID", "string", _item("run_id"))
_RUN_NAME = _Field("DisplayName", "string", _item("display_name"))
# model/run.go runAPIToModelFieldMap; state_history and runtime_details are kept as JSON text by
# the server, which the emulator does not reproduce.
RUNS = _Listable(
    "Run",
    {
        "run_id": _RUN_ID,
        "id": _RUN_ID,
        "display_name": _RUN_NAME,
        "name": _RUN_NAME,
        "created_at": _Field("CreatedAtInSec", "time", _item("created_at")),
        "finished_at": _Field("FinishedAtInSec", "time", _item("finished_at")),
        "description": _Field("Description", "string", _item("description")),
        "scheduled_at": _Field("ScheduledAtInSec", "time", _item("scheduled_at")),
        "storage_state": _Field("StorageState", "string", _item("storage_state")),
        "status": _Field("Conditions", "string", lambda r: V1_CONDITIONS.get(r["state"], "")),
        "namespace": _Field("Namespace", "string", _item("namespace")),
        "experiment_id": _Field("ExperimentUUID", "string", _item("experiment_id")),
        "state": _Field("State", "string", _item("state")),
        "state_history": _Field("StateHistory", "string", None),
        "runtime_details": _Field("PipelineRuntimeManifest", "string", None),
        "recurring_run_id": _Field("JobUUID", "string", _item("recurring_run_id")),
    },
    "run_id",
    "",
)
_EXPERIMENT_ID = _Field("UUID", "string", _item("experiment_id"))
_EXPERIMENT_NAME = _Field("Name", "string", _item("display_name"))
# model/experiment.go experimentAPIToModelFieldMap
EXPERIMENTS = _Listable(
    "Experiment",
    {
        "id": _EXPERIMENT_ID,
        "experiment_id": _EXPERIMENT_ID,
        "name": _EXPERIMENT_NAME,
        "display_name": _EXPERIMENT_NAME,
        "created_at": _Field("CreatedAtInSec", "time", _item("created_at")),
        "last_run_created_at": _Field(
            "LastRunCreatedAtInSec", "time", _item("last_run_created_at")
        ),
        "description": _Field("Description", "string", _item("description")),
        "namespace": _Field("Namespace", "string", _item("namespace")),
        "storage_state": _Field("StorageState", "string", _item("storage_state")),
    },
    "experiment_id",
    "experiments",
)
_DEFAULT_SORT = "created_at"  # model/{run,experiment}.go DefaultSortField: CreatedAtInSec


@dataclass(frozen=True)
class _ListOptions:
    page_size: int
    sort: str  # API name of the sort field
    desc: bool
    predicates: tuple[Predicate, ...]
    after: tuple[Any, str] | None = None  # from a page token: (sort value, key value)

    def criteria(self, listable: _Listable) -> tuple:
        """What list.go Options.Matches compares: model field names, so aliases match."""
        predicates = tuple(
            (p.operation, listable.fields[p.key].model, p.value) for p in self.predicates
        )
        return (listable.fields[self.sort].model, self.desc, predicates)


def _sort_key(field: _Field, value: Any) -> Any:
    # Strings order as MySQL's default collation does, ignoring case.
    return value.casefold() if field.kind == "string" and isinstance(value, str) else value


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE '%pattern%' (filter.go AddToSelect for IS_SUBSTRING): `%` and `_` are wildcards,
    `\\` escapes; case-insensitive, as MySQL's default collation compares."""
    parts, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return re.compile(".*" + "".join(parts) + ".*", re.IGNORECASE | re.DOTALL)


def _comparable(listable: _Listable, predicate: Predicate) -> None:
    """The emulator compares a time field with numbers (Unix seconds) and a string field with
    strings; MySQL would convert one side of any other pair, which it does not reproduce."""
    field = listable.fields[predicate.key]
    values = predicate.value if isinstance(predicate.value, tuple) else (predicate.value,)
    if field.kind == "time":
        for value in values:
            if isinstance(value, str) and not re.fullmatch(r"-?\d+", value):
                raise not_supported_here(
                    f"compares {predicate.key} with numbers or timestamps only, not"
                    f" {_go_quote(value)}"
                )
    elif not all(isinstance(value, str) for value in values):
        raise not_supported_here(
            f"compares {predicate.key} with strings only, not {_go_value(predicate.value)}"
        )


def _matches(item: dict, predicate: Predicate, listable: _Listable) -> bool:
    """One predicate, as the server's SQL evaluates it (filter.go AddToSelect)."""
    field = listable.fields[predicate.key]
    assert field.get is not None
    actual = field.get(item)
    values = predicate.value if isinstance(predicate.value, tuple) else (predicate.value,)
    if field.kind == "time":
        actual = _seconds(actual) if actual else 0
        expected: list[Any] = [int(value) for value in values]
    else:
        actual = str(actual).casefold()
        expected = [value.casefold() for value in values]
    operation = predicate.operation
    if operation == "IS_SUBSTRING":
        return bool(_like(str(predicate.value)).fullmatch(str(actual)))
    if operation == "IN":
        return actual in expected
    [value] = expected
    return {
        "EQUALS": actual == value,
        "NOT_EQUALS": actual != value,
        "GREATER_THAN": actual > value,
        "GREATER_THAN_EQUALS": actual >= value,
        "LESS_THAN": actual < value,
        "LESS_THAN_EQUALS": actual <= value,
    }[operation]


# -- request bodies ---------------------------------------------------------------------------


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_EXPERIMENT_MESSAGE = ("experiment_id", "display_name", "description", "created_at", "namespace",
                       "storage_state", "last_run_created_at")  # fmt: skip
_RUN_MESSAGE = ("experiment_id", "run_id", "display_name", "storage_state", "description",
                "pipeline_version_id", "pipeline_spec", "runtime_config", "service_account",
                "created_at", "scheduled_at", "finished_at", "state", "error", "run_details",
                "recurring_run_id", "state_history", "pipeline_version_reference",
                "plugins_input", "plugins_output")  # fmt: skip
_RUNTIME_CONFIG_MESSAGE = ("parameters", "pipeline_root")


def _message(body: Any, fields: Iterable[str]) -> dict[str, Any]:
    """A request message as protojson reads it: either spelling of a field, null as unset, and
    an unknown field refused (common/utils.go: DiscardUnknown false). The gateway's error has
    no detail."""
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ApiError(INVALID_ARGUMENT, "proto: syntax error: the body is not a JSON object")
    names = {name: name for name in fields} | {_camel(name): name for name in fields}
    message: dict[str, Any] = {}
    for name, value in body.items():
        if name not in names:
            raise ApiError(INVALID_ARGUMENT, f"proto: unknown field {_go_quote(name)}")
        if value is not None:
            message[names[name]] = value
    return message


def _string(message: dict, name: str) -> str:
    value = message.get(name, "")
    if not isinstance(value, str):
        raise ApiError(INVALID_ARGUMENT, f"proto: invalid value for string field {name}")
    return value


def _emit(message: dict[str, Any], fields: Iterable[str]) -> dict[str, Any]:
    """protojson with EmitUnpopulated false: zero values (and empty lists and maps) left out."""
    return {
        name: message[name]
        for name in fields
        if message.get(name) not in (None, "", 0, False, [], {}, UNSPECIFIED)
    }


# -- the runs' states --------------------------------------------------------------------------


def transition(run: dict[str, Any], state: str, *, at: str | None = None) -> None:
    """Moves a run to `state` as the persistence agent reports it: a state_history entry when the
    state changes (storage/run_store.go UpdateRun), finished_at once it is final."""
    with _LOCK:
        now = at or timestamp()
        history = run.setdefault("state_history", [])
        if not history or history[-1]["state"] != state:
            history.append({"update_time": now, "state": state})
        run["state"] = state
        if state in kfp.FINISHED_RUNTIME_STATES:
            run["finished_at"] = now


def finish_terminated(run: dict[str, Any]) -> None:
    """A terminated run's end: CANCELING while its workflow stops, then FAILED, the phase Argo
    gives a workflow whose activeDeadlineSeconds was set to 0 (resource_manager.go
    ReportWorkflowResource: IsTerminating -> CANCELING until the workflow is final, then its
    condition)."""
    with _LOCK:
        transition(run, CANCELING)
        transition(run, FAILED)
        run.setdefault("failure", "terminated")


# -- the server -------------------------------------------------------------------------------


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

    def terminate(self, run: dict[str, Any]) -> None:
        """Stops the run (now CANCELING) and ends it with `finish_terminated`."""
        ...

    def stop(self) -> None: ...


_RUN_PUBLIC = ("run_id", "experiment_id", "display_name", "storage_state", "description",
               "pipeline_spec", "runtime_config", "service_account", "created_at", "scheduled_at",
               "finished_at", "state", "recurring_run_id", "state_history")  # fmt: skip
_EXPERIMENT_PUBLIC = ("experiment_id", "display_name", "description", "created_at", "namespace",
                      "storage_state", "last_run_created_at")  # fmt: skip
_TERMINABLE = kfp.TERMINABLE_RUNTIME_STATES  # storage/run_store.go TerminateRun
_ROUTE = re.compile(r"^/(?P<kind>experiments|runs)(?:/(?P<id>[^/:]+)(?::(?P<verb>\w+))?)?$")
_SERVED_ELSEWHERE = ("pipelines", "recurringruns", "artifacts", "artifact_tasks", "visualizations",
                     "runs", "experiments")  # fmt: skip


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
        multi_user: bool = False,
        port: int = 0,
    ) -> None:
        """`executor` runs created runs (None: they stay PENDING). `accept_token`: None takes any
        request (standalone KFP ignores Authorization); a string, that bearer token only; a
        callable, the tokens it accepts. `backend_version`: a version older than
        core.kfp.MIN_BACKEND_VERSION answers as those backends do, refusing at creation any run
        whose exit handler reads the final status. `multi_user`: as a multi-user Kubeflow's API
        (healthz says so; experiments and runs live in namespaces, which calls must name)."""
        self.prefix = prefix.rstrip("/")
        self.backend_version = backend_version
        self.multi_user = multi_user
        self.requests: list[RecordedRequest] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self._executor = executor
        self._accept_token = accept_token
        self._ssl_context = ssl_context
        self._faults: list[Fault] = []
        self._lock = _LOCK
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
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": SHUTDOWN_POLL_SECONDS},  # how long stop() waits for it
            name="kfp-api",
            daemon=True,
        )
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
        """One call: the answer's body, or an ApiError."""
        if path in HEALTHZ_PATHS:
            return self._healthz(v1=path != HEALTHZ_PATHS[0])
        route = _ROUTE.match(path.removeprefix(API_PREFIX)) if path.startswith(API_PREFIX) else None
        if route is None:
            first = path.removeprefix(API_PREFIX).strip("/").split("/")[0].split(":")[0]
            if path.startswith(API_PREFIX + "/") and first in _SERVED_ELSEWHERE:
                raise self._not_served(method, path)
            raise ApiError(NOT_FOUND, "Not Found")  # grpc-gateway: no such route
        kind, item, verb = route["kind"], route["id"], route["verb"]
        with self._lock:
            if kind == "experiments":
                answer = self._experiments(method, item, verb, query, body)
            else:
                answer = self._runs(method, item, verb, query, body)
        if answer is None:
            raise self._not_served(method, path)
        return answer

    def _not_served(self, method: str, path: str) -> ApiError:
        message = (
            f"{method} {path} is not served by the local KFP API (mnistflow/local/kfp_api.py);"
            " it serves health, experiments (create, get, list, archive) and runs (create, get,"
            " list, terminate, archive, delete)"
        )
        return ApiError(UNIMPLEMENTED, message, message)

    def _healthz(self, *, v1: bool) -> dict[str, Any]:
        """main.go healthzResponse (encoding/json, so multi_user is there when false);
        pipeline_store on v2beta1 from 2.14.0 on ("database" unless KFP keeps pipelines in
        Kubernetes); tag_name is the release's (env TAG_NAME)."""
        answer: dict[str, Any] = {
            "commit_sha": "local",
            "tag_name": self.backend_version,
            "multi_user": self.multi_user,
        }
        if not v1 and not self.is_old_backend:
            answer["pipeline_store"] = "database"
        return answer

    def _experiments(self, method: str, item: str | None, verb: str | None, query, body) -> Any:
        if item is None and verb is None:
            if method == "GET":
                return self._list_experiments(query)
            if method == "POST":
                return self._create_experiment(body)
        elif method == "GET" and verb is None:
            return _emit(self._experiment(item, "Failed to fetch experiment"), _EXPERIMENT_PUBLIC)
        elif method == "POST" and verb in ("archive", "unarchive"):
            return self._archive_experiment(item, archive=verb == "archive")
        return None

    def _runs(self, method: str, item: str | None, verb: str | None, query, body) -> Any:
        if item is None and verb is None:
            if method == "GET":
                return self._list_runs(query)
            if method == "POST":
                return self._public_run(self._create_run(body))
        elif verb is None and method == "GET":
            return self._public_run(self._run(item, "Failed to get a run"))
        elif verb is None and method == "DELETE":
            return self._delete_run(item)
        elif method == "POST" and verb == "terminate":
            return self._terminate_run(item)
        elif method == "POST" and verb in ("archive", "unarchive"):
            return self._archive_run(item, archive=verb == "archive")
        return None

    # -- experiments -----------------------------------------------------------------------

    def _namespace(self, namespace: str) -> str:
        """resource_manager.go ReplaceNamespace: single-user mode has no namespaces."""
        return namespace if self.multi_user else ""

    def _experiment(self, experiment_id: str, context: str, *wraps: str) -> dict[str, Any]:
        """experiment_store.go GetExperiment, wrapped by its callers."""
        experiment = self.experiments.get(experiment_id)
        if experiment is None:
            error = resource_not_found("Experiment", experiment_id)
            for wrap in (*wraps, context):
                error = error.wrap(wrap)
            raise error
        return experiment

    def _create_experiment(self, body: Any) -> dict[str, Any]:
        """experiment_server.go CreateExperiment, experiment_store.go CreateExperiment."""
        message = _message(body, _EXPERIMENT_MESSAGE)
        name = _string(message, "display_name")
        if not name:
            # The server wraps this in NewInternalServerError (500): see the module docstring.
            raise (
                invalid_input("Experiment must have a non-empty name")
                .wrap("[ExperimentServer]: Failed to create a experiment due to conversion error")
                .wrap("Failed to create a experiment")
            )
        namespace = self._namespace(_string(message, "namespace"))
        if self.multi_user and not namespace:
            raise (
                invalid_input("An experiment cannot have an empty namespace in multi-user mode")
                .wrap("Failed to authorize the request")
                .wrap("Failed to create a experiment")
            )
        return _emit(
            self._add_experiment(name, _string(message, "description"), namespace),
            _EXPERIMENT_PUBLIC,
        )

    def _add_experiment(self, name: str, description: str, namespace: str) -> dict[str, Any]:
        # The unique index on (Name, Namespace) compares as MySQL's default collation does.
        if any(
            e["display_name"].casefold() == name.casefold() and e["namespace"] == namespace
            for e in self.experiments.values()
        ):
            raise already_exists(
                f"Failed to create a new experiment. The name {name} already exists. Please"
                " specify a new name"
            ).wrap("Failed to create a experiment")
        experiment = {
            "experiment_id": f"local-experiment-{next(self._ids)}",
            "display_name": name,
            "description": description,
            "namespace": namespace,
            "created_at": timestamp(),
            "storage_state": AVAILABLE,
            "last_run_created_at": EPOCH,
        }
        self.experiments[experiment["experiment_id"]] = experiment
        return experiment

    def _list_experiments(self, query: dict[str, str]) -> dict[str, Any]:
        """experiment_server.go ListExperiments: list options, then the namespace (all of them
        "" in single-user mode), then experiment_store.go ListExperiments."""
        options = self._list_options(EXPERIMENTS, query)
        namespace = self._namespace(query.get("namespace", ""))
        if self.multi_user and not namespace:
            raise (
                invalid_input("An experiment cannot have an empty namespace in multi-user mode")
                .wrap("Failed to authorize with API")
                .wrap("List experiments failed")
            )
        found = [e for e in self.experiments.values() if e["namespace"] == namespace]
        page, total, token = self._list(EXPERIMENTS, found, options)
        answer = {"experiments": [_emit(e, _EXPERIMENT_PUBLIC) for e in page]}
        return _emit({**answer, "total_size": total, "next_page_token": token},
                     ("experiments", "total_size", "next_page_token"))  # fmt: skip

    def _archive_experiment(self, experiment_id: str, *, archive: bool) -> dict[str, Any]:
        """resource_manager.go Archive/UnarchiveExperiment; the store's UPDATE of an unknown id
        changes nothing and is no error. Archiving archives the experiment's runs too."""
        experiment = self.experiments.get(experiment_id)
        if experiment is not None:
            experiment["storage_state"] = ARCHIVED if archive else AVAILABLE
            if archive:
                for run in self.runs.values():
                    if run["experiment_id"] == experiment_id:
                        run["storage_state"] = ARCHIVED
        return {}

    # -- runs ------------------------------------------------------------------------------

    def _run(self, run_id: str, context: str, *wraps: str) -> dict[str, Any]:
        """resource_manager.go GetRun ("Failed to fetch run"), wrapped by its callers."""
        run = self.runs.get(run_id)
        if run is None:
            error = resource_not_found("Run", run_id).wrap(f"Failed to fetch run {run_id}")
            for wrap in (*wraps, context):
                error = error.wrap(wrap)
            raise error
        return run

    def _public_run(self, run: dict[str, Any]) -> dict[str, Any]:
        """server/api_converter.go toApiRun; with no parameters and no pipeline root the
        runtime config is left out."""
        with self._lock:
            answer = _emit(run, _RUN_PUBLIC)
            config = _emit(run.get("runtime_config") or {}, _RUNTIME_CONFIG_MESSAGE)
            if config:
                answer["runtime_config"] = config
            else:
                answer.pop("runtime_config", None)
            answer["state_history"] = [dict(entry) for entry in run.get("state_history", [])]
            return answer

    def _create_run(self, body: Any) -> dict[str, Any]:
        """run_server.go CreateRun, in the server's order: toModelRun (the name), createRun (the
        experiment and namespace), resource_manager.go CreateRun (the spec, the parameters, the
        workflow), run_store.go CreateRun (PENDING, one state_history entry)."""
        message = _message(body, _RUN_MESSAGE)
        fail = "Failed to create a new run"
        name = _string(message, "display_name")
        if not name:
            raise (
                internal(
                    invalid_input("Run name cannot be empty"),
                    "Failed to convert a API run detail to its internal representation",
                )
                .wrap("CreateJob(job.ToV2())Failed to create a run due to conversion error")
                .wrap(fail)
            )
        config = _message(message.get("runtime_config"), _RUNTIME_CONFIG_MESSAGE)
        parameters = config.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise ApiError(INVALID_ARGUMENT, "proto: invalid value for map field parameters")
        experiment = self._run_experiment(_string(message, "experiment_id"), fail)
        spec = self._template(message, fail)
        self._check_parameters(spec, parameters, fail)
        if self.is_old_backend and _reads_task_final_status(spec):
            # backend/src/v2/compiler/argocompiler/dag.go at 2.0.0 to 2.5.0, a plain error on
            # its way up, so gRPC Internal with an Unknown detail (common/util/error.go).
            text = (
                "Internal error: Failed to create a new run: Failed to generate the"
                ' ExecutionSpec: Failed to compile job: compiling DAG "root": failed to add'
                f" implicit deps: {kfp.OLD_BACKEND_REJECTION}"
            )
            raise ApiError(INTERNAL, text, text, detail_code=UNKNOWN)
        run_id = _string(message, "run_id") or f"local-run-{next(self._ids)}"
        if run_id in self.runs:
            # toModelRun takes a run_id the client sets; a second insert of it fails.
            raise internal(
                f"Duplicate entry '{run_id}' for key 'run_details.PRIMARY'",
                f"Failed to store run {name} to table",
            ).wrap(fail)
        now = timestamp()
        run = {
            "run_id": run_id,
            "display_name": name,
            "description": _string(message, "description"),
            "experiment_id": experiment["experiment_id"],
            "namespace": experiment["namespace"],
            "runtime_config": {
                "parameters": parameters,
                **(
                    {"pipeline_root": config["pipeline_root"]}
                    if config.get("pipeline_root")
                    else {}
                ),
            },
            "service_account": _string(message, "service_account") or DEFAULT_SERVICE_ACCOUNT,
            "created_at": now,
            "scheduled_at": now,
            "finished_at": EPOCH,
            "storage_state": AVAILABLE,
            "recurring_run_id": "",
            "pipeline_spec": message["pipeline_spec"],
        }
        transition(run, PENDING, at=now)
        self.runs[run_id] = run
        experiment["last_run_created_at"] = now  # experiment_store.go SetLastRunTimestamp
        if self._executor is not None:
            self._executor.submit(run)
        return run

    def _run_experiment(self, experiment_id: str, fail: str) -> dict[str, Any]:
        """run_server.go createRun -> resource_manager.go GetValidExperimentNamespacePair: the
        given experiment, or the Default one (made when it is missing)."""
        context = "Failed to create a run due to invalid experimentId and namespace combination"
        if experiment_id:
            return self._experiment(
                experiment_id,
                fail,
                f"Failed to fetch namespace from experiment {experiment_id}",
                f"Failed to fetch namespace for experiment {experiment_id}",
                context,
            )
        if self.multi_user:
            raise (
                invalid_input("Experiment id can not be empty in multi-user mode")
                .wrap(context)
                .wrap(fail)
            )
        for experiment in self.experiments.values():
            default = experiment["display_name"].casefold() == DEFAULT_EXPERIMENT_NAME.casefold()
            if default and not experiment["namespace"]:
                return experiment
        return self._add_experiment(DEFAULT_EXPERIMENT_NAME, DEFAULT_EXPERIMENT_DESCRIPTION, "")

    def _template(self, message: dict[str, Any], fail: str) -> dict[str, Any]:
        """resource_manager.go fetchTemplateFromPipelineSpec and template/v2_template.go
        NewV2SpecTemplate, for an inline spec (with or without the SDK's platform_spec)."""
        if message.get("pipeline_version_reference") or message.get("pipeline_version_id"):
            message_ = (
                "runs inline pipeline specs only: a pipeline_version_reference needs the"
                " pipelines API, which it does not serve"
            )
            raise ApiError(UNIMPLEMENTED, f"the local KFP API {message_}", message_).wrap(fail)
        spec = message.get("pipeline_spec")
        if not spec:
            raise internal(
                invalid_input("Failed to fetch a template with an empty pipeline spec manifest"),
                "Failed to create a run due to error fetching manifest",
            ).wrap(fail)
        if not isinstance(spec, dict):
            raise ApiError(INVALID_ARGUMENT, "proto: invalid value for message pipeline_spec")
        version = _pipeline(spec).get("schemaVersion", _pipeline(spec).get("schema_version"))
        if version is not None and version != SCHEMA_VERSION:
            raise internal(
                invalid_input_with_details(
                    "pipeline spec is invalid",
                    f"KFP only supports schema version {SCHEMA_VERSION}, but the pipeline spec"
                    f" has version {version}",
                ).wrap("Failed to fetch a template with an invalid pipeline spec manifest"),
                "Failed to create a run due to error fetching manifest",
            ).wrap(fail)
        return spec

    def _check_parameters(self, spec: dict[str, Any], parameters: dict[str, Any], fail: str):
        """template/v2_template.go validatePipelineJobInputs, for a compiled spec (one with a
        schemaVersion): every required parameter given or defaulted, each of its declared type
        (and, from 2.16.0, among its literals), none the pipeline does not declare. Go walks a
        map, so of several faults the server names any; the emulator, the first by name."""
        pipeline = _pipeline(spec)
        if "schemaVersion" not in pipeline and "schema_version" not in pipeline:
            return
        root = pipeline.get("root") or {}
        inputs = root.get("inputDefinitions", root.get("input_definitions")) or {}
        declared: dict[str, dict] = inputs.get("parameters") or {}

        def refuse(text: str) -> ApiError:
            return (
                invalid_input(text)
                .wrap("invalid pipeline job inputs")
                .wrap("Failed to generate the ExecutionSpec")
                .wrap(fail)
            )

        number = ("double or integer", "the parameter value is not of number value type")
        checks: dict[str, tuple[tuple[str, str], Callable[[Any], bool]]] = {
            "NUMBER_DOUBLE": (number, _is_number),
            "NUMBER_INTEGER": (number, _is_number),
            "STRING": (("string", "the input parameter is not of string value type"),
                       lambda v: isinstance(v, str)),
            "BOOLEAN": (("bool", "the input parameter is not of bool value type"),
                        lambda v: isinstance(v, bool)),
            "LIST": (("list", "the input parameter is not of list value type"),
                     lambda v: isinstance(v, list)),
            "STRUCT": (("struct", "the input parameter is not of struct value type"),
                       lambda v: isinstance(v, dict)),
        }  # fmt: skip
        for name in sorted(declared):
            spec_ = declared[name]
            kind = spec_.get("parameterType", spec_.get("parameter_type", ""))
            optional = spec_.get("isOptional", spec_.get("is_optional", False))
            default = spec_.get("defaultValue", spec_.get("default_value"))
            if name not in parameters:
                if not optional and default is None:
                    raise refuse(
                        f"parameter {name} is not optional, yet has neither default value nor"
                        " user provided value"
                    )
                continue
            value = parameters[name]
            if kind in ("", "PARAMETER_TYPE_ENUM_UNSPECIFIED"):
                raise refuse(f"input parameter {name} has unspecified type")
            if kind == "TASK_FINAL_STATUS":
                raise refuse(
                    f"input parameter {name} requires type TASK_FINAL_STATUS, which is invalid"
                    " for root component"
                )
            if kind not in checks:
                raise refuse(f"input parameter {name} requires type unknown")
            (wanted, why), valid = checks[kind]
            if not valid(value):
                raise refuse(f"input parameter {name} requires type {wanted}, but {why}")
            literals = spec_.get("literals") or []
            if literals and _version(self.backend_version) >= _version(LITERALS_SINCE):
                if not any(_same_value(value, literal) for literal in literals):
                    raise refuse(
                        f"input parameter {_go_quote(name)} value {_go_value(value)} does not"
                        f" match any of the allowed literal values: {_go_value(literals)}"
                    )
        extra = sorted(set(parameters) - set(declared))
        if extra:
            raise refuse(f"parameter(s) provided are not required by pipeline: {', '.join(extra)}")

    def _terminate_run(self, run_id: str) -> dict[str, Any]:
        """resource_manager.go TerminateRun -> run_store.go TerminateRun: CANCELING (the history
        is left as it is: "TODO(gkcalat): append CANCELLING to StateHistory") for a run that is
        PAUSED, PENDING, RUNNING or unspecified, else InvalidArgument; then the workflow is
        stopped (here: the executor's process), which ends the run FAILED."""
        fail = "Failed to terminate a run"
        run = self._run(
            run_id, fail, f"Failed to terminate run {run_id} due to error fetching the run"
        )
        if run["state"] not in _TERMINABLE:
            raise (
                invalid_input(f"Failed to terminate a run {run_id}. Row not found")
                .wrap(f"Failed to terminate run {run_id}")
                .wrap(fail)
            )
        run["state"] = CANCELING
        if self._executor is not None:
            self._executor.terminate(run)
        return {}

    def _archive_run(self, run_id: str, *, archive: bool) -> dict[str, Any]:
        """resource_manager.go ArchiveRun / UnarchiveRun (not while its experiment is archived)."""
        if archive:
            run = self._run(
                run_id,
                "Failed to archive a run",
                f"Failed to archive run {run_id} as it failed to be retrieved",
            )
            run["storage_state"] = ARCHIVED
            return {}
        fail = "Failed to unarchive a run"
        run = self._run(run_id, fail, f"Failed to unarchive run {run_id} as it does not exist")
        experiment = self.experiments.get(run["experiment_id"])
        if experiment is not None and experiment["storage_state"] == ARCHIVED:
            raise failed_precondition(
                "Unarchive the experiment first to allow the run to be restored",
                f"Failed to unarchive run {run_id} as experiment {run['experiment_id']} must be"
                " un-archived first",
            ).wrap(fail)
        run["storage_state"] = AVAILABLE
        return {}

    def _delete_run(self, run_id: str) -> dict[str, Any]:
        """resource_manager.go DeleteRun: the workflow (here: the run's process) and the run."""
        run = self._run(
            run_id, "Failed to delete a run", f"Failed to delete run {run_id} as it does not exist"
        )
        if run["state"] in _TERMINABLE and self._executor is not None:
            run["state"] = CANCELING
            self._executor.terminate(run)
        del self.runs[run_id]
        return {}

    def _list_runs(self, query: dict[str, str]) -> dict[str, Any]:
        """run_server.go ListRuns / listRuns: list options; the namespace (all of them "" in
        single-user mode), or the experiment's when one is named; then run_store.go ListRuns."""
        fail = "Failed to list runs"
        options = self._list_options(RUNS, query)
        namespace = self._namespace(query.get("namespace", ""))
        experiment_id = query.get("experiment_id", "")
        if experiment_id:
            namespace = self._experiment(
                experiment_id,
                fail,
                f"Failed to fetch namespace from experiment {experiment_id}",
                f"Failed to list runs due to error fetching namespace for experiment"
                f" {experiment_id}. Try filtering based on namespace",
            )["namespace"]
            found = [r for r in self.runs.values() if r["experiment_id"] == experiment_id]
        else:
            if self.multi_user and not namespace:
                raise (
                    invalid_input("A run cannot have an empty namespace in multi-user mode")
                    .wrap(
                        "Failed to list runs due to authorization error. Check if you have"
                        " permission to access namespace "
                    )
                    .wrap(fail)
                )
            found = [r for r in self.runs.values() if r["namespace"] == namespace]
        page, total, token = self._list(RUNS, found, options)
        answer = {"runs": [self._public_run(r) for r in page]}
        return _emit({**answer, "total_size": total, "next_page_token": token},
                     ("runs", "total_size", "next_page_token"))  # fmt: skip

    # -- listing ---------------------------------------------------------------------------

    def _list_options(self, listable: _Listable, query: dict[str, str]) -> _ListOptions:
        """list_request_util.go validatedListOptions, wrapped "Failed to create list options":
        the filter (parsed, then checked), the page size (0: 20, over 200: 200, negative: an
        error), sort_by ("field", "field asc" or "field desc"), the filter's keys; or, with a
        page token, the token's options, which a sort_by or filter also given must match."""
        raw_size = query.get("page_size", "") or "0"
        if not re.fullmatch(r"[+-]?\d+", raw_size) or not -(2**31) <= int(raw_size) < 2**31:
            # grpc-gateway's PopulateQueryParameters, before the server sees the call.
            raise ApiError(
                INVALID_ARGUMENT,
                f"type mismatch, parameter: page_size, error: strconv.ParseInt: parsing"
                f" {_go_quote(raw_size)}: invalid syntax",
            )
        try:
            return self._list_options_unwrapped(listable, query, int(raw_size))
        except ApiError as error:
            raise error.wrap("Failed to create list options") from None

    def _list_options_unwrapped(
        self, listable: _Listable, query: dict[str, str], page_size: int
    ) -> _ListOptions:
        sort_by, raw_filter = query.get("sort_by", ""), query.get("filter", "")
        token = query.get("page_token", "")

        def defaults() -> _ListOptions:
            predicates = compile_filter(raw_filter)
            size = _page_size(page_size)
            sort, desc = _sort_by(listable, sort_by)
            for predicate in predicates:
                field = listable.field(predicate.key)
                if field is None:
                    raise invalid_input(
                        f"no support for filtering on unrecognized field {_go_quote(predicate.key)}"
                    )
                if field.get is None:
                    raise not_supported_here(
                        f"cannot filter {listable.name.lower()}s on {predicate.key} (the server"
                        f" can); filter on one of {_usable(listable)}"
                    )
                _comparable(listable, predicate)
            return _ListOptions(size, sort, desc, predicates)

        if not token:
            return defaults()
        options = _from_token(listable, token, _page_size(page_size))
        if sort_by or raw_filter:
            if defaults().criteria(listable) != options.criteria(listable):
                raise invalid_input(
                    "page token does not match the supplied sort by and/or filtering criteria."
                    " Either specify the same criteria or leave the latter empty if page token is"
                    " specified"
                )
        return options

    def _list(
        self, listable: _Listable, items: list[dict], options: _ListOptions
    ) -> tuple[list[dict], int, str]:
        """A page as the stores' SQL gives it: WHERE the filter (and the token's position),
        ORDER BY the sort field then the key, both ascending or both descending, LIMIT
        page_size + 1 (list/list.go AddPaginationToSelect); total_size counts every match; the
        next token holds the first row of the next page."""
        matching = [
            item for item in items if all(_matches(item, p, listable) for p in options.predicates)
        ]
        sort_field, key_field = listable.fields[options.sort], listable.fields[listable.key]
        assert sort_field.get is not None and key_field.get is not None

        def position(item: dict) -> tuple:
            return (_sort_key(sort_field, sort_field.get(item)), key_field.get(item))

        ordered = sorted(matching, key=position, reverse=options.desc)
        if options.after is not None:
            mark = (_sort_key(sort_field, options.after[0]), options.after[1])
            ordered = [
                i for i in ordered if (position(i) <= mark if options.desc else position(i) >= mark)
            ]
        page, rest = ordered[: options.page_size], ordered[options.page_size :]
        token = ""
        if rest:
            token = _page_token(listable, options, sort_field.get(rest[0]), key_field.get(rest[0]))
        return page, len(matching), token

    # -- lifecycle -------------------------------------------------------------------------

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return error_body(status, message, old_gateway=self.is_old_backend)

    @property
    def is_old_backend(self) -> bool:
        return _version(self.backend_version) < _version(kfp.MIN_BACKEND_VERSION)

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


def _usable(listable: _Listable) -> str:
    return ", ".join(name for name, field in listable.fields.items() if field.get is not None)


def _page_size(size: int) -> int:
    """list/list.go validatePageSize."""
    if size < 0:
        raise invalid_input(f"The page size should be greater than 0. Got {size}")
    return DEFAULT_PAGE_SIZE if size == 0 else min(size, MAX_PAGE_SIZE)


def _sort_by(listable: _Listable, sort_by: str) -> tuple[str, bool]:
    """list/list.go NewOptions: lower-cased, "field" or "field asc|desc"."""
    words = sort_by.lower().split()
    if len(words) > 2 or (len(words) == 2 and words[1] not in ("asc", "desc")):
        raise invalid_input(
            f"Received invalid sort by format {_go_quote(sort_by)}. Supported format:"
            ' "field_name", "field_name desc", or "field_name asc"'
        )
    if not words:
        return _DEFAULT_SORT, False
    field = listable.field(words[0])
    if field is None and not (listable is RUNS and words[0].startswith("metric:")):
        raise invalid_input(
            f"Invalid sorting field: {_go_quote(words[0])} on listable type {listable.name}"
        )
    if field is None or field.get is None:
        raise not_supported_here(
            f"cannot sort {listable.name.lower()}s by {words[0]} (the server can); sort by one"
            f" of {_usable(listable)}"
        )
    return words[0], len(words) == 2 and words[1] == "desc"


def _page_token(listable: _Listable, options: _ListOptions, sort_value: Any, key: str) -> str:
    """list/list.go token, base64 of its JSON, with the next page's first row."""
    token = {
        "SortByFieldName": listable.fields[options.sort].model,
        "SortByFieldValue": sort_value,
        "KeyFieldName": listable.fields[listable.key].model,
        "KeyFieldValue": key,
        "IsDesc": options.desc,
        "ModelName": listable.model_name,
        "Filter": [[p.operation, p.key, p.value, p.go_type] for p in options.predicates],
        "SortByApiName": options.sort,
    }
    return base64.b64encode(json.dumps(token).encode()).decode()


def _from_token(listable: _Listable, token: str, page_size: int) -> _ListOptions:
    """list/list.go NewOptionsFromToken."""
    try:
        decoded = json.loads(base64.b64decode(token, validate=True))
        sort = decoded["SortByApiName"]
        predicates = tuple(
            Predicate(op, key, tuple(value) if isinstance(value, list) else value, go_type)
            for op, key, value, go_type in decoded["Filter"]
        )
        after = (decoded["SortByFieldValue"], decoded["KeyFieldValue"])
        if listable.field(sort) is None or any(listable.field(p.key) is None for p in predicates):
            raise ValueError("the token is another listable's")
        return _ListOptions(page_size, sort, bool(decoded["IsDesc"]), predicates, after)
    except (binascii.Error, ValueError, KeyError, TypeError) as error:
        raise invalid_input_with_details(str(error), "Invalid page token") from None


def _pipeline(spec: dict[str, Any]) -> dict[str, Any]:
    """The PipelineSpec of a submitted spec: kfp.Client nests it with a platform spec
    (kfp/client/client.py _PipelineDoc.to_dict)."""
    nested = spec.get("pipeline_spec")
    return nested if isinstance(nested, dict) else spec


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _same_value(value: Any, literal: Any) -> bool:
    """proto.Equal of two google.protobuf.Values: numbers are doubles."""
    if _is_number(value) and _is_number(literal):
        return float(value) == float(literal)
    return type(value) is type(literal) and value == literal


def _reads_task_final_status(spec: dict) -> bool:
    """True when a task of the spec takes a `taskFinalStatus` input (an exit handler's)."""
    pipeline = _pipeline(spec)
    components = [pipeline.get("root", {}), *pipeline.get("components", {}).values()]
    for component in components:
        for task in component.get("dag", {}).get("tasks", {}).values():
            for value in task.get("inputs", {}).get("parameters", {}).values():
                if "taskFinalStatus" in value:
                    return True
    return False


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
            # Go's url.ParseQuery, as grpc-gateway reads the query: `+` is a space.
            query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                body = json.loads(raw) if raw else None
            except ValueError as error:
                failure = ApiError(INVALID_ARGUMENT, f"proto: syntax error: {error}")
                return self._send(400, failure.body(old_gateway=api.is_old_backend))
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
            # healthz is served before the gateway and its auth (main.go buildHTTPRouter).
            if path not in HEALTHZ_PATHS and not self._authorized(headers):
                return self._send(401, api.error_body(401, "Unauthorized"))
            try:
                status, payload = 200, api.handle(self.command, path, query, body)
            except ApiError as error:
                status, payload = error.status, error.body(old_gateway=api.is_old_backend)
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
        do_DELETE = _serve
        do_PUT = _serve
        do_PATCH = _serve

    return Handler
