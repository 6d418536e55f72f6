"""The data bucket and the upload trigger."""

from __future__ import annotations

from aws_cdk.assertions import Match

from core.contracts import INCOMING_PREFIX, RUNS_PREFIX, SERVING_MODELS_PREFIX
from core.settings import cdk_json_context, read_context
from tests.infra.variants import CLUSTER_CONTEXT


def _lambda_notifications(synth) -> list[dict]:
    (notifications,) = synth.of_type("Custom::S3BucketNotifications").values()
    return notifications["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]


def _filter_rules(configuration: dict) -> dict[str, str]:
    rules = configuration["Filter"]["Key"]["FilterRules"]
    return {rule["Name"].lower(): rule["Value"] for rule in rules}


def test_every_upload_under_incoming_reaches_start_run_which_checks_the_suffix(default_synth):
    # Given the synthesized stack
    start_run_id = default_synth.logical_id(default_synth.stack.start_run.function)
    # When reading the bucket's Lambda notifications
    (configuration,) = _lambda_notifications(default_synth)
    # Then one covers everything created under incoming/, with no suffix filter: the Lambda
    # checks the suffix, so a wrong file gets a DATA_REJECTED email instead of silence
    assert _filter_rules(configuration) == {"prefix": INCOMING_PREFIX}
    assert configuration["Events"] == ["s3:ObjectCreated:*"]
    assert configuration["LambdaFunctionArn"] == {"Fn::GetAtt": [start_run_id, "Arn"]}


def test_nothing_the_pipeline_writes_under_runs_can_start_a_run(default_synth):
    # Given every notification the bucket sends anywhere
    (notifications,) = default_synth.of_type("Custom::S3BucketNotifications").values()
    configuration = notifications["Properties"]["NotificationConfiguration"]
    # When looking at their prefixes
    prefixes = [
        _filter_rules(entry).get("prefix", "") for kind in configuration.values() for entry in kind
    ]
    # Then each is incoming/, which runs/ is not under (an empty prefix would cover runs/ too)
    assert prefixes and all(prefix == INCOMING_PREFIX for prefix in prefixes)
    assert not RUNS_PREFIX.startswith(INCOMING_PREFIX)


def test_data_bucket_is_versioned_private_encrypted_and_logged(default_synth):
    # Given the data bucket and its access-log bucket
    bucket = default_synth.resources[
        default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    ]
    logs_id = default_synth.logical_id(default_synth.stack.data_bucket.logs_bucket)
    properties = bucket["Properties"]
    # Then versioning, encryption, the public access block and access logging are on
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    (encryption,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert properties["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}


def test_data_bucket_refuses_requests_without_tls(default_synth, template):
    # Given the data bucket's logical id
    bucket_id = default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    # Then its bucket policy denies every request that is not over TLS
    template.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "Bucket": {"Ref": bucket_id},
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "s3:*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            },
        },
    )


def test_run_outputs_expire_after_the_configured_days(default_synth):
    # Given the retention cdk.json sets for runs/
    days = read_context({**cdk_json_context(), **CLUSTER_CONTEXT}).runs_retention_days
    bucket = default_synth.resources[
        default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    ]
    # When reading the bucket's lifecycle rules
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    # Then one rule expires objects under runs/ after that many days, and none touches incoming/
    runs_rules = [rule for rule in rules if rule.get("Prefix") == RUNS_PREFIX]
    assert [rule["ExpirationInDays"] for rule in runs_rules] == [days]
    assert all("ExpirationInDays" not in rule for rule in rules if rule not in runs_rules)


def test_promoted_serving_models_never_expire_while_runs_do(default_synth):
    # Given the data bucket's lifecycle rules
    bucket = default_synth.resources[
        default_synth.logical_id(default_synth.stack.data_bucket.bucket)
    ]
    rules = bucket["Properties"]["LifecycleConfiguration"]["Rules"]
    # Then runs/ expires, and no rule expires the current version of anything under models/:
    # every expiring rule is scoped to a prefix that models/ is not under
    expiring = [rule for rule in rules if "ExpirationInDays" in rule]
    assert [rule.get("Prefix") for rule in expiring] == [RUNS_PREFIX]
    assert not SERVING_MODELS_PREFIX.startswith(RUNS_PREFIX)
    for rule in rules:
        if not rule.get("Prefix"):  # bucket-wide: old versions and uploads only
            assert "ExpirationInDays" not in rule and "ExpirationDate" not in rule
