"""Runs through kfp.Client, with the product's compiled pipeline and no executor (a run stays as
the API leaves it): create from the package, get, list with filters, sort and paging, terminate,
archive, delete.

Server code followed (kubeflow/pipelines 2.17.0, backend/src/apiserver): server/run_server.go,
server/api_converter.go toApiRun, resource/resource_manager.go CreateRun and TerminateRun,
storage/run_store.go CreateRun and TerminateRun, model/run.go; backend/api/v2beta1/run.proto."""

from __future__ import annotations

import datetime as dt
import json

import kfp_server_api
import pytest
import yaml

from tests.conformance.conftest import product_arguments

pytestmark = pytest.mark.conformance
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def where(key: str, operation, **value) -> str:
    return json.dumps({"predicates": [{"key": key, "operation": operation, **value}]})


def start(client, spec, name: str = "mnist-0123456789ab", **arguments):
    return client.create_run_from_pipeline_package(
        str(spec),
        arguments=product_arguments(run_key=name, **arguments),
        run_name=name,
        experiment_name="mnist-uploads",
    )


def test_a_run_from_the_product_package(api, client, product_spec):
    started = start(client, product_spec)
    run = client.get_run(started.run_id)
    experiment = client.get_experiment(experiment_name="mnist-uploads")
    assert (run.run_id, run.display_name, run.experiment_id) == (
        started.run_id,
        "mnist-0123456789ab",
        experiment.experiment_id,
    )
    # run_store.go CreateRun: PENDING, and one state_history entry for it
    assert run.state == "PENDING"
    assert [(h.state, h.update_time == run.created_at) for h in run.state_history] == [
        ("PENDING", True)
    ]
    # resource_manager.go CreateRun: scheduled when created; toApiRun: finished at Unix 0
    assert run.scheduled_at == run.created_at and run.finished_at == EPOCH
    assert (run.storage_state, run.service_account) == ("AVAILABLE", "pipeline-runner")
    assert run.runtime_config.parameters == product_arguments()
    # toApiRun gives the spec back
    compiled = yaml.safe_load(product_spec.read_text())
    assert run.pipeline_spec["pipelineInfo"] == compiled["pipelineInfo"]
    assert run.error is None and run.run_details is None
    # experiment_store.go SetLastRunTimestamp
    assert client.get_experiment(experiment_id=run.experiment_id).last_run_created_at == (
        run.created_at
    )


def test_list_runs_with_filters_sort_and_pages(client, product_spec):
    ids = [start(client, product_spec, f"mnist-00000000000{n}").run_id for n in range(3)]
    experiment = client.get_experiment(experiment_name="mnist-uploads")
    listed = client.list_runs(experiment_id=experiment.experiment_id)
    assert [r.run_id for r in listed.runs] == ids and listed.total_size == 3
    # the SDK sends `namespace=` (empty) without an experiment: single-user mode lists them all
    assert [r.run_id for r in client.list_runs().runs] == ids
    named = client.list_runs(filter=where("display_name", 1, stringValue="mnist-000000000001"))
    assert [r.run_id for r in named.runs] == [ids[1]]
    pending = client.list_runs(filter=where("state", "EQUALS", stringValue="PENDING"))
    assert pending.total_size == 3
    # model/run.go: `status` is the v1 condition (ToV1), `experiment_id` the run's experiment
    assert client.list_runs(filter=where("status", 1, stringValue="Pending")).total_size == 3
    newest = client.list_runs(sort_by="created_at desc", page_size=2)
    assert [r.run_id for r in newest.runs] == ids[:0:-1]
    rest = client.list_runs(page_token=newest.next_page_token, page_size=2)
    assert [r.run_id for r in rest.runs] == ids[:1] and rest.next_page_token is None
    in_other = client.list_runs(
        filter=where("experiment_id", "NOT_EQUALS", stringValue=experiment.experiment_id)
    )
    assert in_other.runs is None


def test_terminate_a_run_whose_workflow_never_stops(api, client, product_spec):
    run_id = start(client, product_spec).run_id
    assert client.terminate_run(run_id) == {}
    run = client.get_run(run_id)
    # run_store.go TerminateRun: CANCELING, the history left as it was ("TODO(gkcalat): append
    # CANCELLING to StateHistory"); with no executor here, nothing ends the workflow
    assert run.state == "CANCELING" and [h.state for h in run.state_history] == ["PENDING"]
    # ... and TerminateRun takes PAUSED, PENDING, RUNNING or unspecified runs only
    with pytest.raises(kfp_server_api.ApiException) as again:
        client.terminate_run(run_id)
    assert again.value.status == 400
    assert json.loads(again.value.body)["message"] == (
        f"Failed to terminate a run: Failed to terminate run {run_id}: Invalid input error:"
        f" Failed to terminate a run {run_id}. Row not found"
    )
    # kfp/client/client.py wait_for_run_completion does not stop on CANCELING (or CANCELED)
    with pytest.raises(TimeoutError):
        client.wait_for_run_completion(run_id, timeout=0.2, sleep_duration=0.05)


def test_an_unknown_run(client):
    for call in (client.get_run, client.terminate_run, client.archive_run, client.delete_run):
        with pytest.raises(kfp_server_api.ApiException) as missing:
            call("no-such-run")
        assert missing.value.status == 404
        body = json.loads(missing.value.body)
        assert body["code"] == 5 and body["details"][0]["message"] == "Run no-such-run not found"
    assert json.loads(missing.value.body)["message"] == (
        "Failed to delete a run: Failed to delete run no-such-run as it does not exist: Failed"
        " to fetch run no-such-run: ResourceNotFoundError: Run no-such-run not found"
    )


def test_archive_unarchive_and_delete(client, product_spec):
    run_id = start(client, product_spec).run_id
    experiment_id = client.get_run(run_id).experiment_id
    assert client.archive_run(run_id) == {}
    assert client.get_run(run_id).storage_state == "ARCHIVED"
    client.unarchive_run(run_id)
    assert client.get_run(run_id).storage_state == "AVAILABLE"
    # resource_manager.go ArchiveExperiment archives its runs; UnarchiveRun then refuses
    client.archive_experiment(experiment_id)
    assert client.get_run(run_id).storage_state == "ARCHIVED"
    with pytest.raises(kfp_server_api.ApiException) as refused:
        client.unarchive_run(run_id)
    assert refused.value.status == 400 and json.loads(refused.value.body)["code"] == 9
    assert client.delete_run(run_id) == {}
    with pytest.raises(kfp_server_api.ApiException):
        client.get_run(run_id)


def test_a_run_without_an_experiment_goes_to_default(client, product_spec):
    # resource_manager.go GetValidExperimentNamespacePair: the Default experiment, made when
    # missing (standalone KFP makes it at start-up: main.go)
    run = client.run_pipeline(
        experiment_id="",
        job_name="mnist-0123456789ab",
        pipeline_package_path=str(product_spec),
        params=product_arguments(),
    )
    default = client.get_experiment(experiment_name="Default")
    assert run.experiment_id == default.experiment_id
    assert (
        default.description
        == "All runs created without specifying an experiment will be grouped here."
    )


def test_multi_user_mode_lists_runs_by_namespace(product_spec):
    # run_server.go listRuns: the namespace asked for, or the experiment's; canAccessRun
    # refuses an empty one in multi-user mode
    from mnistflow.local.kfp_api import LocalKfpApi
    from tests.conformance.conftest import TOKEN, connect

    with LocalKfpApi(accept_token=TOKEN, multi_user=True) as api:
        team_a, team_b = connect(api, namespace="team-a"), connect(api, namespace="team-b")
        started = start(team_a, product_spec)
        assert [r.run_id for r in team_a.list_runs().runs] == [started.run_id]
        assert team_b.list_runs().runs is None
        experiment_id = team_a.get_run(started.run_id).experiment_id
        assert team_b.list_runs(experiment_id=experiment_id).total_size == 1  # no authz here
        with pytest.raises(kfp_server_api.ApiException) as refused:
            team_a._run_api.run_service_list_runs()
        assert json.loads(refused.value.body)["details"][0]["message"] == (
            "A run cannot have an empty namespace in multi-user mode"
        )
