"""Progress tracking: the EventBridge rules, their targets, the dead-letter queue, the Lambda."""

from __future__ import annotations

import pytest

from core import contracts
from core.contracts import (
    PIPELINE_DETAIL_TYPES,
    PIPELINE_EVENT_DETAIL_TYPE,
    PIPELINE_EVENT_SOURCE,
)
from core.settings import cdk_json_context, environment, function_parameters, read_context
from tests.infra.cfn_text import actions_of, as_list, resources_of, role_statements
from tests.infra.variants import CLUSTER_CONTEXT

# The SageMaker events the product follows and the detail field that names the resource,
# spelled as AWS documents them ("Events that Amazon SageMaker sends to Amazon EventBridge",
# https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html);
# a typo here or in core.sagemaker_events would silently match nothing.
SAGEMAKER_RULES = {
    "SageMaker Training Job State Change": "TrainingJobName",
    "SageMaker Transform Job State Change": "TransformJobName",
    "SageMaker Endpoint State Change": "EndpointName",
}
NAME_PREFIX_FILTER = [{"prefix": "mnist-"}]
TARGET_RETRY_POLICY = {"MaximumRetryAttempts": 8, "MaximumEventAgeInSeconds": 6 * 60 * 60}
# What the track-progress function reads, as the schema declares it (the runtime sets the region).
TRACK_PROGRESS_ENVIRONMENT = {
    p.env_name for p in function_parameters(contracts.TRACK_PROGRESS) if p.source != "lambda"
}
# Its own work (record, announce), plus what Lambda needs to trace and to park failed events.
TRACK_PROGRESS_ACTIONS = {
    "dynamodb:UpdateItem", "sns:Publish", "kms:Decrypt", "kms:GenerateDataKey*",
    "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
    "xray:PutTelemetryRecords", "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
    "pricing:GetProducts",
}  # fmt: skip


def _rules(synth) -> dict[str, dict]:
    """The progress rules (the watchdog's schedule is a rule too, with no event pattern)."""
    return {
        k: v["Properties"]
        for k, v in synth.of_type("AWS::Events::Rule").items()
        if "EventPattern" in v["Properties"]
    }


def _rules_for(synth, detail_type: str) -> list[dict]:
    return [r for r in _rules(synth).values() if detail_type in r["EventPattern"]["detail-type"]]


def _ids(synth) -> tuple[str, str]:
    track = synth.stack.track_progress
    return synth.logical_id(track.function), synth.logical_id(track.failed_events)


def _function(synth) -> dict:
    return synth.resources[synth.logical_id(synth.stack.track_progress.function)]["Properties"]


@pytest.mark.parametrize(("detail_type", "name_field"), SAGEMAKER_RULES.items())
def test_each_sagemaker_state_change_has_a_rule_narrowed_to_product_names(
    default_synth, detail_type, name_field
):
    # Given the rules for one SageMaker detail type
    (rule,) = _rules_for(default_synth, detail_type)
    # Then it matches SageMaker's events of that type whose resource name starts mnist-, only
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": [detail_type],
        "detail": {name_field: NAME_PREFIX_FILTER},
    }
    assert rule["State"] == "ENABLED"


def test_the_pipelines_final_state_and_evaluation_events_have_a_rule(default_synth):
    (rule,) = _rules_for(default_synth, PIPELINE_EVENT_DETAIL_TYPE)
    assert rule["EventPattern"] == {
        "source": [PIPELINE_EVENT_SOURCE],
        "detail-type": list(PIPELINE_DETAIL_TYPES),
    }


def test_sagemaker_rules_listen_on_the_default_bus_the_pipelines_on_its_own(default_synth):
    rules = _rules(default_synth).values()
    detail_types = sorted(rule["EventPattern"]["detail-type"][0] for rule in rules)
    assert detail_types == sorted([*SAGEMAKER_RULES, PIPELINE_EVENT_DETAIL_TYPE])
    # No EventBusName means the default bus, where SageMaker puts its events
    bus_id = default_synth.logical_id(default_synth.stack.progress_rules.pipeline_bus)
    for rule in rules:
        if rule["EventPattern"]["detail-type"] == list(PIPELINE_DETAIL_TYPES):
            assert rule["EventBusName"] == {"Ref": bus_id}
        else:
            assert "EventBusName" not in rule


def test_every_rule_invokes_track_progress_with_retries_and_the_dead_letter_queue(default_synth):
    function_id, queue_id = _ids(default_synth)
    for rule in _rules(default_synth).values():
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
        assert target["RetryPolicy"] == TARGET_RETRY_POLICY
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [queue_id, "Arn"]}}


def test_each_rule_and_only_the_rules_may_invoke_the_function(default_synth):
    # Given the function's resource-based permissions
    function_id, _ = _ids(default_synth)
    permissions = [
        p["Properties"]
        for p in default_synth.of_type("AWS::Lambda::Permission").values()
        if p["Properties"]["FunctionName"] == {"Fn::GetAtt": [function_id, "Arn"]}
    ]
    # Then there is one per rule, for EventBridge, scoped to that rule's ARN
    assert {p["Principal"] for p in permissions} == {"events.amazonaws.com"}
    assert sorted(p["SourceArn"]["Fn::GetAtt"][0] for p in permissions) == sorted(
        _rules(default_synth)
    )


def test_dead_letter_queue_is_encrypted_tls_only_and_open_to_the_rules_alone(default_synth):
    # Given the dead-letter queue and its policy
    _, queue_id = _ids(default_synth)
    assert default_synth.resources[queue_id]["Properties"]["SqsManagedSseEnabled"] is True
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in default_synth.of_type("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    # Then requests without TLS are denied
    denies = [s for s in policy if s["Effect"] == "Deny"]
    assert [d["Condition"] for d in denies] == [{"Bool": {"aws:SecureTransport": "false"}}]
    # And EventBridge may only send messages, and only on behalf of the tracking rules
    allows = [s for s in policy if s["Effect"] == "Allow"]
    assert {s["Principal"]["Service"] for s in allows} == {"events.amazonaws.com"}
    assert actions_of(allows) == {"sqs:SendMessage"}
    assert sorted(
        s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::GetAtt"][0] for s in allows
    ) == (sorted(_rules(default_synth)))


def test_function_failures_are_retried_then_kept_in_the_dead_letter_queue(default_synth):
    function_id, queue_id = _ids(default_synth)
    (config,) = [
        c["Properties"]
        for c in default_synth.of_type("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    assert config["MaximumRetryAttempts"] == 2
    assert config["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": [queue_id, "Arn"]
    }


def test_track_progress_runs_the_shared_asset_on_python_312_with_tracing_and_json_logs(
    default_synth,
):
    function = _function(default_synth)
    start_run = default_synth.resources[
        default_synth.logical_id(default_synth.stack.start_run.function)
    ]
    assert function["Handler"] == "lambdas.handlers.track_progress.handler"
    assert function["Runtime"] == "python3.12"
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["LoggingConfig"]["LogFormat"] == "JSON"
    # The same asset as start-run: only the handler differs
    assert function["Code"] == start_run["Properties"]["Code"]
    # And its log group keeps logs for the configured time, not forever
    log_group_id = default_synth.logical_id(default_synth.stack.track_progress.log_group)
    assert function["LoggingConfig"]["LogGroup"] == {"Ref": log_group_id}
    assert default_synth.resources[log_group_id]["Properties"]["RetentionInDays"] == 30


def test_track_progress_gets_exactly_the_configuration_its_settings_read(default_synth):
    # Given the function's environment
    variables = _function(default_synth)["Environment"]["Variables"]
    stack = default_synth.stack
    # Then the names match the contract and the values point at this stack's table and topic
    assert set(variables) == TRACK_PROGRESS_ENVIRONMENT
    assert variables["RUNS_TABLE_NAME"] == {"Ref": default_synth.logical_id(stack.runs_table.table)}
    assert variables["NOTIFICATION_TOPIC_ARN"] == {
        "Ref": default_synth.logical_id(stack.notifications.topic)
    }
    assert variables["KFP_UI_URL"] == ""
    # And its logs and traces are told apart from start-run's, its metrics are not
    assert variables["POWERTOOLS_SERVICE_NAME"] == contracts.TRACK_PROGRESS
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == contracts.METRICS_NAMESPACE


def test_track_progress_may_only_record_runs_announce_and_park_failures(default_synth):
    # Given the track-progress role's statements
    role_id = default_synth.logical_id(default_synth.stack.track_progress.function.role)
    statements = role_statements(default_synth.resources, role_id)
    table_arn = "${" + default_synth.logical_id(default_synth.stack.runs_table.table) + ".Arn}"
    _, queue_id = _ids(default_synth)
    # Then its actions are exactly its work: no Scan, no Query, no service-wide action
    assert actions_of(statements) == TRACK_PROGRESS_ACTIONS
    by_service = {}
    for statement in statements:
        for action in as_list(statement["Action"]):
            by_service.setdefault(action.split(":")[0], set()).update(resources_of(statement))
    # And each resource is this stack's own, except X-Ray's, which has no resource type
    assert by_service["dynamodb"] == {table_arn}
    assert by_service["sns"] == {
        "${" + default_synth.logical_id(default_synth.stack.notifications.topic) + "}"
    }
    slots_id = default_synth.logical_id(default_synth.stack.run_slots.queue)
    assert by_service["sqs"] == {"${" + queue_id + ".Arn}", "${" + slots_id + ".Arn}"}
    assert by_service["xray"] == {"*"}
    assert by_service["pricing"] == {"*"}  # GetProducts has no resource type
    assert "*" not in by_service["dynamodb"] | by_service["sns"] | by_service["kms"]


def test_the_configured_kfp_ui_url_reaches_track_progress_for_run_links():
    # Given a KFP UI URL in the context (with a trailing slash)
    settings = read_context(
        {**cdk_json_context(), **CLUSTER_CONTEXT, "kfp_ui_url": "https://kfp.example.com/"}
    )
    # When the track-progress environment is built
    variables = environment(
        contracts.TRACK_PROGRESS,
        {
            **settings,
            "runs_table_name": "runs",
            "notification_topic_arn": "topic",
            "run_slots_queue_url": "https://sqs.eu-west-1.amazonaws.com/1/q",
        },
    )
    # Then the links it writes start from the normalized URL
    assert variables["KFP_UI_URL"] == "https://kfp.example.com"
