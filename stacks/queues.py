"""Last-stop queues: where what could not be handled waits for a person (a function's failed
events, notifications SNS could not deliver). Encrypted, TLS only, kept 14 days, watched by an
alarm; nothing consumes them by itself, so they have no dead-letter queue of their own."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

RETENTION_DAYS = 14


def last_stop_queue(scope: Construct, construct_id: str, *, holds: str) -> sqs.Queue:
    queue = sqs.Queue(
        scope,
        construct_id,
        encryption=sqs.QueueEncryption.SQS_MANAGED,
        enforce_ssl=True,
        retention_period=Duration.days(RETENTION_DAYS),
    )
    reason = (
        f"This queue is itself the last stop for {holds}; nothing consumes it automatically "
        "(an alarm tells the operators), so it needs no dead-letter queue of its own."
    )
    NagSuppressions.add_resource_suppressions(
        queue,
        [
            NagPackSuppression(id="AwsSolutions-SQS3", reason=reason),
            NagPackSuppression(id="Serverless-SQSRedrivePolicy", reason=reason),
        ],
    )
    return queue
