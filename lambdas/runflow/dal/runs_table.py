"""The runs table (DynamoDB): one plain-map item per run key, written with conditions.

Status only moves forward: each write says which statuses it may follow. Start-run owns the
record's own fields; progress tracking only writes `progress:*` attributes and `outcome`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runflow import contracts
from runflow.logic.ports import (
    Claim,
    Dataset,
    KfpRun,
    ProgressWrite,
    RunProgress,
    RunsRepository,
)


def _av(value: Any) -> dict[str, Any]:
    """A DynamoDB attribute value for what the record holds: text, numbers, maps, lists."""
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, int):
        return {"N": str(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"DynamoDB numbers are finite, got {value!r}")
        return {"N": repr(value)}
    if isinstance(value, dict):
        return {"M": {str(k): _av(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_av(v) for v in value]}
    if value is None:
        return {"NULL": True}
    raise TypeError(f"the run record does not store {type(value).__name__}")


def _entry(now: str, event: str, detail: str) -> dict[str, Any]:
    return _av([{"at": now, "event": event, "detail": detail[:500]}])


class DynamoRunsRepository(RunsRepository):
    def __init__(
        self,
        table_name: str,
        dynamodb_client: Callable[[], Any],
        timeline_max_entries: int = contracts.TIMELINE_MAX_ENTRIES,
    ):
        self._table = table_name
        self._ddb = dynamodb_client
        self._timeline_max = timeline_max_entries

    def claim(self, run_key: str, dataset: Dataset, now: str, lease_until: int) -> Claim:
        ddb = self._ddb()
        try:
            result = ddb.update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression=(
                    "SET #status = :accepted, dataset = :dataset, updated_at = :now,"
                    " created_at = if_not_exists(created_at, :now),"
                    " start_attempts = if_not_exists(start_attempts, :zero) + :one,"
                    " claim_expires_at = :lease,"
                    " timeline = list_append(if_not_exists(timeline, :empty), :entry)"
                    " REMOVE reason"
                ),
                ConditionExpression=(
                    "attribute_not_exists(run_key) OR #status = :start_failed"
                    " OR (#status = :accepted AND claim_expires_at < :epoch)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":accepted": _av(contracts.STATUS_ACCEPTED),
                    ":start_failed": _av(contracts.STATUS_START_FAILED),
                    ":dataset": _av(dataset.as_item()),
                    ":now": _av(now),
                    ":zero": _av(0),
                    ":one": _av(1),
                    ":lease": _av(lease_until),
                    ":epoch": _av(_epoch_seconds(now)),
                    ":empty": _av([]),
                    ":entry": _entry(now, contracts.STATUS_ACCEPTED, dataset.uri),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as failed:
            old = _plain(failed.response.get("Item") or {})
            return Claim(
                won=False,
                status=str(old.get("status", "")),
                start_attempts=int(old.get("start_attempts", 0)),
            )
        item = _plain(result["Attributes"])
        self._trim_timeline(run_key, len(item.get("timeline", [])))
        return Claim(
            won=True,
            status=contracts.STATUS_ACCEPTED,
            start_attempts=int(item.get("start_attempts", 1)),
        )

    def mark_rejected(self, run_key: str, reason: str, now: str) -> None:
        self._move(run_key, contracts.STATUS_REJECTED, now, reason, {"reason": reason})

    def mark_start_failed(self, run_key: str, reason: str, now: str) -> None:
        self._move(run_key, contracts.STATUS_START_FAILED, now, reason, {"reason": reason})

    def mark_run_started(
        self, run_key: str, run: KfpRun, run_url: str, now: str, detail: str
    ) -> bool:
        fields = {
            "kfp_run_id": run.run_id,
            "kfp_run_url": run_url,
            "experiment_id": run.experiment_id,
        }
        moved = self._move(run_key, contracts.STATUS_RUN_STARTED, now, detail, fields)
        if not moved:
            # Progress tracking got there first: keep its status, still save the run's ids.
            self._ddb().update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression="SET kfp_run_id = :id, kfp_run_url = :url, experiment_id = :exp",
                ExpressionAttributeValues={
                    ":id": _av(run.run_id),
                    ":url": _av(run_url),
                    ":exp": _av(run.experiment_id),
                },
            )
        return moved

    def _move(
        self, run_key: str, status: str, now: str, detail: str, fields: dict[str, Any]
    ) -> bool:
        """Sets `status` and `fields` only while the record is still ACCEPTED (this claim's)."""
        names = {"#status": "status"}
        values = {
            ":status": _av(status),
            ":accepted": _av(contracts.STATUS_ACCEPTED),
            ":now": _av(now),
            ":empty": _av([]),
            ":entry": _entry(now, status, detail),
        }
        sets = [
            "#status = :status",
            "updated_at = :now",
            "timeline = list_append(if_not_exists(timeline, :empty), :entry)",
        ]
        for index, (name, value) in enumerate(fields.items()):
            names[f"#f{index}"] = name
            values[f":f{index}"] = _av(value)
            sets.append(f"#f{index} = :f{index}")
        ddb = self._ddb()
        try:
            result = ddb.update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE claim_expires_at",
                ConditionExpression="#status = :accepted",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        timeline = _plain(result.get("Attributes", {})).get("timeline", [])
        self._trim_timeline(run_key, len(timeline))
        return True

    def _trim_timeline(self, run_key: str, length: int) -> None:
        """Drops the oldest entries past the bound; a concurrent write makes this a no-op."""
        excess = length - self._timeline_max
        if excess <= 0:
            return
        ddb = self._ddb()
        try:
            ddb.update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression="REMOVE " + ", ".join(f"timeline[{i}]" for i in range(excess)),
                ConditionExpression="size(timeline) = :length",
                ExpressionAttributeValues={":length": _av(length)},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return  # someone else wrote meanwhile; the next write trims again

    def get(self, run_key: str) -> dict[str, Any] | None:
        item = (
            self._ddb()
            .get_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                ConsistentRead=True,
            )
            .get("Item")
        )
        return _plain(item) if item else None


class DynamoRunProgress(RunProgress):
    """Progress tracking's writes: each event is one conditional UpdateItem on the run's item."""

    def __init__(self, table_name: str, dynamodb_client: Callable[[], Any]):
        self._table = table_name
        self._ddb = dynamodb_client

    def record_progress(
        self, run_key: str, attribute: str, entry: dict[str, Any], outcome: str
    ) -> ProgressWrite:
        # A top-level attribute per (step, status): DynamoDB cannot SET a nested path whose
        # parent map may not exist yet, nor create overlapping paths in one expression.
        update = "SET #attr = :entry"
        values = {":entry": _av(entry), ":ord": _av(entry["ord"])}
        names = {"#attr": attribute, "#ord": "ord"}
        if outcome:
            update += ", #outcome = if_not_exists(#outcome, :outcome)"
            names["#outcome"] = contracts.OUTCOME_ATTRIBUTE
            values[":outcome"] = _av(outcome)
        ddb = self._ddb()
        try:
            result = ddb.update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression=update,
                ConditionExpression="attribute_not_exists(#attr) OR #attr.#ord < :ord",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                # The record as it was comes back from this same call: no read before writing.
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as failed:
            old = failed.response.get("Item")
            return ProgressWrite(applied=False, old_item=_plain(old) if old else None)
        old = result.get("Attributes")
        return ProgressWrite(applied=True, old_item=_plain(old) if old else None)

    def claim_outcome(self, run_key: str, outcome: str) -> bool:
        ddb = self._ddb()
        try:
            ddb.update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression="SET #outcome = :outcome",
                ConditionExpression="attribute_exists(run_key) AND attribute_not_exists(#outcome)",
                ExpressionAttributeNames={"#outcome": contracts.OUTCOME_ATTRIBUTE},
                ExpressionAttributeValues={":outcome": _av(outcome)},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def release_outcome(self, run_key: str, outcome: str) -> None:
        ddb = self._ddb()
        try:
            ddb.update_item(
                TableName=self._table,
                Key={contracts.RUN_KEY_ATTRIBUTE: _av(run_key)},
                UpdateExpression="REMOVE #outcome",
                ConditionExpression="#outcome = :outcome",
                ExpressionAttributeNames={"#outcome": contracts.OUTCOME_ATTRIBUTE},
                ExpressionAttributeValues={":outcome": _av(outcome)},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return  # not ours to remove any more (another value, or already gone)


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _value(value) for name, value in item.items()}


def _value(attribute: dict[str, Any]) -> Any:
    ((kind, raw),) = attribute.items()
    if kind == "S":
        return raw
    if kind == "N":
        return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    if kind == "M":
        return {k: _value(v) for k, v in raw.items()}
    if kind == "L":
        return [_value(v) for v in raw]
    if kind == "BOOL":
        return raw
    if kind == "NULL":
        return None
    return raw  # sets and binaries: not written by runflow, passed through


def _epoch_seconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
