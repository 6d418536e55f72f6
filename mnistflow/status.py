"""`status`: the runs table for people, newest run first, or one run's whole timeline."""

from __future__ import annotations

from boto3.dynamodb.types import TypeDeserializer

from runflow.contracts import RUN_KEY_ATTRIBUTE, STEPS
from runflow.logic.run_record import overall_status, step_statuses, timeline

_SHORT_STEPS = {"preprocess": "prep", "training": "train", "transform": "xform"}


class UnknownRun(LookupError):
    pass


def read_runs(dynamodb, table: str) -> list[dict]:
    """Every run record (the table holds one item per dataset version: a scan is fine)."""
    deserializer = TypeDeserializer()
    pages = dynamodb.get_paginator("scan").paginate(TableName=table)
    items = [
        {name: deserializer.deserialize(value) for name, value in item.items()}
        for page in pages
        for item in page["Items"]
    ]
    return sorted(items, key=lambda item: str(item.get("created_at", "")), reverse=True)


def read_run(dynamodb, table: str, run_key: str) -> dict:
    answer = dynamodb.get_item(TableName=table, Key={RUN_KEY_ATTRIBUTE: {"S": run_key}})
    if "Item" not in answer:
        raise UnknownRun(f"no run {run_key!r} in table {table}")
    deserializer = TypeDeserializer()
    return {name: deserializer.deserialize(value) for name, value in answer["Item"].items()}


def _dataset(item: dict) -> str:
    dataset = item.get("dataset") or {}
    return f"s3://{dataset['bucket']}/{dataset['key']}" if dataset else "(no dataset: orphan)"


def describe_runs(items: list[dict]) -> str:
    if not items:
        return "no runs yet"
    lines = []
    for item in items:
        steps = step_statuses(item)
        cells = [
            f"{_SHORT_STEPS.get(step, step)}={steps[step][0].lower()}"
            for step in STEPS
            if step in steps
        ]
        lines.append(
            f"{item['run_key']}  {overall_status(item):<12} {str(item.get('created_at', '')):<24}"
            f" {_dataset(item)}  {' '.join(cells)}".rstrip()
        )
    return "\n".join(lines)


def describe_run(item: dict) -> str:
    lines = [
        f"Run {item['run_key']}: {overall_status(item)}",
        f"  dataset   {_dataset(item)}",
    ]
    if item.get("kfp_run_id"):
        link = item.get("kfp_run_url") or "(no KFP UI address configured)"
        lines.append(f"  KFP run   {item['kfp_run_id']}  {link}")
    if item.get("reason"):
        lines.append(f"  reason    {item['reason']}")
    steps = step_statuses(item)
    if steps:
        lines.append("  steps")
        for step in STEPS:
            if step in steps:
                status, at = steps[step]
                lines.append(f"    {step:<11} {status:<12} {at}")
    events = [
        (str(e.get("at", "")), f"{e.get('event', '')}: {e.get('detail', '')}".rstrip(": "))
        for e in item.get("timeline") or []
    ]
    for entry in timeline(item):
        what = f"{entry['step']} {entry['status']}"
        if entry.get("job_name"):
            what += f" ({entry['job_name']})"
        if entry.get("failure_reason") or entry.get("error"):
            what += f": {entry.get('failure_reason') or entry.get('error')}"
        events.append((str(entry.get("at", "")), what))
    if events:
        lines.append("  timeline")
        lines.extend(f"    {at:<24} {what}" for at, what in sorted(events, key=lambda e: e[0]))
    return "\n".join(lines)
