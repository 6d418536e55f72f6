"""The notification topic (SNS): plain-text emails with `kind` and `run_key` attributes.

SNS has no idempotent publish for topics that email (FIFO topics, which deduplicate, cannot
have email subscriptions), so a failed publish is classified for the caller: an error SNS
answered, or a connection never made, means nothing was sent and trying again is safe; a timeout
after sending means SNS may have accepted it (botocore's own retries are done by then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
)

from core.contracts import MESSAGE_ATTRIBUTE_KIND, MESSAGE_ATTRIBUTE_RUN_KEY
from lambdas.logic.ports import Notifier, PublishFailed

# Failures where the request surely did not reach SNS, or SNS answered it with an error.
NOT_SENT = (ClientError, ConnectTimeoutError, EndpointConnectionError, NoCredentialsError)


class SnsNotifier(Notifier):
    def __init__(self, topic_arn: str, sns_client: Callable[[], Any]):
        self._topic_arn = topic_arn
        self._sns = sns_client

    def publish(self, kind: str, run_key: str, subject: str, message: str) -> None:
        try:
            self._sns().publish(
                TopicArn=self._topic_arn,
                Subject=subject,
                Message=message,
                MessageAttributes={
                    MESSAGE_ATTRIBUTE_KIND: {"DataType": "String", "StringValue": kind},
                    MESSAGE_ATTRIBUTE_RUN_KEY: {"DataType": "String", "StringValue": run_key},
                },
            )
        except NOT_SENT as error:
            raise PublishFailed(f"SNS publish failed: {error}", maybe_sent=False) from error
        except BotoCoreError as error:  # a read timeout or a dropped answer, after sending
            raise PublishFailed(
                f"SNS publish answer lost ({type(error).__name__}: {error})", maybe_sent=True
            ) from error
