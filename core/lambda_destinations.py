"""What a function's failure queue holds, and how to get the event back out of it.

Two kinds of message land there:
- Lambda's invocation record, from the function's on-failure destination, after its retries
  (AWS Lambda developer guide, "Capturing records of Lambda asynchronous invocations", the
  example invocation record): `requestContext` (`requestId`, `functionArn`, `condition`
  "RetriesExhausted" or "EventAgeExceeded", `approximateInvokeCount`), `requestPayload` (the
  event as the function got it), `responseContext` (`functionError`) and `responsePayload`;
- an EventBridge event itself, from a rule target's dead-letter queue (EventBridge user guide,
  "Using dead-letter queues to process undelivered events": the message body is the event;
  the error is in the message attributes RULE_ARN, TARGET_ARN, ERROR_CODE, ERROR_MESSAGE).

Standard library only: the local stack writes invocation records with `invocation_record`,
and `mnistflow redrive` reads either kind with `event_of`.
"""

from __future__ import annotations

from typing import Any

RECORD_VERSION = "1.0"
RETRIES_EXHAUSTED = "RetriesExhausted"
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
FUNCTION_ERROR_UNHANDLED = "Unhandled"


def is_invocation_record(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and "requestPayload" in body
        and isinstance(body.get("requestContext"), dict)
    )


def event_of(body: Any) -> Any:
    """The event to hand back to the function: the record's requestPayload, else the body."""
    return body["requestPayload"] if is_invocation_record(body) else body


def why(body: Any) -> str:
    """One line on why the message is there, from what it carries."""
    if not is_invocation_record(body):
        return "an event EventBridge could not deliver"
    context = body["requestContext"]
    error = body.get("responsePayload") or {}
    message = error.get("errorMessage", "") if isinstance(error, dict) else str(error)
    return (
        f"{context.get('condition', '?')} after {context.get('approximateInvokeCount', '?')}"
        f" attempt(s){': ' + message if message else ''}"
    )


def invocation_record(
    event: Any,
    *,
    request_id: str,
    function_arn: str,
    attempts: int,
    error_type: str,
    error_message: str,
    timestamp: str,
) -> dict[str, Any]:
    """The record Lambda sends to the on-failure destination after the last retry."""
    return {
        "version": RECORD_VERSION,
        "timestamp": timestamp,
        "requestContext": {
            "requestId": request_id,
            "functionArn": f"{function_arn}:$LATEST",
            "condition": RETRIES_EXHAUSTED,
            "approximateInvokeCount": attempts,
        },
        "requestPayload": event,
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": FUNCTION_ERROR_UNHANDLED,
        },
        "responsePayload": {"errorType": error_type, "errorMessage": error_message},
    }
