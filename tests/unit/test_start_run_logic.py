"""The start-run domain with in-memory ports: claims, checks, retries, notifications."""

from __future__ import annotations

from datetime import datetime

import pytest

from core import contracts
from core.run_record import DatasetRef
from lambdas.logic.notifications import data_rejected, run_could_not_start, subject_line
from lambdas.logic.ports import KfpCallFailed, KfpExperiment, KfpRun, PublishFailed
from lambdas.logic.start_run import RetryPolicy, StartRun, StartRunFailed
from tests.conftest import load_event
from tests.fakes import (
    FakeClock,
    InMemoryRuns,
    InMemoryRunSlots,
    RecordingNotifier,
    RecordingSignal,
    ScriptedKfp,
    StaticMetadata,
)
from tests.fakes.settings import function_settings

BUCKET = "mnistflow-data-123456789012"
SPEC = {"pipelineInfo": {"name": "mnist"}, "root": {}}


def settings(**overrides):
    values = dict(
        kfp_experiment_name="mnist-uploads",
        train_instance_type="ml.m5.xlarge",
        endpoint_instance_type="ml.t2.medium",
        data_bucket_name=BUCKET,
        kfp_ui_url="https://kfp.example.com",
    )
    values.update(overrides)
    return function_settings(contracts.START_RUN, **values)


class World:
    def __init__(self, seconds_left: float = 60.0, **setting_overrides):
        self.clock = FakeClock()
        self.runs = InMemoryRuns()
        self.notifier = RecordingNotifier()
        self.kfp = ScriptedKfp()
        self.uploads = StaticMetadata()
        self.slots = InMemoryRunSlots(self.runs.items)
        self.signal = RecordingSignal()
        self.seconds_left = seconds_left
        self.service = StartRun(
            runs=self.runs,
            notifier=self.notifier,
            kfp=self.kfp,
            pipeline_spec=lambda: SPEC,
            settings=settings(**setting_overrides),
            uploads=self.uploads,
            slots=self.slots,
            slot_signal=self.signal,
            connection_hint="check the access entry",
            sleep=self.clock.sleep,
            clock=self.clock.time,
            now=lambda: datetime.fromtimestamp(self.clock.now).isoformat() + "Z",
            rng=lambda: 1.0,
        )

    def handle(self, event_name: str = "s3_put", request_id: str = "request-1"):
        def left() -> float:
            return self.seconds_left - (self.clock.now - 1_700_000_000.0)

        return self.service.handle_notification(load_event(event_name), left, request_id)

    def lambda_invokes(self, event_name: str = "s3_put", request_id: str = "request-1"):
        """As Lambda runs an asynchronous event: up to three attempts with one request id.
        Returns the outcome, or "failure queue" when every attempt raised."""
        for _attempt in range(contracts.LAMBDA_ASYNC_ATTEMPTS):
            try:
                return self.handle(event_name, request_id)
            except StartRunFailed:
                continue
        return "failure queue"


def key_of(event_name: str = "s3_put") -> str:
    from urllib.parse import unquote_plus

    obj = load_event(event_name)["Records"][0]["s3"]["object"]
    return contracts.run_key(BUCKET, unquote_plus(obj["key"]), obj.get("versionId") or obj["eTag"])


def failure(kind: str, status: int | None = None) -> KfpCallFailed:
    return KfpCallFailed(kind, f"injected {kind}", status)


def test_backoff_doubles_up_to_the_cap():
    policy = RetryPolicy()
    assert [policy.delay_seconds(a, lambda: 1.0) for a in range(1, 6)] == [1, 2, 4, 8, 8]
    assert policy.delay_seconds(3, lambda: 0.25) == 1.0  # full jitter scales the ceiling


def test_upload_creates_experiment_and_run_and_announces_it():
    # Given an empty KFP
    world = World()

    # When an upload is handled
    outcome = world.handle()

    # Then an experiment and one run exist, the record is RUN_STARTED, RUN_STARTED is sent
    key = key_of()
    assert outcome["started"] == [key]
    assert world.kfp.calls == ["find_experiments", "create_experiment", "find_runs", "create_run"]
    assert world.kfp.created[0]["pipeline_spec"] is SPEC
    assert world.runs.items[key]["status"] == contracts.STATUS_RUN_STARTED
    assert world.runs.items[key]["kfp_run_url"].startswith(
        "https://kfp.example.com/#/runs/details/"
    )
    assert world.notifier.kinds() == [contracts.KIND_RUN_STARTED]


def test_without_a_ui_address_the_link_is_empty():
    world = World(kfp_ui_url="")
    world.handle()
    assert world.runs.items[key_of()]["kfp_run_url"] == ""
    assert "(KFP UI address not configured)" in world.notifier.published[0].message


def test_existing_run_with_the_run_key_is_reused_not_recreated():
    # Given KFP already holds a run named by the run key (created earlier, answer lost)
    world = World()
    world.kfp.experiments["exp-9"] = KfpExperiment("exp-9", "mnist-uploads")
    world.kfp.runs.append(KfpRun("run-old", key_of(), "exp-9", "2026-01-01"))
    world.kfp.runs.append(KfpRun("run-newer", key_of(), "exp-9", "2026-02-01"))

    # When the upload is handled
    outcome = world.handle()

    # Then no run is created and the oldest existing one is recorded
    assert outcome["reused"] == [key_of()]
    assert "create_run" not in world.kfp.calls
    assert world.runs.items[key_of()]["kfp_run_id"] == "run-old"


def test_lost_create_response_is_found_on_the_retry():
    world = World()
    world.kfp.lose_create_response = 1
    outcome = world.handle()
    assert outcome["reused"] == [key_of()]
    assert len(world.kfp.runs) == 1 and world.clock.sleeps == [1.0]


@pytest.mark.parametrize(
    ("kind", "tries"),
    [
        (KfpCallFailed.TRANSIENT, 4),
        (KfpCallFailed.AUTH, 2),
        (KfpCallFailed.NOT_FOUND, 2),
        (KfpCallFailed.PERMANENT, 1),
    ],
)
def test_retries_depend_on_the_kind_of_failure(kind, tries):
    # Given a KFP that always fails the same way
    world = World()
    world.kfp.failures = [("*", failure(kind))] * 100

    # When an upload is handled, Then the invocation raises after the policy's tries
    with pytest.raises(StartRunFailed):
        world.handle()
    assert world.kfp.calls.count("find_experiments") == tries
    assert world.clock.sleeps == [1.0, 2.0, 4.0][: tries - 1]
    item = world.runs.items[key_of()]
    if kind == KfpCallFailed.PERMANENT:
        # And an error no retry heals is given up at once: START_FAILED and one RUN_FAILED
        assert item["status"] == contracts.STATUS_START_FAILED
        [note] = world.notifier.published
        assert note.kind == contracts.KIND_RUN_FAILED and "check the access entry" in note.message
    else:
        # And otherwise Lambda's retry takes it up: still ACCEPTED, the reason noted, no email
        assert item["status"] == contracts.STATUS_ACCEPTED
        assert f"attempt 1 of 3: injected {kind}" in item["reason"]
        assert world.notifier.published == []


def test_the_start_is_given_up_at_lambdas_last_attempt_with_one_email():
    # Given a KFP that keeps failing
    world = World()
    world.kfp.failures = [("*", failure(KfpCallFailed.TRANSIENT))] * 100

    # When Lambda runs the event three times (one request id), Then it ends on the failure
    # queue, START_FAILED, with exactly one RUN_FAILED email, sent at the last attempt
    assert world.lambda_invokes() == "failure queue"
    item = world.runs.items[key_of()]
    assert item["status"] == contracts.STATUS_START_FAILED and item["claim_attempts"] == 3
    [note] = world.notifier.published
    assert note.kind == contracts.KIND_RUN_FAILED and "Attempts: 3" in note.message
    assert world.kfp.created == []


def test_a_retry_after_a_crash_finishes_the_start():
    # Given an invocation that claimed the key and died before starting the run
    world = World()
    dataset = DatasetRef(BUCKET, "incoming/mnist.pkl.gz", "v", "e", 10)
    assert world.runs.claim(
        key_of(), dataset, "2023-11-14T22:13:20Z", 2_000_000_000, "request-1"
    ).won

    # When Lambda's retry comes (same request id, the lease still running)
    outcome = world.handle(request_id="request-1")

    # Then it takes its claim back and starts the run: never swallowed as a duplicate
    assert outcome["started"] == [key_of()] and world.runs.items[key_of()]["claim_attempts"] == 2
    assert world.notifier.kinds() == [contracts.KIND_RUN_STARTED]


def test_retrying_stops_when_lambda_time_runs_out():
    # Given 6 s left (5 s are kept to record the failure) and a KFP that keeps failing
    world = World(seconds_left=6.0)
    world.kfp.failures = [("*", failure(KfpCallFailed.TRANSIENT))] * 10

    # When an upload is handled
    with pytest.raises(StartRunFailed):
        world.handle()

    # Then it stops early, keeping time to record the failure for Lambda's retry
    assert world.clock.sleeps == [1.0]
    assert "Lambda time running out" in world.runs.items[key_of()]["reason"]


def test_duplicate_delivery_stops_at_the_claim():
    world = World()
    world.handle()
    outcome = world.handle()
    assert outcome["duplicates"] == [key_of()]
    assert len(world.kfp.runs) == 1 and len(world.notifier.published) == 1


def test_a_concurrent_delivery_inside_the_lease_stops():
    # Given a claim held by an invocation that is still running
    world = World()
    dataset = DatasetRef(BUCKET, "incoming/mnist.pkl.gz", "v", "e", 10)
    world.runs.claim(key_of(), dataset, "2023-11-14T22:13:20Z", 2_000_000_000, "request-1")

    # When another delivery of the same upload arrives (another request id), Then it does
    # not start anything: the holder, or its retries, finish
    assert world.handle(request_id="request-2")["duplicates"] == [key_of()]
    assert world.kfp.calls == []


def test_start_failed_is_reclaimed_by_the_next_delivery():
    world = World()
    world.kfp.failures = [("*", failure(KfpCallFailed.PERMANENT))]
    with pytest.raises(StartRunFailed):
        world.handle(request_id="request-1")
    # (Lambda's retries of the given-up invocation keep failing, so it reaches the queue)
    with pytest.raises(StartRunFailed):
        world.handle(request_id="request-1")
    assert world.handle(request_id="redrive-1")["started"] == [key_of()]
    assert world.runs.items[key_of()]["start_attempts"] == 2
    assert world.notifier.kinds() == [contracts.KIND_RUN_FAILED, contracts.KIND_RUN_STARTED]


@pytest.mark.parametrize(
    ("event_name", "reason"),
    [
        ("s3_put_empty", "empty (0 bytes)"),
        ("s3_put_too_large", "over the limit"),
        ("s3_put_unsupported_suffix", "unsupported file type"),
    ],
)
def test_cheap_checks_reject_without_calling_kfp(event_name, reason):
    world = World()
    outcome = world.handle(event_name)
    assert outcome["rejected"] == [key_of(event_name)]
    assert reason in world.runs.items[key_of(event_name)]["reason"]
    assert world.kfp.calls == [] and world.notifier.kinds() == [contracts.KIND_DATA_REJECTED]


def test_parameters_carry_the_configuration():
    world = World(endpoint_name="mnist-prod")
    world.handle("s3_put_special_key")
    params = world.kfp.created[0]["parameters"]
    assert params["dataset_uri"] == (
        f"s3://{BUCKET}/incoming/données/2026/été/mnist jeu+v2 (final).npz"
    )
    assert params["endpoint_name"] == "mnist-prod" and params["training_image"] == ""
    assert params["run_key"] == key_of("s3_put_special_key")


def test_subjects_stay_ascii_and_under_100_characters():
    # Given a long unicode reason and key
    dataset = DatasetRef(BUCKET, "incoming/" + "é" * 300 + ".npz", "", "etag", 1)
    reason = "ünïcödé " * 40

    # When notifications are written, Then their subjects are safe for SNS
    for note in (
        data_rejected("mnist-0123456789ab", dataset, reason),
        run_could_not_start("mnist-0123456789ab", dataset, reason, 4, "check"),
    ):
        assert len(note.subject) < 100 and note.subject.isascii()
        assert "\n" not in note.subject
    assert subject_line("a\nb") == "a b"


def test_the_fake_sns_refuses_a_subject_of_100_characters_as_sns_does():
    # SNS's Publish API reference: the subject "must be less than 100 characters long"
    notifier = RecordingNotifier()
    with pytest.raises(PublishFailed):
        notifier.publish(contracts.KIND_RUN_FAILED, "mnist-0123456789ab", "x" * 100, "m")
    notifier.publish(contracts.KIND_RUN_FAILED, "mnist-0123456789ab", subject_line("x" * 150), "m")
    assert [len(p.subject) for p in notifier.published] == [99]


# -- per-upload settings ---------------------------------------------------------------------


def test_an_uploads_metadata_sets_its_runs_settings():
    # Given an upload whose metadata asks for 32 clusters (x-amz-meta-k: 32) and a batch size
    world = World()
    world.uploads.by_key["incoming/mnist.pkl.gz"] = {"k": "32", "mini-batch-size": "200"}

    # When it is handled
    world.handle()

    # Then the run gets them, the rest as configured, and the record says which were set
    params = world.kfp.created[0]["parameters"]
    assert (params["k"], params["mini_batch_size"]) == (32, 200)
    assert params["train_instance_type"] == "ml.m5.xlarge"
    item = world.runs.items[key_of()]
    assert item["run_settings"]["k"] == 32 and item["overridden"] == ["k", "mini_batch_size"]
    [note] = world.notifier.published
    assert "k=32 (from the upload)" in note.message and "mini_batch_size=200" in note.message


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"learning-rate": "0.1"}, "unknown run setting x-amz-meta-learning-rate"),
        ({"k": "1000"}, "x-amz-meta-k: must be 2 to 256 (got 1000)"),
        ({"k": "many"}, "x-amz-meta-k: must be a whole number"),
        ({"train-instance-count": "50"}, "must be 1 to 10"),
        ({"train-instance-type": "ml.p4d.24xlarge"}, "not one of the instance types"),
    ],
)
def test_a_bad_setting_in_the_metadata_rejects_the_upload_saying_why(metadata, reason):
    world = World()
    world.uploads.by_key["incoming/mnist.pkl.gz"] = metadata
    outcome = world.handle()
    assert outcome["rejected"] == [key_of()] and world.kfp.calls == []
    assert reason in world.runs.items[key_of()]["reason"]
    [note] = world.notifier.published
    assert note.kind == contracts.KIND_DATA_REJECTED and reason in note.message


def test_the_rerun_marker_is_the_products_own_metadata_not_a_setting():
    # Given a copy made by `mnistflow rerun`: the first upload's setting plus the rerun marker
    world = World()
    world.uploads.by_key["incoming/mnist.pkl.gz"] = {
        "k": "16",
        contracts.RERUN_OF_METADATA: "mnist-0123456789ab",
    }
    # When it is handled
    world.handle()
    # Then it starts a run with the setting; the marker is not read as an unknown setting
    assert world.kfp.created[0]["parameters"]["k"] == 16
    assert world.runs.items[key_of()]["overridden"] == ["k"]


def test_the_dry_run_reaches_kfp_and_changes_nothing():
    # Given KFP with the experiment already made
    world = World()
    world.kfp.create_experiment("mnist-uploads", "")
    world.kfp.calls.clear()
    # When start-run gets mnistflow verify's dry run
    answer = world.service.check_kfp()
    # Then it asked healthz and looked the experiment up, and made, recorded and sent nothing
    assert world.kfp.calls == ["health", "find_experiments"]
    assert answer["ok"] is True and answer["mnistflow"] == "verify"
    assert answer["kfp_version"] == world.kfp.backend_version
    assert answer["multi_user"] is False
    assert answer["experiment_id"] == next(iter(world.kfp.experiments))
    assert world.kfp.created == [] and world.runs.items == {} and world.notifier.published == []


def test_the_dry_run_does_not_create_a_missing_experiment():
    world = World()
    answer = world.service.check_kfp()
    assert answer["ok"] is True and answer["experiment_id"] == ""
    assert world.kfp.experiments == {}


@pytest.mark.parametrize(("call", "status"), [("health", 403), ("find_experiments", 401)])
def test_a_dry_run_that_cannot_reach_kfp_answers_why_without_raising(call, status):
    world = World()
    world.kfp.fail_with_status(call, status)
    answer = world.service.check_kfp()
    assert answer["ok"] is False
    assert (answer["kind"], answer["status"]) == (KfpCallFailed.AUTH, status)
    assert answer["failed_call"] == ("healthz" if call == "health" else "experiment lookup")
    assert answer["what_to_check"] == "check the access entry"
    assert world.kfp.created == [] and world.runs.items == {}
