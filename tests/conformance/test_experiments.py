"""Experiments through kfp.Client: create, get by id and by name, list with filters, sort and
paging, archive; the namespace parameter in single-user mode.

Server code followed (kubeflow/pipelines 2.17.0, backend/src/apiserver):
server/experiment_server.go, storage/experiment_store.go, server/list_request_util.go,
list/list.go, filter/filter.go, model/experiment.go; the protos:
backend/api/v2beta1/experiment.proto and filter.proto."""

from __future__ import annotations

import datetime as dt
import json

import kfp_server_api
import pytest

from mnistflow.local.kfp_api import parse_filter
from tests.conformance.conftest import connect

pytestmark = pytest.mark.conformance
EXPERIMENTS = "/apis/v2beta1/experiments"


def where(key: str, operation, **value) -> str:
    """A filter as the SDK's docstrings show it (json.dumps, not URL-encoded)."""
    return json.dumps({"predicates": [{"key": key, "operation": operation, **value}]})


def names(answer) -> list[str]:
    return [e.display_name for e in answer.experiments or []]


def test_create_get_and_get_by_name(api, client):
    created = client.create_experiment("mnist-uploads", description="runs of uploads")
    assert created.experiment_id and created.display_name == "mnist-uploads"
    assert created.description == "runs of uploads" and created.storage_state == "AVAILABLE"
    assert isinstance(created.created_at, dt.datetime)
    # experiment_server.go toApiExperiment: last_run_created_at is Unix 0 until a run is made
    assert created.last_run_created_at == dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    assert created.namespace is None  # single-user mode: "" and left out
    assert client.get_experiment(experiment_id=created.experiment_id) == created
    assert client.get_experiment(experiment_name="mnist-uploads") == created
    # The SDK sends the operation as a number and the value as stringValue (client.py)
    lookup = api.requests_to("GET", EXPERIMENTS)[-1]
    assert parse_filter(lookup.query["filter"]) == {
        "predicates": [{"operation": 1, "key": "display_name", "stringValue": "mnist-uploads"}]
    }


def test_create_experiment_returns_the_one_that_exists(api, client):
    # client.py create_experiment looks the name up first, and creates only when not found
    first = client.create_experiment("mnist-uploads")
    assert client.create_experiment("mnist-uploads") == first
    assert len(api.requests_to("POST", EXPERIMENTS)) == 1


def test_an_unknown_experiment(client):
    with pytest.raises(ValueError, match="No experiment is found with name nothing-here"):
        client.get_experiment(experiment_name="nothing-here")
    with pytest.raises(kfp_server_api.ApiException) as missing:
        client.get_experiment(experiment_id="no-such-id")
    assert missing.value.status == 404
    # common/util/error.go: the internal chain as the message, the user message as the detail
    assert json.loads(missing.value.body) == {
        "code": 5,
        "message": "Failed to fetch experiment: ResourceNotFoundError: Experiment no-such-id"
        " not found",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.Status",
                "code": 5,
                "message": "Experiment no-such-id not found",
            }
        ],
    }


def test_a_name_taken_is_409_already_exists(client, api):
    client.create_experiment("mnist-uploads")
    with pytest.raises(kfp_server_api.ApiException) as taken:
        client._experiment_api.experiment_service_create_experiment(
            experiment=kfp_server_api.V2beta1Experiment(display_name="MNIST-uploads")
        )
    # experiment_store.go: the unique (Name, Namespace) index; MySQL's default collation
    # ignores case
    assert taken.value.status == 409
    assert json.loads(taken.value.body)["details"][0]["message"] == (
        "Failed to create a new experiment. The name MNIST-uploads already exists. Please"
        " specify a new name"
    )


def test_the_sdk_cannot_find_a_name_with_a_plus_as_on_the_server(client):
    # list_request_util.go parseAPIFilter URL-decodes the already decoded filter once more: the
    # SDK's unencoded "a+b" arrives as "a b", so create_experiment does not find its own
    # experiment and its second create is refused
    client.create_experiment("mnist+v2")
    with pytest.raises(ValueError, match="No experiment is found"):
        client.get_experiment(experiment_name="mnist+v2")
    with pytest.raises(kfp_server_api.ApiException) as again:
        client.create_experiment("mnist+v2")
    assert again.value.status == 409


def test_list_with_filters_by_operation_name_or_number(client):
    for name in ("mnist-a", "mnist-b", "fashion-c"):
        client.create_experiment(name)
    # filter.proto Operation: EQUALS = 1 ... IS_SUBSTRING = 9; protojson takes name or number
    by_number = client.list_experiments(filter=where("display_name", 1, stringValue="mnist-b"))
    assert names(by_number) == ["mnist-b"]
    by_name = client.list_experiments(
        filter=where("display_name", "EQUALS", string_value="mnist-b")
    )
    assert names(by_name) == ["mnist-b"] and by_name.total_size == 1
    substring = client.list_experiments(filter=where("display_name", 9, stringValue="MNIST"))
    assert names(substring) == ["mnist-a", "mnist-b"]  # LIKE '%v%', case ignored
    not_b = client.list_experiments(
        filter=where("display_name", "NOT_EQUALS", stringValue="mnist-b")
    )
    assert names(not_b) == ["mnist-a", "fashion-c"]
    some = client.list_experiments(
        filter=where("name", "IN", stringValues={"values": ["mnist-a", "fashion-c"]})
    )
    assert names(some) == ["mnist-a", "fashion-c"]  # v1beta1's key `name` is mapped too
    nothing = client.list_experiments(filter=where("display_name", 1, stringValue="none"))
    assert (nothing.experiments, nothing.total_size, nothing.next_page_token) == (None, None, None)


def test_list_with_a_timestamp_filter(client):
    # filter.go toValue: a timestamp_value becomes Unix seconds, compared with CreatedAtInSec
    client.create_experiment("mnist-a")
    hour_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    after = client.list_experiments(
        filter=where("created_at", "GREATER_THAN", timestampValue=hour_ago)
    )
    before = client.list_experiments(
        filter=where("created_at", "LESS_THAN", timestampValue=hour_ago)
    )
    assert (names(after), names(before)) == (["mnist-a"], [])


def test_sort_and_pages(client):
    for name in ("b", "d", "a", "c", "e"):
        client.create_experiment(name)
    assert names(client.list_experiments()) == ["b", "d", "a", "c", "e"]  # created_at, the default
    assert names(client.list_experiments(sort_by="display_name desc")) == ["e", "d", "c", "b", "a"]
    seen, token, sizes = [], "", set()
    while True:
        page = client.list_experiments(page_size=2, page_token=token, sort_by="name")
        seen += names(page)
        sizes.add(page.total_size)
        token = page.next_page_token
        if not token:
            break
    # list/list.go: the token holds the next page's first row; total_size counts every match
    assert (seen, sizes) == (["a", "b", "c", "d", "e"], {5})
    first = client.list_experiments(page_size=2, sort_by="display_name")
    with pytest.raises(kfp_server_api.ApiException) as mismatch:
        client.list_experiments(page_token=first.next_page_token, sort_by="created_at")
    assert "page token does not match the supplied sort by" in mismatch.value.body


def test_page_size_defaults_to_20_and_stops_at_200(api, client):
    # list/list.go validatePageSize: 0 is 20, over 200 is 200
    for n in range(205):
        api.handle("POST", EXPERIMENTS, {}, {"display_name": f"e{n:03}"})
    assert len(client.list_experiments(page_size=0).experiments) == 20
    answer = client.list_experiments(page_size=1000)
    assert (len(answer.experiments), answer.total_size) == (200, 205) and answer.next_page_token


def test_the_namespace_is_ignored_in_single_user_mode(client):
    # resource_manager.go ReplaceNamespace: standalone KFP keeps every experiment in ""
    created = client.create_experiment("mnist-uploads", namespace="team-mnist")
    assert created.namespace is None
    assert names(client.list_experiments(namespace="someone-else")) == ["mnist-uploads"]
    assert client.get_experiment(experiment_name="mnist-uploads", namespace="x") == created


def test_archive_and_unarchive(client):
    created = client.create_experiment("mnist-uploads")
    assert client.archive_experiment(created.experiment_id) == {}
    assert client.get_experiment(experiment_id=created.experiment_id).storage_state == "ARCHIVED"
    archived = client.list_experiments(filter=where("storage_state", 1, stringValue="ARCHIVED"))
    assert names(archived) == ["mnist-uploads"]
    client.unarchive_experiment(created.experiment_id)
    assert client.get_experiment(experiment_id=created.experiment_id).storage_state == "AVAILABLE"


def test_multi_user_mode_scopes_experiments_to_namespaces(tmp_path):
    from mnistflow.local.kfp_api import LocalKfpApi

    with LocalKfpApi(accept_token="conformance-token", multi_user=True) as api:
        # healthz says multi_user: the client looks for the pod's namespace file (none here)
        assert connect(api).get_kfp_healthz().multi_user is True
        team_a, team_b = connect(api, namespace="team-a"), connect(api, namespace="team-b")
        mine = team_a.create_experiment("mnist-uploads")
        assert mine.namespace == "team-a"
        assert names(team_b.list_experiments()) == []
        assert team_b.create_experiment("mnist-uploads").namespace == "team-b"
        assert names(team_a.list_experiments()) == ["mnist-uploads"]
        # experiment_server.go canAccessExperiment: a namespace is required
        with pytest.raises(kfp_server_api.ApiException) as refused:
            team_a._experiment_api.experiment_service_list_experiments()
        assert refused.value.status == 400
        assert json.loads(refused.value.body)["details"][0]["message"] == (
            "An experiment cannot have an empty namespace in multi-user mode"
        )
