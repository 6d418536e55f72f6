"""The track-progress handler end to end on moto: the record per step, the emails as SNS
delivered them, orphans, bad input, the cost of each event, concurrency and failed emails."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections import Counter
from typing import Any

import boto3
import pytest

from core import contracts
from lambdas.dal.runs_table import to_attribute_value
from lambdas.logic.ports import PublishFailed
from tests.conftest import load_event
from tests.fakes.progress import (
    CREATED_AT,
    DATASET,
    KFP_RUN_ID,
    KFP_RUN_URL,
    RUN_KEY,
    event,
    resent,
    start_run_record,
)
from tests.integration.conftest import TABLE, AwsWorld, LambdaContext

pytestmark = pytest.mark.integration

ENDPOINT = f"{RUN_KEY}-endpoint"


def context() -> LambdaContext:
    return LambdaContext(function_name=contracts.TRACK_PROGRESS)


def seed_record(**changes: Any) -> None:
    item = {name: to_attribute_value(value) for name, value in start_run_record(**changes).items()}
    boto3.client("dynamodb", region_name="us-east-1").put_item(TableName=TABLE, Item=item)


@pytest.fixture
def send(track_progress):
    """Delivers one event (a payload name or the payload) to the function, as EventBridge does."""

    def deliver(name_or_event: str | dict) -> dict:
        payload = load_event(name_or_event) if isinstance(name_or_event, str) else name_or_event
        return track_progress(payload, context())

    return deliver


@pytest.fixture
def json_log():
    """The function's log lines as it writes them (Powertools' JSON formatter), parsed back."""
    from lambdas.observability import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    logger.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)


# -- the record, step by step --------------------------------------------------------------


def test_each_step_lands_in_the_record_as_it_happens(send, aws: AwsWorld):
    # Given a run start-run recorded
    seed_record()
    # When SageMaker reports the training job, the transform and the endpoint
    for name in (
        "sagemaker_training_in_progress",
        "sagemaker_training_completed",
        "sagemaker_transform_in_progress",
        "sagemaker_transform_completed",
        "sagemaker_endpoint_creating",
    ):
        assert send(name)["outcome"] == "applied"
    # Then the record holds one entry per step and status, with what each event said

    item = aws.item(RUN_KEY)
    assert item is not None
    completed = item["progress:training:COMPLETED"]
    assert completed["job_name"] == f"{RUN_KEY}-train"
    assert completed["billable_seconds"] == 810
    assert completed["metrics"] == {"test:msd": 0.0612, "train:progress": 100.0}
    assert completed["ord"] == "2026-11-28T12:20:00Z|5b1d8e22-07c4-3f9e-aa10-9e4c1b2d3f02"
    assert item["progress:endpoint:IN_PROGRESS"]["event_status"] == "CREATING"
    assert aws.record(RUN_KEY).steps() == {
        "training": ("COMPLETED", "2026-11-28T12:20:00Z"),
        "transform": ("COMPLETED", "2026-11-28T12:30:00Z"),
        "endpoint": ("IN_PROGRESS", "2026-11-28T12:31:05Z"),
    }
    assert aws.record(RUN_KEY).overall_status == contracts.STATUS_RUNNING
    # And start-run's fields are as it left them; nothing was announced
    assert {k: item[k] for k in start_run_record()} == start_run_record()
    assert "outcome" not in item
    assert aws.messages() == []


def test_a_failed_training_job_keeps_its_reason(send, aws: AwsWorld):
    seed_record()
    send("sagemaker_training_failed")
    entry = aws.item(RUN_KEY)["progress:training:FAILED"]  # type: ignore[index]
    assert entry["failure_reason"].startswith("AlgorithmError: Customer Error")
    assert entry["billable_seconds"] == 525


# -- the emails, as SNS delivered them -----------------------------------------------------


def test_endpoint_ready_email(send, aws: AwsWorld):
    # Given a run whose training completed and whose model the evaluate step scored
    seed_record()
    send("sagemaker_training_completed")
    assert send("pipeline_model_evaluated")["outcome"] == "applied"
    # When the endpoint is in service
    result = send("sagemaker_endpoint_in_service")
    # Then one ENDPOINT_READY went to the topic, filterable by kind and run key
    assert result == {"outcome": "announced", "run_key": RUN_KEY}
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_ENDPOINT_READY
    assert message["run_key"] == RUN_KEY
    assert message["subject"] == f"MNIST endpoint ready: {ENDPOINT} ({RUN_KEY})"
    assert len(message["subject"]) < 100
    lines = message["message"].splitlines()
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}"
    assert f"Endpoint:  {ENDPOINT}" in lines
    assert f"ARN:       {arn}" in lines
    assert "Region:    us-east-1" in lines
    assert (
        f"Dataset:   s3://{DATASET['bucket']}/{DATASET['key']} (version {DATASET['version']})"
        in lines
    )
    assert (
        "Accuracy:  78.4% on the held-out test split; weakest digits: 5 (52%), 8 (58%), 2 (66%)"
        in lines
    )
    assert "Training:  mean squared distance to the nearest centre 0.0612 (test data)" in lines
    # 12:00:01.250 (accepted) to 12:40:00 (in service)
    assert "Took:      39 min 58 s (upload accepted to endpoint in service)" in lines
    assert f"KFP run:   {KFP_RUN_URL}" in lines
    assert (
        f"  aws sagemaker-runtime invoke-endpoint --region us-east-1 --endpoint-name {ENDPOINT}"
        " --content-type text/csv --body fileb://digit.csv /dev/stdout"
    ) in lines
    assert any("784 comma-separated pixel values" in line for line in lines)
    assert f"  mnistflow predict --endpoint {ENDPOINT} --sample 5" in lines
    # And the record says the run succeeded

    assert aws.record(RUN_KEY).overall_status == contracts.STATUS_SUCCEEDED


def test_endpoint_ready_from_the_pipelines_success_builds_the_arn(send, aws: AwsWorld):
    # Given no evaluation accuracy in the record and no endpoint event yet
    seed_record()
    # When the pipeline reports success first
    assert send("pipeline_succeeded")["outcome"] == "announced"
    # Then the endpoint's ARN comes from the region, account and endpoint name
    [message] = aws.messages()
    lines = message["message"].splitlines()
    assert f"ARN:       arn:aws:sagemaker:us-east-1:123456789012:endpoint/{ENDPOINT}" in lines
    assert "Accuracy:  not measured (the run recorded no evaluation)" in lines
    assert "Took:      40 min 58 s (upload accepted to endpoint in service)" in lines
    # And the endpoint's own IN_SERVICE event later announces nothing more
    assert send("sagemaker_endpoint_in_service")["outcome"] == "applied"
    assert len(aws.messages()) == 1


def test_run_failed_email_for_a_sagemaker_job(send, aws: AwsWorld):
    seed_record()
    send("sagemaker_training_failed")
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_RUN_FAILED
    assert message["run_key"] == RUN_KEY
    assert message["subject"].startswith(
        f"MNIST run failed at training ({RUN_KEY}): AlgorithmError"
    )
    assert len(message["subject"]) < 100
    lines = message["message"].splitlines()
    assert "Step:      training (Failed)" in lines
    assert any(line.startswith("Reason:    AlgorithmError: Customer Error") for line in lines)
    assert f"  SageMaker resource: {RUN_KEY}-train" in lines
    assert (
        "  CloudWatch logs:    log group /aws/sagemaker/TrainingJobs,"
        f" streams starting {RUN_KEY}-train/" in lines
    )
    assert f"  KFP link:           {KFP_RUN_URL}" in lines


def test_run_failed_email_for_the_endpoint_points_at_its_log_group(send, aws: AwsWorld):
    seed_record()
    send("sagemaker_endpoint_failed")
    [message] = aws.messages()
    lines = message["message"].splitlines()
    assert f"  CloudWatch logs:    log group /aws/sagemaker/Endpoints/{ENDPOINT}" in lines
    assert any("did not pass the ping health check" in line for line in lines)


def test_run_failed_email_for_a_pipeline_step(send, aws: AwsWorld):
    # Given a record without its KFP link (start-run's link is built from the UI address)
    seed_record(kfp_run_url="")
    # When the pipeline reports that preprocess failed
    send("pipeline_failed")
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_RUN_FAILED
    assert message["subject"].startswith(f"MNIST run failed at preprocess ({RUN_KEY}): s3://")
    lines = message["message"].splitlines()
    assert "Step:      preprocess (FAILED)" in lines
    assert any("not an MNIST dataset" in line for line in lines)
    assert "  KFP step logs:      the preprocess step of the KFP run (link below)" in lines
    # the run is named by the id start-run recorded, not the pipeline's job resource name
    assert f"  KFP run:            {KFP_RUN_ID}" in lines
    assert (
        "  KFP link:           https://kfp.example.com/#/runs/details/"
        "5e8f2c1a-1b2c-4d5e-8f90-0a1b2c3d4e5f"
    ) in lines
    assert aws.item(RUN_KEY)["progress:preprocess:FAILED"]["error"]  # type: ignore[index]


# -- orphans and bad input -----------------------------------------------------------------


def test_an_event_for_a_run_without_a_record_is_an_orphan(send, aws: AwsWorld, json_log):
    # Given no record for the run key
    # When the endpoint of that run is in service
    result = send("sagemaker_endpoint_in_service")
    # Then the progress is kept as an orphan record, logged, and nobody is emailed
    assert result["outcome"] == "orphan"
    item = aws.item(RUN_KEY)
    assert item is not None and "dataset" not in item
    assert "progress:endpoint:IN_SERVICE" in item
    assert aws.messages() == []
    [line] = [x for x in json_log() if x["message"].startswith("Orphan progress")]
    assert line["level"] == "WARNING"
    assert line["run_key"] == RUN_KEY
    assert line["resource"] == ENDPOINT


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("sagemaker_unknown_detail_type", "unknown event type"),
        ("sagemaker_training_without_name", "has no TrainingJobName"),
        ("sagemaker_training_unknown_status", "unknown TrainingJobStatus 'Exploding'"),
        ("sagemaker_endpoint_outside_product", "mnist-demo-endpoint is not one of"),
    ],
)
def test_bad_input_leaves_a_log_line_and_no_write(send, aws: AwsWorld, json_log, name, words):
    # Given a run's record
    seed_record()
    # When an event the function cannot or should not use arrives
    result = send(name)
    # Then it returns normally (no retry loop), writes nothing, emails nobody
    assert result["outcome"] == "ignored"
    assert aws.item(RUN_KEY) == start_run_record()
    assert aws.messages() == []
    # And leaves one log line saying what was wrong and what was received
    [line] = [x for x in json_log() if x["message"].startswith("Event ignored")]
    assert words in line["message"]
    assert line["received"]["id"] == load_event(name)["id"]


def test_a_missing_variable_fails_the_cold_start_naming_it(track_env):
    from core.settings import SettingError
    from lambdas.composition import track_progress_handler

    with pytest.raises(SettingError, match="RUNS_TABLE_NAME"):
        track_progress_handler({k: v for k, v in track_env.items() if k != "RUNS_TABLE_NAME"})
    with pytest.raises(SettingError, match="KFP_UI_URL"):
        track_progress_handler({**track_env, "KFP_UI_URL": "kfp.example.com"})


# -- what each event costs -----------------------------------------------------------------


class CallCounter:
    """Counts the API calls made through the function's own botocore clients."""

    def __init__(self, function) -> None:
        self.calls: Counter[str] = Counter()
        self._clients = function.handler.clients

    def attach(self, service: str) -> None:
        client = self._clients(service)
        client.meta.events.register(f"before-call.{client.meta.service_model.service_name}", self)

    def __call__(self, model, **_: Any) -> None:
        self.calls[model.name] += 1


def test_each_event_costs_one_dynamodb_call_and_a_publish_only_when_it_announces(
    send, aws: AwsWorld, track_progress
):
    # Given a run's record and a counter on the function's DynamoDB and SNS clients
    seed_record()
    counter = CallCounter(track_progress)
    counter.attach("dynamodb")
    counter.attach("sns")
    costs = []
    # When a whole run's events arrive, some twice
    for payload in (
        "sagemaker_training_in_progress",
        "sagemaker_training_completed",
        "sagemaker_training_completed",
        "sagemaker_transform_completed",
        "sagemaker_endpoint_in_service",
        resent("sagemaker_endpoint_in_service", "ffffffff-resent"),
        "pipeline_succeeded",
        "sagemaker_endpoint_in_service",
    ):
        counter.calls.clear()
        outcome = send(payload)["outcome"]
        costs.append((outcome, dict(counter.calls)))
    # Then each costs one UpdateItem; an event that decides the outcome costs one more, and
    # the one that announces two more (claim the email, then confirm it) and a publish
    one_write = {"UpdateItem": 1}
    assert costs == [
        ("applied", one_write),
        ("applied", one_write),
        ("stale", one_write),
        ("applied", one_write),
        ("announced", {"UpdateItem": 4, "Publish": 1}),
        ("applied", {"UpdateItem": 2}),  # the same second, a greater id: decides again
        ("applied", {"UpdateItem": 2}),  # the pipeline's success, later: decides again, no email
        ("stale", one_write),
    ]


def test_a_run_holding_a_slot_pays_one_transaction_to_free_it_once(
    send, aws: AwsWorld, track_progress
):
    # Given a run holding one of the run slots (the count says 1)
    seed_record(holds_slot=True)
    boto3.client("dynamodb", region_name="us-east-1").put_item(
        TableName=TABLE,
        Item={
            "run_key": {"S": contracts.RUN_SLOTS_ITEM_KEY},
            "in_flight": {"N": "1"},
            "version": {"N": "1"},
        },
    )
    counter = CallCounter(track_progress)
    counter.attach("dynamodb")
    counter.attach("sqs")
    costs = []
    # When its deciding events arrive, then again
    for payload in (
        "sagemaker_endpoint_in_service",
        resent("sagemaker_endpoint_in_service", "ffffffff-resent"),
        "pipeline_succeeded",
    ):
        counter.calls.clear()
        send(payload)
        costs.append(dict(counter.calls))
    # Then the first frees the slot (one transaction) and says so (one message); the later
    # ones find the slot freed in the record as it was, and pay nothing more for it
    assert costs[0] == {"UpdateItem": 4, "TransactWriteItems": 1, "SendMessage": 1}
    assert costs[1:] == [{"UpdateItem": 2}, {"UpdateItem": 2}]
    assert not aws.record(RUN_KEY).holds_slot


def test_bad_input_costs_no_aws_call(send, aws: AwsWorld, track_progress):
    counter = CallCounter(track_progress)
    counter.attach("dynamodb")
    counter.attach("sns")
    send("sagemaker_endpoint_outside_product")
    send("sagemaker_training_unknown_status")
    assert counter.calls == Counter()


# -- the same event twice at the same moment -----------------------------------------------


@pytest.fixture
def atomic_item_writes(monkeypatch):
    """DynamoDB applies each write to an item atomically; moto does not lock. Serialize moto's
    UpdateItem the way DynamoDB does, so the test sees the service's semantics."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.Lock()
    original = DynamoDBBackend.update_item

    def update_item(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(DynamoDBBackend, "update_item", update_item)


def test_in_service_delivered_twice_at_once_announces_once(
    track_progress, aws: AwsWorld, atomic_item_writes
):
    seed_record()
    service = track_progress.handler.service
    payload = load_event("sagemaker_endpoint_in_service")
    service.handle(load_event("sagemaker_training_in_progress"))  # clients made, warm
    outcomes: list[str] = []
    start = threading.Barrier(2)

    def deliver() -> None:
        start.wait()
        outcomes.append(service.handle(payload)["outcome"])

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Exactly one delivery announces. Which one, and whether the other saw its progress write
    # applied or stale, depends on how the two interleave: the progress write and the outcome
    # decision are separate conditional writes, and either delivery may win each of them.
    assert outcomes.count("announced") == 1
    assert set(outcomes) - {"announced"} <= {"applied", "stale"}
    assert [m["kind"] for m in aws.messages()] == [contracts.KIND_ENDPOINT_READY]
    record = aws.record(RUN_KEY)
    assert record.overall_status == contracts.STATUS_SUCCEEDED
    assert record.steps()["endpoint"][0] == "IN_SERVICE"


# -- the email fails -----------------------------------------------------------------------


def test_a_failed_publish_releases_the_claim_and_the_redelivery_announces_once(
    send, aws: AwsWorld, monkeypatch
):
    from lambdas.dal.topic import SnsNotifier

    seed_record()
    real_publish = SnsNotifier.publish
    attempts = []

    def flaky_publish(self, *args, **kwargs):
        attempts.append(args[0])
        if len(attempts) == 1:
            raise PublishFailed("SNS endpoint unreachable (injected)", maybe_sent=False)
        return real_publish(self, *args, **kwargs)

    monkeypatch.setattr(SnsNotifier, "publish", flaky_publish)
    # When the first delivery's email fails
    with pytest.raises(PublishFailed):
        send("sagemaker_endpoint_in_service")
    # Then the error goes back to EventBridge, the progress and outcome are kept, the
    # announcement released
    item = aws.item(RUN_KEY)
    assert "progress:endpoint:IN_SERVICE" in item  # type: ignore[operator]
    assert item["outcome"] == "SUCCEEDED" and "announced" not in item  # type: ignore[index]
    assert aws.messages() == []
    # When EventBridge retries, and then a duplicate arrives
    assert send("sagemaker_endpoint_in_service")["outcome"] == "announced"
    assert send("sagemaker_endpoint_in_service")["outcome"] == "stale"
    # Then exactly one email went out
    assert [m["kind"] for m in aws.messages()] == [contracts.KIND_ENDPOINT_READY]
    assert aws.item(RUN_KEY)["outcome"] == "SUCCEEDED"  # type: ignore[index]


def test_throttling_goes_back_to_eventbridge(send, aws: AwsWorld, track_progress):
    from botocore.exceptions import ClientError

    seed_record()

    def throttle(**_: Any) -> None:
        raise ClientError(
            {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
            "UpdateItem",
        )

    dynamodb = track_progress.handler.clients("dynamodb")
    dynamodb.meta.events.register("before-call.dynamodb", throttle)
    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        send("sagemaker_training_in_progress")


def test_timestamps_come_from_events_not_the_clock(send, aws: AwsWorld):
    # Given the same events applied to two records
    seed_record()
    send("sagemaker_training_completed")
    first = aws.item(RUN_KEY)
    aws_item_key = {"run_key": {"S": RUN_KEY}}
    boto3.client("dynamodb", region_name="us-east-1").delete_item(TableName=TABLE, Key=aws_item_key)
    seed_record()
    send(event("sagemaker_training_completed"))
    # Then the records are identical (nothing depends on when the function ran)
    assert aws.item(RUN_KEY) == first
    assert first["created_at"] == CREATED_AT  # type: ignore[index]


def test_run_failed_email_says_how_to_try_again(send, aws: AwsWorld):
    seed_record()
    send("sagemaker_transform_failed")
    [message] = aws.messages()
    lines = message["message"].splitlines()
    assert "Step:      transform (Failed)" in lines
    assert f"To try again after fixing the cause: mnistflow rerun {RUN_KEY}" in lines
    assert (
        "  CloudWatch logs:    log group /aws/sagemaker/TransformJobs,"
        f" streams starting {RUN_KEY}-transform/"
    ) in lines


def test_a_lost_sns_answer_keeps_the_outcome_and_sends_at_most_one_more(
    aws: AwsWorld, track_progress
):
    from tests.fakes.aws_faults import ANSWER_LOST, AwsFault

    # Given SNS accepting the ENDPOINT_READY publish, then its answer lost
    seed_record()
    AwsFault("sns", "Publish", ANSWER_LOST).attach(track_progress.handler.clients("sns"))

    # When the endpoint event is handled, with Lambda's retries
    track_progress.invoke_async(load_event("sagemaker_endpoint_in_service"))

    # Then the record keeps its outcome throughout (it is not the email's claim any more),
    # and the email went out once more at most: the one duplicate the design allows
    item = aws.item(RUN_KEY)
    assert item["outcome"] == "SUCCEEDED" and item["announced"] == ["ENDPOINT_READY"]
    kinds = [m["kind"] for m in aws.messages()]
    assert kinds.count(contracts.KIND_ENDPOINT_READY) == 2
