"""The run-slots queue (SQS): "a slot may be free", sent by whatever ends a run's hold on a
slot (track-progress, the watchdog, start-run itself), consumed by start-run alone, the one
function that creates KFP runs. Messages carry nothing a consumer relies on (the reason, for
the log): start-run reads the runs table, so a duplicate or a stale message starts nothing
twice, and a lost one is made up by the watchdog's next pass."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from lambdas.logic.ports import SlotSignal
from lambdas.observability import logger, metrics

# What an SQS record's eventSource says in the events Lambda's SQS event source mapping sends
# (AWS Lambda developer guide, "Using Lambda with Amazon SQS": example standard queue event).
SQS_EVENT_SOURCE = "aws:sqs"


class SqsSlotSignal(SlotSignal):
    def __init__(self, queue_url: str, sqs_client: Callable[[], Any]):
        self._queue_url = queue_url
        self._sqs = sqs_client

    def slot_free(self, reason: str) -> bool:
        try:
            self._sqs().send_message(
                QueueUrl=self._queue_url, MessageBody=json.dumps({"slot_free": reason[:500]})
            )
        except (BotoCoreError, ClientError) as error:
            logger.warning(
                '"A slot is free" not sent; the watchdog\'s next pass sends it',
                extra={"error": str(error), "reason": reason},
            )
            metrics.add_metric(name="SlotSignalsLost", unit="Count", value=1)
            return False
        return True


def is_slot_event(event: Any) -> bool:
    """True for an event from the run-slots queue's event source mapping."""
    records = event.get("Records") if isinstance(event, dict) else None
    return bool(records) and all(
        isinstance(r, dict) and r.get("eventSource") == SQS_EVENT_SOURCE for r in records
    )
