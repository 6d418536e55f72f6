"""Operations alarms: both failure queues and both Lambdas, emailed through their own topic."""

from __future__ import annotations

import pytest

from core import contracts, endpoint_alarms
from tests.infra.variants import EMAILS

ALARM_PERIOD_SECONDS = 5 * 60


def _alarms(synth) -> list[dict]:
    return [a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()]


def _alarm_with_dimension(synth, value: dict) -> dict:
    (alarm,) = [a for a in _alarms(synth) if [d["Value"] for d in a["Dimensions"]] == [value]]
    return alarm


def _queue_alarm(synth, owner: str) -> dict:
    queue = getattr(synth.stack, owner).failed_events
    return _alarm_with_dimension(synth, {"Fn::GetAtt": [synth.logical_id(queue), "QueueName"]})


def _function_alarm(synth, owner: str) -> dict:
    function = getattr(synth.stack, owner).function
    return _alarm_with_dimension(synth, {"Ref": synth.logical_id(function)})


def _operations_topic_ref(synth) -> dict:
    return {"Ref": synth.logical_id(synth.stack.operations.topic)}


@pytest.mark.parametrize("owner", ["start_run", "track_progress"])
def test_a_message_in_either_dead_letter_queue_raises_an_alarm(default_synth, owner):
    # Given the alarm on the queue's visible messages
    alarm = _queue_alarm(default_synth, owner)
    # Then one message in five minutes is enough, and no data is no alarm
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Statistic"] == "Maximum"
    assert alarm["Period"] == ALARM_PERIOD_SECONDS
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    # And it emails the operations topic
    assert alarm["AlarmActions"] == [_operations_topic_ref(default_synth)]


@pytest.mark.parametrize("owner", ["start_run", "track_progress"])
def test_an_error_in_either_lambda_raises_an_alarm(default_synth, owner):
    # Given the alarm on the function's errors, then one error in five minutes is enough
    alarm = _function_alarm(default_synth, owner)
    assert alarm["Namespace"] == "AWS/Lambda"
    assert alarm["MetricName"] == "Errors"
    assert alarm["Statistic"] == "Sum"
    assert alarm["Period"] == ALARM_PERIOD_SECONDS
    assert alarm["EvaluationPeriods"] == 1
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["TreatMissingData"] == "notBreaching"
    assert alarm["AlarmActions"] == [_operations_topic_ref(default_synth)]


def test_there_are_exactly_ten_alarms_and_none_emails_the_run_topic(default_synth):
    # Two per function (failed events, errors), one for notifications SNS could not deliver,
    # one for "a slot is free" messages start-run failed on (the run-slots dead letters), two on
    # the stable endpoint (its update's rollback alarms)
    run_topic = {"Ref": default_synth.logical_id(default_synth.stack.notifications.topic)}
    alarms = _alarms(default_synth)
    assert len(alarms) == 2 * len(contracts.FUNCTIONS) + 2 + len(endpoint_alarms.ALARMS)
    for alarm in alarms:
        assert run_topic not in alarm["AlarmActions"]
        assert alarm["AlarmDescription"]


def test_operations_topic_is_encrypted_with_the_notification_key_and_tls_only(default_synth):
    # Given the operations topic
    topic_id = default_synth.logical_id(default_synth.stack.operations.topic)
    key_id = default_synth.logical_id(default_synth.stack.notifications.key)
    topic = default_synth.resources[topic_id]["Properties"]
    # Then it uses the customer-managed key (whose policy lets CloudWatch use it)
    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    # And its policy denies publishing without TLS
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in default_synth.of_type("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": topic_id}]
    ]
    assert any(
        s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        for s in policy
    )


def test_operators_default_to_the_notification_addresses(default_synth):
    # Given no operations_emails in the context, then the notification addresses get the alarms
    topic_ref = _operations_topic_ref(default_synth)
    subscriptions = [
        s["Properties"]
        for s in default_synth.of_type("AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == topic_ref
    ]
    assert sorted(s["Endpoint"] for s in subscriptions) == sorted(EMAILS)
    assert {s["Protocol"] for s in subscriptions} == {"email"}


def test_a_notification_sns_could_not_deliver_raises_an_alarm(default_synth):
    queue_id = default_synth.logical_id(default_synth.stack.notifications.undelivered)
    alarm = _alarm_with_dimension(default_synth, {"Fn::GetAtt": [queue_id, "QueueName"]})
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Threshold"] == 1
    assert alarm["AlarmActions"] == [_operations_topic_ref(default_synth)]


def test_the_stable_endpoints_rollback_alarms_watch_its_variant_and_email_operations(
    default_synth,
):
    # Given the alarms the deploy step names in UpdateEndpoint's AutoRollbackConfiguration
    by_name = {a["AlarmName"]: a for a in _alarms(default_synth)}
    start_run = default_synth.resources[
        default_synth.logical_id(default_synth.stack.start_run.function)
    ]
    names = start_run["Properties"]["Environment"]["Variables"]["ENDPOINT_ALARM_NAMES"]
    # Then start-run hands the pipeline exactly those two names
    assert names.split(",") == [a.name("mnist-classifier") for a in endpoint_alarms.ALARMS]
    for alarm in endpoint_alarms.ALARMS:
        made = by_name[alarm.name("mnist-classifier")]
        # on the endpoint's variant (AWS/SageMaker, EndpointName + VariantName AllTraffic)
        assert (made["Namespace"], made["MetricName"]) == ("AWS/SageMaker", alarm.metric)
        assert made["Dimensions"] == [
            {"Name": "EndpointName", "Value": "mnist-classifier"},
            {"Name": "VariantName", "Value": "AllTraffic"},
        ]
        assert (made["Statistic"], made["Threshold"]) == (alarm.statistic, alarm.threshold)
        assert made["TreatMissingData"] == "notBreaching"
        # reaching ALARM within the default baking period (two one-minute periods)
        assert made["Period"] * made["EvaluationPeriods"] <= 5 * 60
        assert made["AlarmActions"] == [_operations_topic_ref(default_synth)]
