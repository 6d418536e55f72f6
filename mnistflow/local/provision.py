"""The emulated account: the stack's data resources under the stack's names, plus the queues that
stand in for what the emulator cannot do (invoke a Lambda from S3 or EventBridge, send email).

One function, used by the local stack, the integration tests and the pipeline harness; it works
on any boto3 client factory (moto's server, or moto in process).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import contracts
from core.contracts import (
    INCOMING_PREFIX,
    PIPELINE_DETAIL_TYPES,
    PIPELINE_EVENT_BUS,
    PIPELINE_EVENT_SOURCE,
)
from core.run_record import ATTR

ClientFactory = Callable[[str], Any]
# The trust policy the stack gives SageMaker's execution role (stacks.sagemaker_role).
SAGEMAKER_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "sagemaker.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class LocalNames:
    """The stack's names for the data resources, plus what only the emulated account has."""

    data_bucket: str
    runs_table: str = contracts.RUNS_TABLE_NAME
    topic: str = contracts.NOTIFICATION_TOPIC_NAME
    uploads_queue: str = "mnistflow-local-uploads"  # S3 -> start-run
    inbox_queue: str = "mnistflow-local-inbox"  # SNS -> the emails
    pipeline_events_queue: str = "mnistflow-local-pipeline-events"  # EventBridge -> track-progress
    pipeline_events_rule: str = "mnistflow-local-pipeline-events"
    # "A slot is free" -> start-run (the stack's run-slots queue), and its dead-letter queue.
    run_slots_queue: str = "mnistflow-local-run-slots"
    run_slots_dlq: str = "mnistflow-local-run-slots-dlq"
    # Each function's on-failure destination (the stack's failure queues).
    failure_queues: tuple[tuple[str, str], ...] = tuple(
        (function, f"mnistflow-local-{function}-failures") for function in contracts.FUNCTIONS
    )
    sagemaker_role: str = "mnistflow-local-sagemaker-execution"
    kfp_token_secret: str = "mnistflow-local-kfp-token"  # noqa: S105 (a name, not a secret)

    @classmethod
    def for_account(cls, account: str, region: str) -> LocalNames:
        return cls(data_bucket=contracts.data_bucket_name(account, region))


@dataclass(frozen=True)
class Provisioned:
    names: LocalNames
    topic_arn: str
    sagemaker_role_arn: str
    kfp_token_secret_arn: str
    queue_urls: dict[str, str]  # by queue name


def provision(client: ClientFactory, names: LocalNames, *, kfp_token: str) -> Provisioned:
    """Creates every resource; `kfp_token` is what the token secret holds (url mode)."""
    queues = {
        name: _queue(client, name)
        for name in (
            names.uploads_queue,
            names.inbox_queue,
            names.pipeline_events_queue,
            *dict(names.failure_queues).values(),
            names.run_slots_dlq,
        )
    }
    # As the stack's: a message start-run failed on RUN_SLOTS_MAX_RECEIVES times goes to the DLQ.
    redrive = {
        "deadLetterTargetArn": queues[names.run_slots_dlq][1],
        "maxReceiveCount": str(contracts.RUN_SLOTS_MAX_RECEIVES),
    }
    queues[names.run_slots_queue] = _queue(
        client, names.run_slots_queue, {"RedrivePolicy": json.dumps(redrive)}
    )
    s3 = client("s3")
    s3.create_bucket(Bucket=names.data_bucket)
    s3.put_bucket_versioning(
        Bucket=names.data_bucket, VersioningConfiguration={"Status": "Enabled"}
    )
    s3.put_bucket_notification_configuration(
        Bucket=names.data_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": queues[names.uploads_queue][1],
                    "Events": ["s3:ObjectCreated:*"],
                    # As the stack's trigger: everything under incoming/, the Lambda checks
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": INCOMING_PREFIX}]}
                    },
                }
            ]
        },
    )
    create_runs_table(client, names.runs_table)
    sns = client("sns")
    topic_arn = sns.create_topic(Name=names.topic)["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queues[names.inbox_queue][1])
    events = client("events")
    events.create_event_bus(Name=PIPELINE_EVENT_BUS)
    events.put_rule(
        Name=names.pipeline_events_rule,
        EventBusName=PIPELINE_EVENT_BUS,
        EventPattern=json.dumps(
            {"source": [PIPELINE_EVENT_SOURCE], "detail-type": list(PIPELINE_DETAIL_TYPES)}
        ),
    )
    events.put_targets(
        Rule=names.pipeline_events_rule,
        EventBusName=PIPELINE_EVENT_BUS,
        Targets=[{"Id": "queue", "Arn": queues[names.pipeline_events_queue][1]}],
    )
    # The model registry (the stack's CfnModelPackageGroup, stacks/model_registry.py).
    client("sagemaker").create_model_package_group(
        ModelPackageGroupName=contracts.MODEL_PACKAGE_GROUP,
        ModelPackageGroupDescription=contracts.MODEL_PACKAGE_GROUP_DESCRIPTION,
    )
    role = client("iam").create_role(
        RoleName=names.sagemaker_role, AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST_POLICY)
    )
    secret = client("secretsmanager").create_secret(
        Name=names.kfp_token_secret, SecretString=kfp_token
    )
    return Provisioned(
        names=names,
        topic_arn=topic_arn,
        sagemaker_role_arn=role["Role"]["Arn"],
        kfp_token_secret_arn=secret["ARN"],
        queue_urls={name: url for name, (url, _) in queues.items()},
    )


def create_runs_table(client: ClientFactory, name: str) -> None:
    """The runs table as the stack defines it (stacks.runs_table): keyed by run key."""
    client("dynamodb").create_table(
        TableName=name,
        KeySchema=[{"AttributeName": ATTR.run_key, "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": ATTR.run_key, "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def _queue(
    client: ClientFactory, name: str, attributes: dict[str, str] | None = None
) -> tuple[str, str]:
    sqs = client("sqs")
    url = sqs.create_queue(QueueName=name, Attributes=attributes or {})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    return url, arn


def drain(client: ClientFactory, queue_url: str) -> list[dict[str, Any]]:
    """Every message waiting in the queue, deleted once read, as parsed JSON bodies."""
    sqs = client("sqs")
    bodies = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages"):
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            bodies.append(json.loads(message["Body"]))
    return bodies


@dataclass(frozen=True)
class Email:
    """One notification, as SNS delivers it to a subscribed queue."""

    kind: str
    run_key: str
    subject: str
    message: str

    @classmethod
    def from_sqs_body(cls, body: dict[str, Any]) -> Email:
        attributes = body.get("MessageAttributes", {})
        return cls(
            kind=attributes.get(contracts.MESSAGE_ATTRIBUTE_KIND, {}).get("Value", ""),
            run_key=attributes.get(contracts.MESSAGE_ATTRIBUTE_RUN_KEY, {}).get("Value", ""),
            subject=body.get("Subject", ""),
            message=body.get("Message", ""),
        )


def read_inbox(client: ClientFactory, provisioned: Provisioned) -> list[Email]:
    """Everything published to the topic since the last read."""
    url = provisioned.queue_urls[provisioned.names.inbox_queue]
    return [Email.from_sqs_body(body) for body in drain(client, url)]
