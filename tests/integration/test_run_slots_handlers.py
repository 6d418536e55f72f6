"""The concurrency limit through the real handlers and adapters: moto's DynamoDB and SQS, the
local KFP API. Start-run queues what it cannot start, track-progress frees the slot and sends
"a slot is free" to the run-slots queue, and start-run, fed that queue's messages as Lambda's
SQS event source mapping feeds them, starts the waiting upload."""

from __future__ import annotations

import copy
import json

import boto3
import pytest

from core import contracts
from lambdas.dal.run_slots_queue import SqsSlotSignal
from tests.conftest import load_event
from tests.integration.conftest import BUCKET, REGION, LambdaContext

pytestmark = pytest.mark.integration


def upload(number: int) -> dict:
    payload = copy.deepcopy(load_event("s3_put"))
    obj = payload["Records"][0]["s3"]["object"]
    obj["key"] = f"incoming/burst-{number}.pkl.gz"
    obj["versionId"] = f"version-{number}"
    return payload


def key(number: int) -> str:
    return contracts.run_key(BUCKET, f"incoming/burst-{number}.pkl.gz", f"version-{number}")


def slot_messages(aws) -> dict | None:
    """What Lambda's SQS event source mapping would hand start-run (the messages deleted, as
    the mapping deletes a batch whose invocation returned)."""
    sqs = boto3.client("sqs", region_name=REGION)
    url = aws.run_slots_queue_url
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for message in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    if not messages:
        return None
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:run-slots",
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def ended(number: int, event_id: str = "end-1") -> dict:
    payload = copy.deepcopy(load_event("pipeline_succeeded"))
    payload["id"] = event_id
    payload["detail"]["run_key"] = key(number)
    return payload


def test_a_queued_upload_starts_when_the_run_before_it_ends(
    kfp, aws, lambda_env, start_run, track_progress
):
    # Given a limit of 1
    lambda_env["MAX_CONCURRENT_RUNS"] = "1"
    # When two uploads arrive
    first = start_run.invoke_async(upload(1), "request-1")
    second = start_run.invoke_async(upload(2), "request-2")
    # Then the first starts and the second waits, recorded as QUEUED, with no KFP run
    assert first["started"] == [key(1)] and second["queued"] == [key(2)]
    assert aws.record(key(2)).status == contracts.STATUS_QUEUED
    assert kfp.runs_named(key(2)) == []
    assert slot_messages(aws) is None
    # When the first run's final event comes, twice (EventBridge delivers at least once)
    track_progress(ended(1), LambdaContext(function_name=contracts.TRACK_PROGRESS))
    track_progress(ended(1), LambdaContext(function_name=contracts.TRACK_PROGRESS))
    # Then its slot is freed once, and "a slot is free" is on the queue once
    event = slot_messages(aws)
    assert event is not None and len(event["Records"]) == 1
    assert "ended" in json.loads(event["Records"][0]["body"])["slot_free"]
    assert not aws.record(key(1)).holds_slot
    # When start-run gets the message
    result = start_run(event, LambdaContext(aws_request_id="slot-request"))
    # Then the waiting upload starts, with its RUN_STARTED email, holding the slot
    assert result["started"] == [key(2)]
    record = aws.record(key(2))
    assert record.status == contracts.STATUS_RUN_STARTED and record.holds_slot
    assert len(kfp.runs_named(key(2))) == 1
    started = [m for m in aws.messages() if m["kind"] == contracts.KIND_RUN_STARTED]
    assert sorted(m["run_key"] for m in started) == sorted([key(1), key(2)])
    # And a duplicate of the message starts nothing more
    again = start_run(event, LambdaContext(aws_request_id="slot-request-2"))
    assert again["started"] == [] and len(kfp.runs_named(key(2))) == 1


def test_a_lost_send_is_reported_not_raised(aws):
    # Given a queue URL that does not exist (SQS answers an error)
    signal = SqsSlotSignal(
        aws.run_slots_queue_url + "-gone", lambda: boto3.client("sqs", region_name=REGION)
    )
    # Then the signal says it may not have gone out, and nothing raises: the watchdog's next
    # pass sends it again
    assert signal.slot_free("test") is False
    assert SqsSlotSignal(
        aws.run_slots_queue_url, lambda: boto3.client("sqs", region_name=REGION)
    ).slot_free("test")
