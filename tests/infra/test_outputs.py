"""Stack outputs: what a user needs after `cdk deploy`."""

from __future__ import annotations

from core.contracts import INCOMING_PREFIX
from stacks import names
from tests.infra.cfn_text import render


def test_stack_exports_what_users_and_operators_need(default_synth):
    outputs = default_synth.template.to_json()["Outputs"]
    stack = default_synth.stack
    expected = {
        names.OUTPUT_BUCKET_NAME: {"Ref": default_synth.logical_id(stack.data_bucket.bucket)},
        names.OUTPUT_TOPIC_ARN: {"Ref": default_synth.logical_id(stack.notifications.topic)},
        names.OUTPUT_TABLE_NAME: {"Ref": default_synth.logical_id(stack.runs_table.table)},
        names.OUTPUT_SAGEMAKER_ROLE_ARN: {
            "Fn::GetAtt": [default_synth.logical_id(stack.sagemaker_execution.role), "Arn"]
        },
        names.OUTPUT_INVOKE_POLICY_ARN: {
            "Ref": default_synth.logical_id(stack.endpoint_invoke.policy)
        },
        names.OUTPUT_USER_POLICY_ARN: {"Ref": default_synth.logical_id(stack.user_policy.policy)},
        names.OUTPUT_TRACK_PROGRESS_FUNCTION: {
            "Ref": default_synth.logical_id(stack.track_progress.function)
        },
        names.OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE: {
            "Ref": default_synth.logical_id(stack.track_progress.failed_events)
        },
        names.OUTPUT_OPERATIONS_TOPIC_ARN: {
            "Ref": default_synth.logical_id(stack.operations.topic)
        },
    }
    for name, value in expected.items():
        assert outputs[name]["Value"] == value, name


def test_upload_prefix_is_the_s3_uri_of_incoming(default_synth):
    outputs = default_synth.template.to_json()["Outputs"]
    bucket_id = default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    assert render(outputs[names.OUTPUT_UPLOAD_PREFIX]["Value"]) == (
        "s3://${" + bucket_id + "}/" + INCOMING_PREFIX
    )
