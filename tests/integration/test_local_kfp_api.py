"""The local KFP API on the wire, for what kfp.Client cannot send or show (tests/conformance
drives it with the SDK): request bodies, routes, error bodies, query parsing, page tokens, the
spec and parameter checks of a create. Each case names the server code it follows
(kubeflow/pipelines 2.17.0)."""

from __future__ import annotations

import http.client
import json
from urllib.parse import quote, urlencode

import pytest

from mnistflow.local.kfp_api import LocalKfpApi

pytestmark = pytest.mark.integration
EXPERIMENTS, RUNS = "/apis/v2beta1/experiments", "/apis/v2beta1/runs"
COMPILED = {  # the shape of a compiled spec, with one parameter of each kind that matters here
    "schemaVersion": "2.1.0",
    "pipelineInfo": {"name": "p"},
    "root": {
        "inputDefinitions": {
            "parameters": {
                "colour": {"parameterType": "STRING", "literals": ["red", "blue"]},
                "k": {"parameterType": "NUMBER_INTEGER", "defaultValue": 10.0, "isOptional": True},
            }
        }
    },
}


def call(api: LocalKfpApi, method: str, path: str, body=None, query=None) -> tuple[int, dict]:
    host, port = api.endpoint.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        target = path + ("?" + urlencode(query) if query else "")
        payload = body if isinstance(body, bytes) else json.dumps(body).encode() if body else None
        connection.request(method, target, body=payload)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


@pytest.fixture
def api():
    with LocalKfpApi() as server:
        yield server


@pytest.fixture
def experiment_id(api) -> str:
    return call(api, "POST", EXPERIMENTS, {"display_name": "e"})[1]["experiment_id"]


def test_a_body_field_the_message_does_not_have_is_refused(api):
    # common/utils.go CustomMarshaler: DiscardUnknown false; the gateway's error has no detail
    assert call(api, "POST", EXPERIMENTS, {"display_name": "e", "colour": "red"}) == (
        400,
        {"code": 3, "message": 'proto: unknown field "colour"'},
    )
    # protojson takes the JSON name as well as the proto name
    status, created = call(api, "POST", EXPERIMENTS, {"displayName": "e", "description": ""})
    assert status == 200 and created["display_name"] == "e"
    assert "description" not in created and "namespace" not in created  # zero values left out
    assert call(api, "POST", EXPERIMENTS, b"{not json")[0] == 400


def test_routes_it_does_not_know_and_calls_it_does_not_serve(api):
    # grpc-gateway: no route is NotFound "Not Found"; a real route this emulator lacks is 501
    assert call(api, "GET", "/apis/v2beta1/colours") == (404, {"code": 5, "message": "Not Found"})
    for method, path in (("GET", "/apis/v2beta1/pipelines"), ("POST", f"{RUNS}/r:retry")):
        status, body = call(api, method, path)
        assert (status, body["code"]) == (501, 12)
        assert body["message"].startswith(f"{method} {path} is not served by the local KFP API")


def test_an_old_backend_repeats_the_message_under_error():
    # grpc-gateway v1.16 (backends up to 2.5.0) runtime/errors.go DefaultHTTPError
    with LocalKfpApi(backend_version="2.5.0") as api:
        status, body = call(api, "GET", f"{RUNS}/nothing")
        assert status == 404 and body["error"] == body["message"]
        assert "pipeline_store" not in call(api, "GET", "/apis/v2beta1/healthz")[1]


@pytest.mark.parametrize(
    ("page_size", "message"),
    [
        ("ten", 'type mismatch, parameter: page_size, error: strconv.ParseInt: parsing "ten":'
                " invalid syntax"),
        ("-1", "Failed to create list options: Invalid input error: The page size should be"
               " greater than 0. Got -1"),
    ],
)  # fmt: skip
def test_a_page_size_that_is_not_one(api, page_size, message):
    status, body = call(api, "GET", EXPERIMENTS, query={"page_size": page_size})
    assert (status, body["message"]) == (400, message)


def test_a_page_token_that_is_not_one(api):
    status, body = call(api, "GET", EXPERIMENTS, query={"page_token": "not-a-token"})
    assert status == 400 and body["details"][0]["message"] == "Invalid page token"


def test_a_filter_is_url_decoded_twice_and_takes_either_spelling(api):
    # list_request_util.go parseAPIFilter: the gateway decodes the query, then QueryUnescape
    for name in ("mnist+v2", "mnist v2", "A"):
        call(api, "POST", EXPERIMENTS, {"display_name": name})

    def found(predicate: dict, encode_first: bool) -> list[str]:
        text = json.dumps({"predicates": [predicate]})
        text = quote(text, safe="") if encode_first else text
        answer = call(api, "GET", EXPERIMENTS, query={"filter": text})[1]
        return [e["display_name"] for e in answer.get("experiments", [])]

    plus = {"key": "display_name", "operation": "EQUALS", "string_value": "mnist+v2"}
    assert found(plus, encode_first=True) == ["mnist+v2"]  # as the KFP UI and our adapter send
    assert found(plus, encode_first=False) == ["mnist v2"]  # as kfp.Client sends it
    escape = {"key": "display_name", "operation": 1, "stringValue": "%41"}
    assert found(escape, encode_first=False) == ["A"]
    status, body = call(
        api, "GET", EXPERIMENTS, query={"filter": '{"predicates": [{"stringValue": "100%"}]}'}
    )
    assert status == 400 and 'invalid URL escape "%\\"}"' in body["message"]


def test_a_compiled_specs_parameters_are_checked_at_creation(api, experiment_id):
    def create(parameters: dict, **spec) -> tuple[int, dict]:
        run = {
            "experiment_id": experiment_id,
            "display_name": "r",
            "pipeline_spec": {**COMPILED, **spec},
            "runtime_config": {"parameters": parameters},
        }
        return call(api, "POST", RUNS, run)

    status, run = create({"colour": "red"})
    assert status == 200 and run["runtime_config"] == {"parameters": {"colour": "red"}}
    # v2_template.go: literals are checked from 2.16.0 on (util.ValidateLiteralParameter)
    assert create({"colour": "green"})[0] == 200
    api.backend_version = "2.16.0"
    status, body = create({"colour": "green"})
    assert status == 400 and body["details"][0]["message"].startswith(
        'input parameter "colour" value green does not match any of the allowed literal values'
    )
    # template/v2_template.go NewV2SpecTemplate: schema 2.1.0 only, an Internal error
    status, body = create({"colour": "red"}, schemaVersion="2.0.0")
    assert (status, body["details"][0]["message"]) == (500, "Internal Server Error")
    assert (
        "KFP only supports schema version 2.1.0, but the pipeline spec has version 2.0.0"
        in (body["message"])
    )


def test_a_run_id_the_client_sets_is_kept_once(api, experiment_id):
    # api_converter.go toModelRun reads run_id; resource_manager.go CreateRun makes one only
    # when it is empty; a second insert of the same id fails (Internal)
    run = {"experiment_id": experiment_id, "display_name": "r", "run_id": "mine",
           "pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {}}}  # fmt: skip
    assert call(api, "POST", RUNS, run)[1]["run_id"] == "mine"
    status, body = call(api, "POST", RUNS, run)
    assert status == 500 and "Failed to store run r to table" in body["message"]


def test_a_run_without_a_spec_is_an_internal_error(api, experiment_id):
    # resource_manager.go CreateRun: fetchTemplateFromPipelineSpec's error, as Internal
    status, body = call(api, "POST", RUNS, {"experiment_id": experiment_id, "display_name": "r"})
    assert status == 500
    assert body["message"].endswith(
        "Invalid input error: Failed to fetch a template with an empty pipeline spec manifest"
    )
