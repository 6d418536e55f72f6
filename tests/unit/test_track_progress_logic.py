"""Track-progress rules with in-memory ports: records, announcements, orphans, failed emails,
and the views derived from the record."""

from __future__ import annotations

import pytest

from core import contracts
from core import run_record as rr
from core.run_record import ATTR, RunRecord
from lambdas.logic.ports import PublishFailed
from lambdas.logic.track_progress import (
    ANNOUNCED,
    APPLIED,
    IGNORED,
    ORPHAN,
    STALE,
    TrackProgress,
)
from tests.conftest import load_event
from tests.fakes import InMemoryRunProgress, InMemoryRunSlots, RecordingNotifier, RecordingSignal
from tests.fakes.progress import RUN_KEY, SUCCESSFUL_RUN, event, resent, start_run_record


class World:
    def __init__(self, record: dict | None = None, fail_publishes: int = 0):
        items = {RUN_KEY: record} if record is not None else {}
        self.runs = InMemoryRunProgress(items)
        self.notifier = RecordingNotifier(fail_next=fail_publishes)
        self.slots = InMemoryRunSlots(self.runs.items)
        self.signal = RecordingSignal()
        self.service = TrackProgress(
            self.runs,
            self.notifier,
            "https://kfp.example.com",
            slots=self.slots,
            slot_signal=self.signal,
        )

    def send(self, name_or_event) -> str:
        payload = load_event(name_or_event) if isinstance(name_or_event, str) else name_or_event
        return self.service.handle(payload)["outcome"]

    @property
    def item(self) -> dict:
        return self.runs.items[RUN_KEY]

    @property
    def record(self) -> RunRecord:
        return RunRecord.from_item(self.item)


def test_each_event_writes_its_step_and_status_and_leaves_start_runs_fields():
    # Given a run start-run has recorded
    world = World(start_run_record())
    before = start_run_record()
    # When the training job reports progress and completion
    outcomes = [
        world.send("sagemaker_training_in_progress"),
        world.send("sagemaker_training_completed"),
    ]
    # Then each is applied as one write, under its own attribute
    assert outcomes == [APPLIED, APPLIED]
    assert world.runs.writes == ["record_progress", "record_progress"]
    completed = world.item["progress:training:COMPLETED"]
    assert completed["billable_seconds"] == 810
    assert completed["metrics"]["test:msd"] == 0.0612
    # And start-run's own fields are untouched
    assert {k: world.item[k] for k in before} == before
    assert world.record.steps() == {"training": ("COMPLETED", "2026-11-28T12:20:00Z")}
    assert world.record.overall_status == contracts.STATUS_RUNNING


def test_a_late_in_progress_never_moves_the_step_back():
    world = World(start_run_record())
    world.send("sagemaker_training_completed")
    world.send("sagemaker_training_in_progress")
    assert world.record.steps()["training"][0] == rr.COMPLETED


def test_the_endpoint_is_announced_once_and_the_outcome_claimed():
    world = World(start_run_record())
    # When the endpoint is in service, SageMaker says so twice, and the pipeline then succeeds
    outcomes = [
        world.send("sagemaker_endpoint_in_service"),
        world.send(resent("sagemaker_endpoint_in_service", "another-id")),
        world.send("sagemaker_endpoint_in_service"),
        world.send("pipeline_succeeded"),
    ]
    # Then exactly one ENDPOINT_READY went out
    assert outcomes == [ANNOUNCED, APPLIED, STALE, APPLIED]
    assert world.notifier.kinds() == [contracts.KIND_ENDPOINT_READY]
    assert world.record.outcome == contracts.STATUS_SUCCEEDED
    assert world.record.overall_status == contracts.STATUS_SUCCEEDED


def test_a_failure_after_success_is_recorded_but_not_announced_again():
    world = World(start_run_record())
    world.send("sagemaker_endpoint_in_service")
    assert world.send("sagemaker_endpoint_failed") == APPLIED
    assert world.notifier.kinds() == [contracts.KIND_ENDPOINT_READY]


def test_an_event_without_a_run_record_is_an_orphan_and_announces_nothing():
    world = World(record=None)
    assert world.send("sagemaker_training_in_progress") == ORPHAN
    assert world.send("sagemaker_endpoint_in_service") == ORPHAN
    assert world.notifier.published == []
    assert "progress:endpoint:IN_SERVICE" in world.item


def test_bad_input_writes_nothing():
    world = World(start_run_record())
    for name in (
        "sagemaker_unknown_detail_type",
        "sagemaker_training_without_name",
        "sagemaker_training_unknown_status",
        "sagemaker_endpoint_outside_product",
    ):
        assert world.send(name) == IGNORED
    assert world.runs.writes == []


def test_a_failed_publish_gives_the_claim_back_and_a_redelivery_announces():
    # Given SNS fails the first publish (refused: nothing was sent)
    world = World(start_run_record(), fail_publishes=1)
    # When the endpoint event arrives, the email fails and the error goes back to EventBridge
    with pytest.raises(PublishFailed):
        world.send("sagemaker_endpoint_in_service")
    # Then the progress and the outcome are kept, and the announcement is given back
    assert "progress:endpoint:IN_SERVICE" in world.item
    assert world.record.outcome == contracts.STATUS_SUCCEEDED
    assert ATTR.announced not in world.item
    assert world.runs.writes == [
        "record_progress",
        "decide_outcome",
        "claim_announcement",
        "release_announcement",
    ]
    # When EventBridge delivers it again
    assert world.send("sagemaker_endpoint_in_service") == ANNOUNCED
    # Then it is announced once, and further copies are stale
    assert world.send("sagemaker_endpoint_in_service") == STALE
    assert world.notifier.kinds() == [contracts.KIND_ENDPOINT_READY]
    assert world.record.outcome == contracts.STATUS_SUCCEEDED


def test_run_failed_is_announced_once_for_the_first_failure():
    world = World(start_run_record())
    world.send("sagemaker_training_failed")
    world.send("pipeline_failed")
    assert world.notifier.kinds() == [contracts.KIND_RUN_FAILED]
    assert world.record.overall_status == contracts.STATUS_FAILED


# -- views -----------------------------------------------------------------------------------


def test_views_of_a_whole_run():
    world = World(start_run_record())
    for name in reversed(SUCCESSFUL_RUN):
        world.send(name)
    statuses = world.record.steps()
    assert statuses == {
        "training": ("COMPLETED", "2026-11-28T12:20:00Z"),
        "transform": ("COMPLETED", "2026-11-28T12:30:00Z"),
        "endpoint": ("IN_SERVICE", "2026-11-28T12:40:00Z"),
        "pipeline": ("SUCCEEDED", "2026-11-28T12:41:00Z"),
    }
    times = [p.entry.at for p in world.record.progress]
    assert times == sorted(times) and len(times) == len(SUCCESSFUL_RUN)
    assert len(world.record.progress) <= rr.PROGRESS_MAX_ATTRIBUTES


def test_overall_status_before_any_progress_is_start_runs():
    assert RunRecord.from_item(start_run_record()).overall_status == contracts.STATUS_RUN_STARTED


def test_step_status_ties_are_broken_by_order():
    item = {
        "run_key": RUN_KEY,
        "progress:endpoint:COMPLETED": {"ord": "2026-01-01T00:00:00Z|a", "at": "x"},
        "progress:endpoint:IN_SERVICE": {"ord": "2026-01-01T00:00:01Z|b", "at": "y"},
    }
    assert RunRecord.from_item(item).steps() == {"endpoint": ("IN_SERVICE", "y")}


def test_the_progress_bound_is_steps_times_statuses():
    assert rr.PROGRESS_MAX_ATTRIBUTES == len(contracts.PROGRESS_STEPS) * len(rr.STATUS_RANK)
    assert contracts.PIPELINE_STEP in contracts.PROGRESS_STEPS


def test_orphan_detection_needs_the_dataset():
    assert not RunRecord.from_item(start_run_record()).is_orphan
    assert RunRecord.from_item({"run_key": RUN_KEY, "progress:training:FAILED": {}}).is_orphan


def test_a_pipeline_event_for_a_foreign_run_key_is_not_ours():
    payload = event("pipeline_succeeded")
    payload["detail"]["run_key"] = "someone-else"
    world = World(start_run_record())
    assert world.send(payload) == IGNORED
    assert world.runs.writes == []


# -- the evaluate step and the quality gate -------------------------------------------------


def test_the_evaluation_is_recorded_and_the_endpoint_email_gives_the_accuracy():
    world = World(start_run_record(run_settings={"k": 32}, overridden=["k"]))
    assert world.send("pipeline_model_evaluated") == APPLIED
    assert world.record.accuracy == pytest.approx(0.7842)
    assert world.record.weakest_digits()[0] == (5, 0.52)
    world.send("sagemaker_endpoint_in_service")
    [note] = world.notifier.published
    assert note.kind == contracts.KIND_ENDPOINT_READY
    assert "Accuracy:  78.4% on the held-out test split; weakest digits: 5 (52%)" in note.message
    assert "k=32 (from the upload)" in note.message


def test_a_model_under_the_gate_ends_model_rejected_with_one_email_saying_what_to_try():
    world = World(start_run_record(run_settings={"k": 10}))
    # The evaluation event, then the pipeline's final state (failed at evaluate, rejected)
    assert world.send("pipeline_model_rejected") == ANNOUNCED
    assert world.send("pipeline_failed_model_rejected") == APPLIED
    assert world.record.outcome == contracts.STATUS_MODEL_REJECTED
    [note] = world.notifier.published
    assert note.kind == contracts.KIND_MODEL_REJECTED
    assert "accuracy 41.23% under the 60.00% gate" in note.subject
    assert "Gate:      60.00% (the stack's min_accuracy)" in note.message
    assert "x-amz-meta-k: 20" in note.message and "nothing was deployed" in note.message


def test_the_final_state_alone_says_model_rejected_in_any_order():
    world = World(start_run_record())
    world.send("pipeline_failed_model_rejected")
    world.send("pipeline_model_rejected")
    assert world.record.outcome == contracts.STATUS_MODEL_REJECTED
    assert world.notifier.kinds() == [contracts.KIND_MODEL_REJECTED]


def test_status_shows_the_evaluated_accuracy_the_gate_and_the_weakest_digits():
    from mnistflow.status import describe_run, describe_runs

    # Given a run whose model the evaluate step scored, then whose endpoint went in service
    world = World(start_run_record(run_settings={"k": 32}))
    world.send("pipeline_model_evaluated")
    world.send("sagemaker_endpoint_in_service")
    # When status lists it and shows it
    [line] = describe_runs([world.record]).splitlines()
    detail = describe_run(world.record)
    # Then both give the accuracy; the detail names the gate and the weakest digits
    assert "acc=0.784" in line
    assert (
        "  accuracy  0.7842 on the test split (gate 0.60); weakest digits 5 (52%), 8 (58%), 2 (66%)"
        in detail
    )
    assert "  settings  k=32" in detail


def test_the_timeline_is_in_causal_order_within_one_second():
    from mnistflow.status import describe_run

    # Given a training job and a transform whose events share their seconds (the local stack's
    # SageMaker, or a fast job on AWS), delivered in any order
    world = World(start_run_record())
    same_second = "2026-11-28T12:20:00Z"
    for name in (
        "sagemaker_transform_completed",
        "sagemaker_training_completed",
        "sagemaker_transform_in_progress",
        "sagemaker_training_in_progress",
    ):
        payload = load_event(name)
        payload["time"] = same_second
        world.send(payload)
    # When status shows the run
    timeline = describe_run(world.record).split("  timeline\n")[1].splitlines()
    # Then each step's IN_PROGRESS comes before its COMPLETED, and training before transform
    progress = [line.split(maxsplit=1)[1] for line in timeline if same_second in line]
    assert [p.split(" (")[0] for p in progress] == [
        "training IN_PROGRESS",
        "training COMPLETED",
        "transform IN_PROGRESS",
        "transform COMPLETED",
    ]


@pytest.mark.parametrize(
    ("error", "advice"),
    [
        (
            "DatasetError: s3://b/incoming/mnist.npz: missing arrays x_test, y_test",
            "The dataset file is the problem: fix it and upload it again under incoming/.",
        ),
        (
            "DatasetError: s3://b/incoming/big.npz: decompresses to more than 2147483648 bytes,"
            " the limit (max_dataset_bytes); ...",
            "The file is over this stack's max_dataset_bytes: raise it in cdk.json's context and"
            " deploy, then: mnistflow rerun mnist-",
        ),
        (
            "ClientError: An error occurred (AccessDenied) when calling GetObject",
            "To try again after fixing the cause: mnistflow rerun mnist-",
        ),
    ],
)
def test_a_failed_preprocess_says_what_would_get_past_it(error, advice):
    # Given a run that failed at preprocess: for the file itself, for its size, or for access
    world = World(start_run_record())
    payload = load_event("pipeline_failed")
    payload["detail"]["error"] = error
    world.send(payload)
    [note] = world.notifier.published
    # Then the email says what to change; a rerun only where a rerun could get past it
    assert advice in note.message
    if "fix it and upload" in advice:
        assert "mnistflow rerun" not in note.message


@pytest.mark.parametrize("emulator_url", ["", "http://127.0.0.1:4566"])
def test_the_endpoint_email_is_true_for_where_the_run_happened(emulator_url):
    # Given a function on AWS, or on the local stack (its clients call the emulator)
    world = World(start_run_record())
    world.service = TrackProgress(
        world.runs,
        world.notifier,
        "https://kfp.example.com",
        emulator_url=emulator_url,
        slots=world.slots,
        slot_signal=world.signal,
    )
    # When the endpoint is in service
    world.send("sagemaker_endpoint_in_service")
    [note] = world.notifier.published
    # Then on AWS it says the endpoint bills and how to delete it; locally, that nothing bills,
    # and its commands name the emulator so that they work as printed
    if emulator_url:
        assert "nothing is billed" in note.message and "bills by the hour" not in note.message
        assert (
            f"aws sagemaker-runtime invoke-endpoint --endpoint-url {emulator_url}" in note.message
        )
        assert f"mnistflow predict --endpoint-url {emulator_url} --endpoint" in note.message
    else:
        assert "bills by the hour" in note.message and "--endpoint-url" not in note.message
        assert "aws sagemaker delete-endpoint --region us-east-1" in note.message
