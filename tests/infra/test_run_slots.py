"""The concurrency limit's plumbing: the run-slots queue, consumed by start-run alone, written
by the three functions that free slots, with its dead-letter queue, alarm and IAM."""

from __future__ import annotations

from core import contracts
from stacks.run_slots import BATCH_SIZE, VISIBILITY_TIMEOUT_FACTOR
from tests.infra.cfn_text import actions_of, render, role_statements


def _queue_ids(synth) -> tuple[str, str]:
    slots = synth.stack.run_slots
    return synth.logical_id(slots.queue), synth.logical_id(slots.dead_letters)


def test_the_queue_is_encrypted_tls_only_and_ends_in_a_dead_letter_queue(default_synth):
    from stacks.mnist_flow_stack import START_RUN_TIMEOUT_SECONDS

    queue_id, dlq_id = _queue_ids(default_synth)
    queue = default_synth.resources[queue_id]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": contracts.RUN_SLOTS_MAX_RECEIVES,
    }
    # Lambda's guide: the visibility timeout at least six times the consumer's timeout
    assert queue["VisibilityTimeout"] == START_RUN_TIMEOUT_SECONDS * VISIBILITY_TIMEOUT_FACTOR
    policies = [
        p["Properties"]
        for p in default_synth.of_type("AWS::SQS::QueuePolicy").values()
        if {"Ref": queue_id} in p["Properties"]["Queues"]
    ]
    assert any("aws:SecureTransport" in render(p) for p in policies)


def test_only_start_run_consumes_the_queue(default_synth):
    queue_id, _ = _queue_ids(default_synth)
    mappings = [
        m["Properties"]
        for m in default_synth.of_type("AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["EventSourceArn"] == {"Fn::GetAtt": [queue_id, "Arn"]}
    ]
    start_run = default_synth.logical_id(default_synth.stack.start_run.function)
    assert [(m["FunctionName"], m["BatchSize"]) for m in mappings] == [
        ({"Ref": start_run}, BATCH_SIZE)
    ]
    for function in (default_synth.stack.track_progress, default_synth.stack.watchdog):
        role_id = default_synth.logical_id(function.function.role)
        actions = actions_of(role_statements(default_synth.resources, role_id))
        assert "sqs:SendMessage" in actions
        assert "sqs:ReceiveMessage" not in actions


def test_each_function_gets_the_queue_and_the_limit_where_it_reads_them(default_synth):
    for function, limit in (
        (default_synth.stack.start_run, True),
        (default_synth.stack.track_progress, False),
        (default_synth.stack.watchdog, True),
    ):
        resource = default_synth.resources[default_synth.logical_id(function.function)]
        variables = resource["Properties"]["Environment"]["Variables"]
        assert "RUN_SLOTS_QUEUE_URL" in variables
        assert ("MAX_CONCURRENT_RUNS" in variables) is limit
        if limit:
            assert variables["MAX_CONCURRENT_RUNS"] == "2"


def test_slot_moves_have_their_table_actions_and_no_more(default_synth):
    def actions(function) -> set[str]:
        role_id = default_synth.logical_id(function.function.role)
        return actions_of(role_statements(default_synth.resources, role_id))

    stack = default_synth.stack
    assert {"dynamodb:ConditionCheckItem", "dynamodb:GetItem", "dynamodb:Scan"} <= actions(
        stack.start_run
    )
    assert "dynamodb:GetItem" in actions(stack.watchdog)
    assert "dynamodb:ConditionCheckItem" not in actions(stack.watchdog)
    track = actions(stack.track_progress)
    assert not track & {"dynamodb:GetItem", "dynamodb:Scan", "dynamodb:ConditionCheckItem"}


def test_a_dead_letter_waits_for_an_operator_with_an_alarm(default_synth):
    _, dlq_id = _queue_ids(default_synth)
    alarm = default_synth.resources[default_synth.logical_id(default_synth.stack.run_slots.alarm)]
    properties = alarm["Properties"]
    assert properties["AlarmName"].endswith("run-slots-dead-letters")
    assert {"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}} in properties[
        "Dimensions"
    ]
    assert properties["AlarmActions"]
