"""`mnistflow redrive` on moto: both failure queues read from the stack's outputs, Lambda's
invocation records unwrapped, each event handed back, a message deleted only after success."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from moto import mock_aws

from core import contracts, lambda_destinations
from mnistflow.cli import main
from mnistflow.redrive import describe, lambda_invoker, redrive, targets_from_stack
from tests.conftest import load_event

pytestmark = pytest.mark.integration

REGION = "us-east-1"
UPLOAD = load_event("s3_put")
PIPELINE_EVENT = load_event("pipeline_failed")


def _stack_template() -> str:
    """A stack with the outputs the CLI reads (the real stack's names, core.contracts)."""
    resources = {
        "StartRunQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "sr-fail"}},
        "TrackQueue": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "tp-fail"}},
    }
    outputs = {
        contracts.OUTPUT_START_RUN_FUNCTION: {"Value": "mnistflow-start-run"},
        contracts.OUTPUT_START_RUN_FAILURES_QUEUE: {"Value": {"Ref": "StartRunQueue"}},
        contracts.OUTPUT_TRACK_PROGRESS_FUNCTION: {"Value": "mnistflow-track-progress"},
        contracts.OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE: {"Value": {"Ref": "TrackQueue"}},
    }
    return json.dumps({"Resources": resources, "Outputs": outputs})


def _record(event: dict) -> dict:
    return lambda_destinations.invocation_record(
        event,
        request_id="req-1",
        function_arn="arn:aws:lambda:us-east-1:123456789012:function:mnistflow-start-run",
        attempts=3,
        error_type="StartRunFailed",
        error_message="KFP run not started for mnist-d0520a385764",
        timestamp="2026-11-28T12:03:00.000Z",
    )


@pytest.fixture
def deployed():
    with mock_aws():
        cloudformation = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(StackName=contracts.STACK_NAME, TemplateBody=_stack_template())
        sqs = boto3.client("sqs", region_name=REGION)
        targets = {t.function: t for t in targets_from_stack(cloudformation)}
        # start-run's queue: Lambda's invocation record; track-progress's: a rule's DLQ message
        sqs.send_message(
            QueueUrl=targets[contracts.START_RUN].queue_url, MessageBody=json.dumps(_record(UPLOAD))
        )
        sqs.send_message(
            QueueUrl=targets[contracts.TRACK_PROGRESS].queue_url,
            MessageBody=json.dumps(PIPELINE_EVENT),
        )
        yield cloudformation, sqs, targets


class Functions:
    """Stands in for the deployed functions: records what each got; fails while told to."""

    def __init__(self, failing: set[str] = frozenset()) -> None:
        self.got: list[tuple[str, dict]] = []
        self.failing = set(failing)

    def __call__(self, function_name: str, event: dict) -> str | None:
        self.got.append((function_name, event))
        return "StartRunFailed: KFP down" if function_name in self.failing else None


def _waiting(sqs, target) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=target.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def test_each_event_goes_back_to_its_function_unwrapped_and_is_then_deleted(deployed):
    _, sqs, targets = deployed
    functions = Functions()
    results = redrive(sqs, functions, list(targets.values()))
    # Then each function got its own event as it was first delivered (the record unwrapped)
    assert functions.got == [
        ("mnistflow-start-run", UPLOAD),
        ("mnistflow-track-progress", PIPELINE_EVENT),
    ]
    assert [r.outcome for r in results] == ["redriven", "redriven"]
    assert "RetriesExhausted after 3 attempt(s)" in results[0].why
    assert results[1].why == "an event EventBridge could not deliver"
    assert all(_waiting(sqs, t) == 0 for t in targets.values())


def test_an_event_that_fails_again_is_kept_and_visible(deployed):
    _, sqs, targets = deployed
    results = redrive(sqs, Functions(failing={"mnistflow-start-run"}), list(targets.values()))
    assert results[0].outcome == "failed again: StartRunFailed: KFP down"
    assert _waiting(sqs, targets[contracts.START_RUN]) == 1
    # Visible again at once: the next redrive (here, with the function healed) takes it
    assert [r.outcome for r in redrive(sqs, Functions(), [targets[contracts.START_RUN]])] == [
        "redriven"
    ]
    assert _waiting(sqs, targets[contracts.START_RUN]) == 0


def test_a_dry_run_touches_nothing(deployed):
    _, sqs, targets = deployed
    functions = Functions()
    results = redrive(sqs, functions, list(targets.values()), dry_run=True)
    assert [r.outcome for r in results] == ["would redrive", "would redrive"]
    assert functions.got == []
    assert all(_waiting(sqs, t) == 1 for t in targets.values())
    assert "dry run: none touched" in describe(results, dry_run=True)


def test_a_message_that_is_not_json_is_kept_and_said(deployed):
    _, sqs, targets = deployed
    sqs.send_message(QueueUrl=targets[contracts.START_RUN].queue_url, MessageBody="not json")
    results = redrive(sqs, Functions(), [targets[contracts.START_RUN]])
    assert sorted(r.outcome for r in results) == ["kept: not an event", "redriven"]


def test_the_lambda_invoker_calls_the_function_synchronously():
    # moto's Lambda without Docker answers every invoke as a success, and says what it got
    with mock_aws(config={"lambda": {"use_docker": False}}):
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("handler.py", "def handler(event, context):\n    return event\n")
        client = boto3.client("lambda", region_name=REGION)
        client.create_function(
            FunctionName="mnistflow-start-run",
            Runtime="python3.12",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": code.getvalue()},
        )
        assert lambda_invoker(client)("mnistflow-start-run", UPLOAD) is None


def test_the_command_says_what_it_did_and_exits_1_when_some_failed(deployed, capsys, monkeypatch):
    import mnistflow.redrive as module

    monkeypatch.setattr(module, "lambda_invoker", lambda client: Functions({"x"}))
    assert main(["redrive", "--region", REGION]) == 0
    out = capsys.readouterr().out
    assert "2 redriven and deleted, 0 failed again and kept." in out
    assert main(["redrive", "--region", REGION]) == 0
    assert "nothing to redrive" in capsys.readouterr().out


def test_a_missing_stack_is_a_clear_error(capsys):
    with mock_aws():
        assert main(["redrive", "--region", REGION, "--stack", "Nope"]) == 1
    assert "redrive: cannot read stack Nope" in capsys.readouterr().err
