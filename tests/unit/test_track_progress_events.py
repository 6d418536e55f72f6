"""Reading EventBridge events into progress events: shapes AWS documents, the pipeline's own
event, the watcher's, and the bad inputs the issue lists."""

from __future__ import annotations

import pytest

from core import contracts
from core import run_record as rr
from lambdas.logic.progress_events import Ignored, ProgressEvent, parse_event
from tests.conftest import load_event
from tests.fakes.progress import RUN_KEY, event

ARN_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012"


def parsed(name: str, **envelope) -> ProgressEvent:
    result = parse_event(event(name, **envelope))
    assert isinstance(result, ProgressEvent), result
    return result


@pytest.mark.parametrize(
    ("name", "step", "status", "normalized", "announces"),
    [
        ("sagemaker_training_in_progress", "training", "InProgress", rr.IN_PROGRESS, ""),
        ("sagemaker_training_completed", "training", "Completed", rr.COMPLETED, ""),
        ("sagemaker_training_failed", "training", "Failed", rr.FAILED, "FAILED"),
        ("sagemaker_transform_in_progress", "transform", "InProgress", rr.IN_PROGRESS, ""),
        ("sagemaker_transform_completed", "transform", "Completed", rr.COMPLETED, ""),
        ("sagemaker_transform_failed", "transform", "Failed", rr.FAILED, "FAILED"),
        ("sagemaker_endpoint_creating", "endpoint", "CREATING", rr.IN_PROGRESS, ""),
        ("sagemaker_endpoint_in_service", "endpoint", "IN_SERVICE", rr.IN_SERVICE, "SUCCEEDED"),
        ("sagemaker_endpoint_failed", "endpoint", "FAILED", rr.FAILED, "FAILED"),
        ("pipeline_succeeded", "pipeline", "COMPLETE", rr.SUCCEEDED, "SUCCEEDED"),
        ("pipeline_failed", "preprocess", "FAILED", rr.FAILED, "FAILED"),
    ],
)
def test_each_documented_event_becomes_a_progress_event(name, step, status, normalized, announces):
    # Given an event payload in the shape AWS (or the exit handler) sends
    # When it is parsed
    result = parsed(name)
    # Then it names the run, the step, both spellings of the status and what it announces
    assert result.run_key == RUN_KEY
    assert (result.step, result.status, result.normalized) == (step, status, normalized)
    assert result.announces == announces
    assert result.ord == f"{result.time}|{result.event_id}"
    assert result.rank == rr.STATUS_RANK[normalized]
    assert result.attribute == f"progress:{step}:{normalized}"


def test_completed_training_keeps_billable_seconds_and_final_metrics():
    result = parsed("sagemaker_training_completed")
    assert result.billable_seconds == 810
    assert result.metrics == {"test:msd": 0.0612, "train:progress": 100.0}
    assert result.resource_name == f"{RUN_KEY}-train"
    assert result.arn.endswith(f":training-job/{RUN_KEY}-train")
    entry = result.entry()
    assert entry.billable_seconds == 810 and entry.metrics == result.metrics
    assert entry.job_name == f"{RUN_KEY}-train"


def test_failed_training_keeps_sagemakers_failure_reason():
    result = parsed("sagemaker_training_failed")
    assert result.failure_reason.startswith("AlgorithmError: Customer Error")
    assert result.entry().failure_reason == result.failure_reason


def test_the_pipeline_failure_is_recorded_on_the_failed_step_with_its_error():
    result = parsed("pipeline_failed")
    assert result.step == "preprocess"
    assert "not an MNIST dataset" in result.error
    assert result.entry().error == result.error
    assert result.kfp_run and result.dataset_uri.startswith("s3://")


@pytest.mark.parametrize(
    "state",
    [
        "COMPLETE",  # KFP backends >= 2.14.0 (MLMD's state; core.kfp cites the sources)
        "SUCCEEDED",  # kfp.local, Vertex
        "complete",
    ],
)
def test_every_spelling_of_success_announces_the_endpoint(state):
    payload = event("pipeline_succeeded")
    payload["detail"]["state"] = state
    result = parse_event(payload)
    assert (result.step, result.normalized) == (contracts.PIPELINE_STEP, rr.SUCCEEDED)
    assert result.announces == contracts.STATUS_SUCCEEDED


@pytest.mark.parametrize(
    ("state", "normalized"),
    [("FAILED", rr.FAILED), ("CANCELED", rr.CANCELED), ("CANCELLED", rr.CANCELED)],
)
def test_a_failed_or_cancelled_pipeline_is_a_failure_that_announces(state, normalized):
    # Given the exit handler reports a failure or a cancellation, and no failed step
    payload = event("pipeline_failed")
    payload["detail"].update(state=state, failed_step="", error="")
    # Then it is a final failure of the run as a whole
    result = parse_event(payload)
    assert isinstance(result, ProgressEvent)
    assert (result.step, result.normalized) == (contracts.PIPELINE_STEP, normalized)
    assert result.announces == contracts.STATUS_FAILED


@pytest.mark.parametrize("state", ["RUNNING", "SYSTEM_ERROR", "CACHED"])
def test_an_unknown_final_state_is_recorded_as_it_came_and_announces_nothing(state):
    # Given a state this product does not know by name (KFP versions differ)
    payload = event("pipeline_failed")
    payload["detail"].update(state=state, failed_step="preprocess")
    result = parse_event(payload)
    # Then it is kept, with its spelling, on the pipeline, and is neither success nor failure
    assert (result.step, result.normalized, result.status) == ("pipeline", rr.UNKNOWN, state)
    assert result.entry().event_status == state
    assert result.announces == ""


@pytest.mark.parametrize(
    "tags",
    [
        {contracts.RUN_KEY_TAG: RUN_KEY},
        [{"Key": "other", "Value": "x"}, {"Key": contracts.RUN_KEY_TAG, "Value": RUN_KEY}],
    ],
    ids=["map", "list"],
)
def test_the_run_key_tag_is_read_in_either_shape(tags):
    # Given an endpoint with a product-wide name, so only its tag names the run
    payload = event("sagemaker_endpoint_in_service")
    payload["detail"].update(EndpointName="mnist-production", Tags=tags)
    result = parse_event(payload)
    assert isinstance(result, ProgressEvent)
    assert result.run_key == RUN_KEY


def test_without_tags_the_run_key_comes_from_the_name():
    payload = load_event("sagemaker_endpoint_creating")
    assert "Tags" not in payload["detail"]
    assert parsed("sagemaker_endpoint_creating").run_key == RUN_KEY


def test_api_spelling_of_endpoint_statuses_is_accepted():
    payload = event("sagemaker_endpoint_in_service")
    payload["detail"]["EndpointStatus"] = "InService"
    result = parse_event(payload)
    assert isinstance(result, ProgressEvent)
    assert result.normalized == rr.IN_SERVICE and result.announces == "SUCCEEDED"


@pytest.mark.parametrize(
    ("name", "kind", "words"),
    [
        ("sagemaker_endpoint_outside_product", Ignored.NOT_OURS, "mnist-demo-endpoint"),
        ("sagemaker_unknown_detail_type", Ignored.BAD_INPUT, "SageMaker Model State Change"),
        ("sagemaker_training_without_name", Ignored.BAD_INPUT, "no TrainingJobName"),
        ("sagemaker_training_unknown_status", Ignored.BAD_INPUT, "'Exploding'"),
    ],
)
def test_bad_or_foreign_events_are_ignored_with_a_reason_a_person_can_act_on(name, kind, words):
    result = parse_event(load_event(name))
    assert isinstance(result, Ignored)
    assert result.kind == kind
    assert words in result.problem
    assert result.received["id"] == load_event(name)["id"]


def test_the_unknown_status_message_lists_the_known_ones():
    result = parse_event(load_event("sagemaker_training_unknown_status"))
    assert isinstance(result, Ignored)
    assert "InProgress" in result.problem and "Completed" in result.problem


@pytest.mark.parametrize(
    "payload",
    [[], {"detail-type": "x"}, {**load_event("pipeline_succeeded"), "time": ""}],
    ids=["not-an-object", "no-detail", "no-time"],
)
def test_malformed_envelopes_are_bad_input(payload):
    result = parse_event(payload)
    assert isinstance(result, Ignored) and result.kind == Ignored.BAD_INPUT


def test_a_pipeline_event_without_a_run_key_or_state_is_bad_input():
    no_key = event("pipeline_succeeded")
    no_key["detail"]["run_key"] = ""
    no_state = event("pipeline_succeeded")
    del no_state["detail"]["state"]
    assert parse_event(no_key).kind == Ignored.BAD_INPUT  # type: ignore[union-attr]
    assert parse_event(no_state).kind == Ignored.BAD_INPUT  # type: ignore[union-attr]


def test_the_watchers_events_are_accepted():
    # Given the local stand-in for SageMaker's events, describing a finished job from moto
    from datetime import UTC, datetime

    from mnistflow.local.watcher import SageMakerWatcher

    delivered: list[dict] = []

    class Emulator:
        def list_training_jobs(self):
            return {"TrainingJobSummaries": [{"TrainingJobName": f"{RUN_KEY}-train"}]}

        def describe_training_job(self, TrainingJobName):
            return {
                "TrainingJobName": TrainingJobName,
                "TrainingJobArn": f"{ARN_PREFIX}:training-job/{TrainingJobName}",
                "TrainingJobStatus": "Completed",
                "CreationTime": datetime(2026, 11, 28, 12, 5, tzinfo=UTC),
                "ResponseMetadata": {},
            }

        def list_transform_jobs(self):
            return {"TransformJobSummaries": []}

        def list_endpoints(self):
            return {"Endpoints": []}

        def list_tags(self, ResourceArn):
            return {"Tags": [{"Key": contracts.RUN_KEY_TAG, "Value": RUN_KEY}]}

    watcher = SageMakerWatcher(
        Emulator(), account="123456789012", region="us-east-1", deliver=delivered.append
    )
    # When it polls
    watcher.poll()
    # Then each event it emits parses (InProgress first, as SageMaker would have sent it)
    results = [parse_event(e) for e in delivered]
    assert [(r.step, r.normalized) for r in results] == [  # type: ignore[union-attr]
        ("training", rr.IN_PROGRESS),
        ("training", rr.COMPLETED),
    ]


def test_the_entry_depends_on_the_event_alone():
    assert (
        parsed("sagemaker_training_completed").entry()
        == parsed("sagemaker_training_completed").entry()
    )
