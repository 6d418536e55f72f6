"""Stack outputs: what a user needs after `cdk deploy`."""

from __future__ import annotations

from core import contracts
from core.contracts import INCOMING_PREFIX
from stacks import names
from tests.infra.cfn_text import render
from tests.infra.variants import CLUSTER


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


def test_the_stack_exports_what_mnistflow_verify_reads(default_synth):
    # Given the default stack (cluster mode, a cluster named)
    outputs = default_synth.template.to_json()["Outputs"]
    stack = default_synth.stack
    # Then every output verify reads is there, naming what the stack made
    assert set(contracts.VERIFIED_OUTPUTS) | {contracts.OUTPUT_EKS_CLUSTER_NAME} <= set(outputs)
    assert outputs[contracts.OUTPUT_KFP_MODE]["Value"] == "cluster"
    assert outputs[contracts.OUTPUT_EKS_CLUSTER_NAME]["Value"] == CLUSTER
    assert outputs[contracts.OUTPUT_KFP_NAMESPACE]["Value"] == "kubeflow"
    assert outputs[contracts.OUTPUT_KFP_SERVICE_ACCOUNT]["Value"] == "mnistflow-pipeline"
    for output, function in (
        (contracts.OUTPUT_START_RUN_ROLE_ARN, stack.start_run),
        (contracts.OUTPUT_WATCHDOG_ROLE_ARN, stack.watchdog),
    ):
        role_id = stack.get_logical_id(function.role.node.default_child)
        assert outputs[output]["Value"] == {"Fn::GetAtt": [role_id, "Arn"]}
    # and the alarm names are those of every alarm in the template, each notifying operations
    alarms = default_synth.of_type("AWS::CloudWatch::Alarm")
    named = render(outputs[contracts.OUTPUT_ALARM_NAMES]["Value"]).split(",")
    topic = {"Ref": default_synth.logical_id(stack.operations.topic)}
    assert sorted(named) == sorted("${" + logical_id + "}" for logical_id in alarms)
    assert all(a["Properties"]["AlarmActions"] == [topic] for a in alarms.values())


def test_without_a_cluster_name_there_is_no_cluster_output(url_mode_synth):
    outputs = url_mode_synth.template.to_json()["Outputs"]
    assert contracts.OUTPUT_EKS_CLUSTER_NAME not in outputs
    assert set(contracts.VERIFIED_OUTPUTS) <= set(outputs)
    assert outputs[contracts.OUTPUT_KFP_MODE]["Value"] == "url"
