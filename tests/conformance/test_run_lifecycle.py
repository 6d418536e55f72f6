"""Runs that execute: the local stack's executor runs what kfp.Client submits with kfp.local, and
the states are the server's (run.proto RuntimeState; a state_history entry per change,
storage/run_store.go UpdateRun; a terminated run CANCELING then FAILED, resource_manager.go
ReportWorkflowResource with the phase Argo gives a workflow whose deadline was set to 0)."""

from __future__ import annotations

import pytest

from core import kfp
from tests.conformance.conftest import connect, eventually, product_arguments

pytestmark = pytest.mark.conformance
WAIT = {"timeout": 60, "sleep_duration": 0.05}


def test_a_run_succeeds_and_wait_for_run_completion_returns_it(running_api, tiny_spec):
    client = connect(running_api)
    started = client.create_run_from_pipeline_package(
        str(tiny_spec), arguments={"a": 1}, experiment_name="tiny"
    )
    done = client.wait_for_run_completion(started.run_id, **WAIT)
    assert done.state == "SUCCEEDED"
    # RunPipelineResult's own wait (5 s between polls) returns at once on a finished run
    assert started.wait_for_run_completion(timeout=5).state == "SUCCEEDED"
    assert [h.state for h in done.state_history] == ["PENDING", "RUNNING", "SUCCEEDED"]
    assert done.finished_at == done.state_history[-1].update_time > done.created_at


def test_a_run_fails_without_a_reason_on_the_run(running_api, tiny_spec):
    client = connect(running_api)
    started = client.create_run_from_pipeline_package(
        str(tiny_spec), arguments={"a": 1, "fail_over": 2}, experiment_name="tiny"
    )
    done = client.wait_for_run_completion(started.run_id, **WAIT)
    assert [h.state for h in done.state_history] == ["PENDING", "RUNNING", "FAILED"]
    # run.proto's `error` is for a run the server could not read; the server sets none here
    assert done.error is None and all(h.error is None for h in done.state_history)
    assert running_api.runs[started.run_id]["failure"] == "check: ValueError: total 3 is over 2"


def test_terminating_a_running_run_ends_it_failed(running_api, tiny_spec):
    client = connect(running_api)
    started = client.create_run_from_pipeline_package(
        str(tiny_spec), arguments={"a": 1, "hold_seconds": 600}, experiment_name="tiny"
    )
    eventually(lambda: client.get_run(started.run_id).state, lambda s: s == "RUNNING")
    client.terminate_run(started.run_id)
    # wait_for_run_completion stops on FAILED (kfp.SDK_WAIT_FINISH_STATES), not on CANCELING
    done = client.wait_for_run_completion(started.run_id, **WAIT)
    assert done.state.lower() in kfp.SDK_WAIT_FINISH_STATES
    assert [h.state for h in done.state_history] == ["PENDING", "RUNNING", "CANCELING", "FAILED"]


def test_terminating_a_queued_run_ends_it_before_it_starts(running_api, tiny_spec):
    client = connect(running_api)
    first = client.create_run_from_pipeline_package(
        str(tiny_spec), arguments={"a": 1, "hold_seconds": 600}, experiment_name="tiny"
    )
    queued = client.create_run_from_pipeline_package(
        str(tiny_spec), arguments={"a": 2}, experiment_name="tiny"
    )
    eventually(lambda: client.get_run(first.run_id).state, lambda s: s == "RUNNING")
    client.terminate_run(queued.run_id)
    run = client.get_run(queued.run_id)
    assert [h.state for h in run.state_history] == ["PENDING", "CANCELING", "FAILED"]
    client.terminate_run(first.run_id)
    assert client.wait_for_run_completion(first.run_id, **WAIT).state == "FAILED"


def test_the_product_pipeline_runs_in_the_local_runner(tmp_path, product_spec):
    """A run the SDK starts goes through the same executor as start-run's: here the product's
    pipeline on the AWS emulator, with a dataset that is not there, so preprocess fails."""
    from mnistflow.local.emulator import AwsEmulator
    from mnistflow.local.kfp_api import LocalKfpApi
    from mnistflow.local.provision import LocalNames, provision
    from mnistflow.local.run_executor import LocalRunExecutor
    from tests.conformance.conftest import TOKEN

    bucket = "mnistflow-conformance"
    with AwsEmulator() as emulator:
        resources = provision(emulator.client, LocalNames(data_bucket=bucket), kfp_token=TOKEN)
        executor = LocalRunExecutor(emulator.environment(), tmp_path)
        with LocalKfpApi(accept_token=TOKEN, executor=executor) as api:
            client = connect(api)
            arguments = product_arguments(
                dataset_uri=f"s3://{bucket}/incoming/missing.pkl.gz",
                region=emulator.region,
                sagemaker_role_arn=resources.sagemaker_role_arn,
            )
            started = client.create_run_from_pipeline_package(
                str(product_spec), arguments=arguments, run_name="mnist-0123456789ab"
            )
            done = client.wait_for_run_completion(started.run_id, **WAIT)
    assert [h.state for h in done.state_history] == ["PENDING", "RUNNING", "FAILED"]
    assert api.runs[started.run_id]["failure"].startswith("preprocess: ")
