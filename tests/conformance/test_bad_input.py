"""The issue's bad input: a filter the local API does not support gets the server's kind of 400
with a clear message; a run with parameters the pipeline rejects fails as the server fails it.
And the filters and sorts the server itself refuses, refused the same way.

The error body is the gateway's google.rpc.Status: the internal chain of wraps as `message`, the
user message as the one detail (backend/src/common/util/error.go UserError.GRPCStatus)."""

from __future__ import annotations

import json

import kfp_server_api
import pytest

from tests.conformance.conftest import product_arguments

pytestmark = pytest.mark.conformance


def where(key: str, operation, **value) -> str:
    return json.dumps({"predicates": [{"key": key, "operation": operation, **value}]})


def refusal(call) -> tuple[int, dict]:
    with pytest.raises(kfp_server_api.ApiException) as refused:
        call()
    return refused.value.status, json.loads(refused.value.body)


def test_a_filter_the_local_api_does_not_support_is_a_clear_400(client):
    # model/run.go lets the server filter on state_history (JSON text in its table); the
    # emulator keeps no such text, and says so in the server's shape
    status, body = refusal(
        lambda: client.list_runs(filter=where("state_history", 1, stringValue="x"))
    )
    assert status == 400 and body["code"] == 3
    detail = body["details"][0]["message"]
    assert detail.startswith(
        "the local KFP API cannot filter runs on state_history (the server can)"
    )
    assert "display_name" in detail and "state" in detail  # what it can filter on
    assert body["message"] == f"Failed to create list options: Invalid input error: {detail}"
    # ... and a comparison MySQL would make by converting a side
    status, body = refusal(
        lambda: client.list_experiments(filter=where("display_name", 1, intValue=3))
    )
    assert status == 400
    assert body["details"][0]["message"] == (
        "the local KFP API compares display_name with strings only, not 3"
    )


@pytest.mark.parametrize(
    ("predicate", "detail"),
    [
        # filter/filter.go ReplaceKeys
        ({"key": "colour", "operation": 1, "stringValue": "x"},
         'no support for filtering on unrecognized field "colour"'),
        # filter.go checkPredicate
        ({"key": "display_name", "operation": "IN", "stringValue": "x"},
         "cannot use IN operator with scalar type string"),
        ({"key": "display_name", "operation": 1, "stringValues": {"values": ["x"]}},
         "cannot use scalar operator EQUALS on array type []string"),
        # filter.go toOperation: OPERATION_UNSPECIFIED, or no operation at all
        ({"key": "display_name", "stringValue": "x"},
         "Error using Filter.Predicate.Operation with go_client.Predicate_Operation"),
        ({"key": "display_name", "operation": 1},
         "Error using Filter.Predicate.Value with <nil>"),
        ({"operation": 1, "stringValue": "x"},
         "Predicate key cannot be empty for operation EQUALS and value x"),
    ],
)  # fmt: skip
def test_filters_the_server_refuses(client, predicate, detail):
    status, body = refusal(
        lambda: client.list_experiments(filter=json.dumps({"predicates": [predicate]}))
    )
    assert (status, body["code"], body["details"][0]["message"]) == (400, 3, detail)
    assert body["message"].startswith("Failed to create list options: ")


def test_a_filter_that_does_not_parse(client):
    # list_request_util.go parseAPIFilter; protojson refuses an enum name it does not know
    status, body = refusal(
        lambda: client.list_experiments(filter=where("display_name", "SAME_AS", stringValue="x"))
    )
    assert status == 400
    assert body["details"][0]["message"].startswith("failed to parse valid filter from ")
    assert 'invalid value for enum field operation: "SAME_AS"' in body["details"][0]["message"]


@pytest.mark.parametrize(
    ("sort_by", "detail"),
    [
        ("colour", 'Invalid sorting field: "colour" on listable type Experiment'),
        ("display_name up", 'Received invalid sort by format "display_name up". Supported'
                            ' format: "field_name", "field_name desc", or "field_name asc"'),
    ],
)  # fmt: skip
def test_sorts_the_server_refuses(client, sort_by, detail):
    status, body = refusal(lambda: client.list_experiments(sort_by=sort_by))  # list/list.go
    assert (status, body["details"][0]["message"]) == (400, detail)


@pytest.mark.parametrize(
    ("arguments", "detail"),
    [
        # template/v2_template.go validatePipelineJobInputs
        ({"colour": "blue"}, "parameter(s) provided are not required by pipeline: colour"),
        ({"run_key": None}, "parameter run_key is not optional, yet has neither default value"
                            " nor user provided value"),
        ({"k": "ten"}, "input parameter k requires type double or integer, but the parameter"
                       " value is not of number value type"),
        ({"region": 1}, "input parameter region requires type string, but the input parameter"
                        " is not of string value type"),
    ],
)  # fmt: skip
def test_a_run_with_parameters_the_pipeline_rejects(api, client, product_spec, arguments, detail):
    parameters = {k: v for k, v in product_arguments(**arguments).items() if v is not None}
    experiment = client.create_experiment("mnist-uploads")
    status, body = refusal(
        lambda: client.run_pipeline(
            experiment.experiment_id, "mnist-0123456789ab", str(product_spec), params=parameters
        )
    )
    # run_server.go CreateRun <- resource_manager.go CreateRun <- v2_template.go RunWorkflow:
    # InvalidArgument, HTTP 400, and no run
    assert (status, body["code"], body["details"][0]["message"]) == (400, 3, detail)
    assert body["message"] == (
        "Failed to create a new run: Failed to generate the ExecutionSpec: invalid pipeline job"
        f" inputs: Invalid input error: {detail}"
    )
    assert client.list_runs(experiment_id=experiment.experiment_id).runs is None
    assert api.runs == {}


def test_a_run_without_a_name_is_an_internal_error_as_on_the_server(client, product_spec):
    # api_converter.go toModelRun wraps "Run name cannot be empty" in NewInternalServerError
    experiment = client.create_experiment("mnist-uploads")
    status, body = refusal(
        lambda: client.run_pipeline(
            experiment.experiment_id, "", str(product_spec), params=product_arguments()
        )
    )
    assert (status, body["code"], body["details"][0]["message"]) == (
        500,
        13,
        "Internal Server Error",
    )
    assert body["message"].endswith("Invalid input error: Run name cannot be empty")


def test_a_run_in_an_unknown_experiment(client, product_spec):
    status, body = refusal(
        lambda: client.run_pipeline(
            "no-such-experiment", "mnist-0123456789ab", str(product_spec), params={}
        )
    )
    assert (status, body["details"][0]["message"]) == (
        404,
        "Experiment no-such-experiment not found",
    )
