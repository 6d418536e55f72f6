"""The notification topic (SNS): plain-text emails with `kind` and `run_key` attributes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.contracts import MESSAGE_ATTRIBUTE_KIND, MESSAGE_ATTRIBUTE_RUN_KEY
from lambdas.logic.ports import Notifier


class SnsNotifier(Notifier):
    def __init__(self, topic_arn: str, sns_client: Callable[[], Any]):
        self._topic_arn = topic_arn
        self._sns = sns_client

    def publish(self, kind: str, run_key: str, subject: str, message: str) -> None:
        self._sns().publish(
            TopicArn=self._topic_arn,
            Subject=subject,
            Message=message,
            MessageAttributes={
                MESSAGE_ATTRIBUTE_KIND: {"DataType": "String", "StringValue": kind},
                MESSAGE_ATTRIBUTE_RUN_KEY: {"DataType": "String", "StringValue": run_key},
            },
        )
