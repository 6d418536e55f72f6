"""The start-run Lambda: code, configuration, failure handling and permissions."""

from __future__ import annotations

import pytest

from core import contracts
from core.contracts import PIPELINE_SPEC_FILE
from core.settings import function_parameters
from tests.infra.cfn_text import actions_of, as_list, render, resources_of, role_statements
from tests.infra.variants import CLUSTER, TOKEN_SECRET_NAME

# The configuration start-run reads, as the schema declares it (the runtime sets the region).
START_RUN_ENVIRONMENT = {
    p.env_name for p in function_parameters(contracts.START_RUN) if p.source != "lambda"
}
# Everything the start-run role may do: its own work, plus what Lambda itself needs to
# trace (X-Ray) and to send failed events to the on-failure queue.
BASE_ACTIONS = {
    "dynamodb:UpdateItem", "sns:Publish", "kms:Decrypt", "kms:GenerateDataKey*",
    "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
    "xray:PutTelemetryRecords", "sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
}  # fmt: skip
# Starting queued runs: the run-slots queue's event source mapping (consume), the QUEUED
# records, the slot count and the ConditionCheck of the queueing transaction.
RUN_SLOTS_ACTIONS = {
    "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
    "dynamodb:GetItem", "dynamodb:Scan", "dynamodb:ConditionCheckItem",
}  # fmt: skip


def _function(synth) -> dict:
    return synth.resources[synth.logical_id(synth.stack.start_run.function)]["Properties"]


def _start_run_statements(synth) -> list[dict]:
    role_id = synth.logical_id(synth.stack.start_run.function.role)
    return role_statements(synth.resources, role_id)


def test_start_run_runs_the_shared_package_on_python_312_with_tracing_and_json_logs(
    default_synth,
):
    function = _function(default_synth)
    assert function["Runtime"] == "python3.12"
    assert function["Handler"] == "lambdas.handlers.start_run.handler"
    assert function["TracingConfig"] == {"Mode": "Active"}
    assert function["LoggingConfig"]["LogFormat"] == "JSON"


def test_start_run_gets_exactly_the_configuration_its_settings_read(default_synth):
    # Given the function's environment
    variables = _function(default_synth)["Environment"]["Variables"]
    # Then the names match the contract and the values are the cheap defaults
    assert set(variables) == START_RUN_ENVIRONMENT
    assert variables["KFP_MODE"] == "cluster"
    assert variables["PIPELINE_SPEC_PATH"] == PIPELINE_SPEC_FILE
    assert variables["TRAIN_INSTANCE_TYPE"] == "ml.m5.large"
    assert variables["TRAIN_INSTANCE_COUNT"] == "1"
    assert variables["ENDPOINT_NAME"] == "mnist-classifier"  # the one stable endpoint
    assert variables["PER_RUN_ENDPOINTS"] == "false"
    assert variables["KFP_TOKEN_SECRET_ARN"] == ""
    role_id = default_synth.logical_id(default_synth.stack.sagemaker_execution.role)
    assert variables["SAGEMAKER_ROLE_ARN"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_the_asset_ships_the_packages_and_the_compiled_pipeline(lambda_asset):
    assert (lambda_asset / "core" / "contracts.py").is_file()
    assert (lambda_asset / "lambdas" / "handlers" / "start_run.py").is_file()
    assert (lambda_asset / PIPELINE_SPEC_FILE).is_file()
    assert not list(lambda_asset.rglob("__pycache__"))


def test_events_it_cannot_handle_are_retried_then_kept_in_an_encrypted_queue(default_synth):
    # Given the function's asynchronous invocation settings
    function_id = default_synth.logical_id(default_synth.stack.start_run.function)
    (config,) = [
        c
        for c in default_synth.of_type("AWS::Lambda::EventInvokeConfig").values()
        if c["Properties"]["FunctionName"] == {"Ref": function_id}
    ]
    queue_id = default_synth.logical_id(default_synth.stack.start_run.failed_events)
    # Then S3 events are retried twice and then go to the on-failure queue
    assert config["Properties"]["MaximumRetryAttempts"] == 2
    assert config["Properties"]["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": [queue_id, "Arn"]
    }
    # And that queue is encrypted and refuses requests without TLS
    assert default_synth.resources[queue_id]["Properties"]["SqsManagedSseEnabled"] is True
    (queue_policy,) = [
        p
        for p in default_synth.of_type("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    (deny,) = queue_policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_cluster_mode_role_may_only_record_runs_notify_and_describe_the_cluster(default_synth):
    # Given the start-run role's statements
    statements = _start_run_statements(default_synth)
    # Then its actions are exactly its work plus eks:DescribeCluster
    assert actions_of(statements) == BASE_ACTIONS | RUN_SLOTS_ACTIONS | {
        "eks:DescribeCluster",
        "s3:GetObject",
        "s3:GetObjectVersion",
    }
    by_sid = {statement.get("Sid"): statement for statement in statements}
    # (an upload's metadata may set its run's settings: read under incoming/ only)
    bucket_id = default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    assert resources_of(by_sid["ReadUploadMetadata"]) == ["${" + bucket_id + ".Arn}/incoming/*"]
    table_id = default_synth.logical_id(default_synth.stack.runs_table.table)
    assert resources_of(by_sid["WriteRunRecords"]) == ["${" + table_id + ".Arn}"]
    assert resources_of(by_sid["ReadClusterEndpoint"]) == [
        "arn:${AWS::Partition}:eks:${AWS::Region}:${AWS::AccountId}:cluster/" + CLUSTER
    ]


def test_url_mode_reads_the_token_secret_and_never_touches_the_cluster(url_mode_synth):
    # Given direct-URL mode with a token secret name
    statements = _start_run_statements(url_mode_synth)
    variables = _function(url_mode_synth)["Environment"]["Variables"]
    # Then the role reads that one secret and has no EKS permission or access entry
    actions = actions_of(statements)
    assert "secretsmanager:GetSecretValue" in actions
    assert not {action for action in actions if action.startswith("eks:")}
    url_mode_synth.template.resource_count_is("AWS::EKS::AccessEntry", 0)
    (secret_statement,) = [s for s in statements if s.get("Sid") == "ReadKfpToken"]
    assert resources_of(secret_statement) == [render(variables["KFP_TOKEN_SECRET_ARN"]) + "-??????"]
    assert render(variables["KFP_TOKEN_SECRET_ARN"]).endswith(f":secret:{TOKEN_SECRET_NAME}")
    assert variables["KFP_MODE"] == "url"
    assert variables["KFP_URL"] == "https://kfp.internal.example.com"


def test_url_mode_places_the_function_in_the_given_subnets(url_mode_synth):
    vpc_config = _function(url_mode_synth)["VpcConfig"]
    assert sorted(vpc_config["SubnetIds"]) == [
        "subnet-0123456789abcdef0",
        "subnet-0fedcba9876543210",
    ]
    assert len(vpc_config["SecurityGroupIds"]) == 1


@pytest.mark.parametrize("action", ["s3:*", "dynamodb:*", "sns:*", "*"])
def test_start_run_role_has_no_service_wide_action(default_synth, url_mode_synth, action):
    for synth in (default_synth, url_mode_synth):
        assert action not in actions_of(_start_run_statements(synth))


@pytest.mark.parametrize("function", ["start_run", "track_progress"])
def test_each_function_writes_logs_to_its_own_log_group_only(default_synth, function):
    # Instead of the basic execution policy's logs:* on "*": the function's own group's streams
    product_function = getattr(default_synth.stack, function)
    role_id = default_synth.logical_id(product_function.function.role)
    statements = role_statements(default_synth.resources, role_id)
    logs = [s for s in statements if any(a.startswith("logs:") for a in as_list(s["Action"]))]
    (statement,) = logs
    assert set(as_list(statement["Action"])) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    log_group_id = default_synth.logical_id(product_function.log_group)
    assert resources_of(statement) == ["${" + log_group_id + ".Arn}"]
    # And the role carries no AWS-managed policy at all
    assert "ManagedPolicyArns" not in default_synth.resources[role_id]["Properties"]
