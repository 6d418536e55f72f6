"""`redrive`: hand the events on the functions' failure queues back to their functions.

Each message is an event a function could not handle after its retries: Lambda's invocation
record (the event is its `requestPayload`) or, from an EventBridge rule's dead-letter queue,
the event itself (core.lambda_destinations). Each is invoked synchronously, so the answer says
whether it worked; the message is deleted only then, and kept (visible again) when the function
fails again. Handing an event back is safe: a run key never gets a second run, a record only
moves forward, each email goes out once.

SQS's own "redrive" cannot do this: it moves messages back to a source queue, and these queues
have none.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from core import contracts, lambda_destinations

# Long enough for a synchronous start-run (its timeout is 120 s), so no other reader takes the
# message while its event is being handled.
VISIBILITY_SECONDS = 180
BATCH = 10


class RedriveError(Exception):
    pass


@dataclass(frozen=True)
class Redriven:
    """What became of one message."""

    function: str
    message_id: str
    why: str  # why it was on the queue
    outcome: str  # "redriven", "failed again: ...", or "would redrive" (dry run)


@dataclass(frozen=True)
class Target:
    function: str  # the product's name for it (start-run, track-progress)
    function_name: str  # the deployed function's name
    queue_url: str


def targets_from_stack(cloudformation, stack_name: str = contracts.STACK_NAME) -> list[Target]:
    """The functions and failure queues, from the deployed stack's outputs."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError as error:
        message = error.response["Error"].get("Message", str(error))
        raise RedriveError(f"cannot read stack {stack_name}: {message}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    targets = []
    for function, (function_output, queue_output) in contracts.REDRIVEN.items():
        missing = [k for k in (function_output, queue_output) if k not in outputs]
        if missing:
            raise RedriveError(f"stack {stack_name} has no output {', '.join(missing)}")
        targets.append(Target(function, outputs[function_output], outputs[queue_output]))
    return targets


def lambda_invoker(lambda_client) -> Callable[[str, Any], str | None]:
    """Invokes a function synchronously: None when it returned, else the error it reported."""

    def invoke(function_name: str, event: Any) -> str | None:
        answer = lambda_client.invoke(
            FunctionName=function_name,
            InvocationType="RequestResponse",
            Payload=json.dumps(event).encode(),
        )
        if "FunctionError" not in answer:
            return None
        payload = answer["Payload"].read().decode("utf-8", "replace")
        try:
            detail = json.loads(payload)
            return f"{detail.get('errorType', 'Error')}: {detail.get('errorMessage', '')}"
        except (ValueError, AttributeError):
            return payload[:300] or answer["FunctionError"]

    return invoke


def redrive(
    sqs,
    invoke: Callable[[str, Any], str | None],
    targets: list[Target],
    *,
    dry_run: bool = False,
) -> list[Redriven]:
    done = []
    for target in targets:
        kept = []
        for message in _messages(sqs, target.queue_url, dry_run):
            result = _one(sqs, invoke, target, message, dry_run)
            if result.outcome.startswith(("failed again", "kept")) and not dry_run:
                kept.append(message["ReceiptHandle"])
            done.append(result)
        # Visible again at once (once the queue is read through, so none is read twice), for
        # the next redrive; meanwhile the queue's alarm keeps saying they are there.
        for handle in kept:
            sqs.change_message_visibility(
                QueueUrl=target.queue_url, ReceiptHandle=handle, VisibilityTimeout=0
            )
    return done


def _messages(sqs, queue_url: str, dry_run: bool) -> Iterator[dict[str, Any]]:
    """Every message once. A dry run leaves them visible (and stops at the first repeat)."""
    seen: set[str] = set()
    while True:
        batch = sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=BATCH,
            VisibilityTimeout=0 if dry_run else VISIBILITY_SECONDS,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        fresh = [m for m in batch if m["MessageId"] not in seen]
        if not fresh:
            return
        for message in fresh:
            seen.add(message["MessageId"])
            yield message


def _one(sqs, invoke, target: Target, message: dict[str, Any], dry_run: bool) -> Redriven:
    try:
        body = json.loads(message["Body"])
    except ValueError:
        return Redriven(target.function, message["MessageId"], "not JSON", "kept: not an event")
    why = lambda_destinations.why(body)
    if dry_run:
        return Redriven(target.function, message["MessageId"], why, "would redrive")
    error = invoke(target.function_name, lambda_destinations.event_of(body))
    if error is not None:
        return Redriven(target.function, message["MessageId"], why, f"failed again: {error}")
    sqs.delete_message(QueueUrl=target.queue_url, ReceiptHandle=message["ReceiptHandle"])
    return Redriven(target.function, message["MessageId"], why, "redriven")


def describe(results: list[Redriven], dry_run: bool) -> str:
    if not results:
        return "Both failure queues are empty: nothing to redrive."
    lines = [f"{r.function}  {r.message_id}  {r.why}  -> {r.outcome}" for r in results]
    again = sum(r.outcome.startswith("failed again") for r in results)
    done = sum(r.outcome == "redriven" for r in results)
    if dry_run:
        lines.append(f"{len(results)} message(s) would be handed back (dry run: none touched).")
    else:
        lines.append(f"{done} redriven and deleted, {again} failed again and kept.")
    return "\n".join(lines)
