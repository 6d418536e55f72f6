"""The data resources carry the fixed names the local stack also uses (stacks.names)."""

from __future__ import annotations

from aws_cdk.assertions import Match

from core import contracts as names


def test_the_table_topic_and_bucket_have_the_shared_names(template):
    template.has_resource_properties("AWS::DynamoDB::Table", {"TableName": names.RUNS_TABLE_NAME})
    template.has_resource_properties(
        "AWS::SNS::Topic", {"TopicName": names.NOTIFICATION_TOPIC_NAME}
    )
    # Given the account and region tokens, the bucket name is the shared format around them
    expected = names.data_bucket_name("{account}", "{region}")
    prefix, rest = expected.split("{account}")
    middle = rest.split("{region}")[0]
    template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": {
                "Fn::Join": [
                    "",
                    [prefix, {"Ref": "AWS::AccountId"}, middle, {"Ref": "AWS::Region"}],
                ]
            },
            "VersioningConfiguration": Match.any_value(),
        },
    )
