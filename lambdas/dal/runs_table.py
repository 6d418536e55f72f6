"""The runs table (DynamoDB): one plain-map item per run key, written with conditions, and the
one way to read it back (`RunsTableReader`, for the CLI, the local stack and the tests).

Status only moves forward: each write says which statuses it may follow. Start-run owns the
record's own fields; progress tracking only writes `progress:*` attributes and `outcome`.
Every attribute is named through `core.run_record.ATTR` (in expressions as `#<name>`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

from core import contracts
from core.run_record import (
    ATTR,
    ORDER_FIELD,
    TIMELINE_MAX_ENTRIES,
    DatasetRef,
    RunRecord,
    TimelineEntry,
    announcement_claim_attribute,
    queue_order,
)
from lambdas.logic.ports import (
    Claim,
    KfpRun,
    OutcomeWrite,
    ProgressWrite,
    RunProgress,
    RunSlots,
    RunsRepository,
)


def to_attribute_value(value: Any) -> dict[str, Any]:
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
        return {"M": {str(k): to_attribute_value(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [to_attribute_value(v) for v in value]}
    if isinstance(value, set | frozenset):
        if not value or not all(isinstance(v, str) for v in value):
            raise ValueError("DynamoDB string sets hold one string at least, strings only")
        return {"SS": sorted(value)}
    if value is None:
        return {"NULL": True}
    raise TypeError(f"the run record does not store {type(value).__name__}")


def from_attribute_value(attribute: dict[str, Any]) -> Any:
    ((kind, raw),) = attribute.items()
    if kind == "S":
        return raw
    if kind == "N":
        return int(raw) if raw.lstrip("-").isdigit() else float(raw)
    if kind == "M":
        return {k: from_attribute_value(v) for k, v in raw.items()}
    if kind == "L":
        return [from_attribute_value(v) for v in raw]
    if kind == "BOOL":
        return raw
    if kind == "NULL":
        return None
    return raw  # sets and binaries: never written by the product, passed through


def plain_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain Python values."""
    return {name: from_attribute_value(value) for name, value in item.items()}


def _names(*names: str) -> dict[str, str]:
    """ExpressionAttributeNames for record attributes: `#status` -> `status`."""
    return {f"#{name}": name for name in names}


def _run_fields(run: KfpRun, run_url: str) -> dict[str, Any]:
    return {
        ATTR.kfp_run_id: run.run_id,
        ATTR.kfp_run_url: run_url,
        ATTR.experiment_id: run.experiment_id,
    }


def _key(run_key: str) -> dict[str, Any]:
    return {ATTR.run_key: to_attribute_value(run_key)}


def _entry(now: str, event: str, detail: str) -> dict[str, Any]:
    return to_attribute_value([asdict(TimelineEntry(at=now, event=event, detail=detail[:500]))])


class _Announcements:
    """The record's `announced` set and its claims, `announcing:<kind>` = {owner, at}: one
    conditional write to claim, one to confirm."""

    _table: str
    _ddb: Callable[[], Any]

    def claim_announcement(
        self, run_key: str, kind: str, owner: str, now: int, stale_before: int
    ) -> bool:
        ddb = self._ddb()
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_key(run_key),
                UpdateExpression="SET #claim = :claim",
                ConditionExpression=(
                    "attribute_exists(#run_key) AND NOT contains(#announced, :kind) AND"
                    " (attribute_not_exists(#claim) OR #claim.#owner = :owner"
                    " OR #claim.#at < :stale)"
                ),
                ExpressionAttributeNames={
                    **_names(ATTR.run_key, ATTR.announced),
                    "#claim": announcement_claim_attribute(kind),
                    "#owner": "owner",
                    "#at": "at",
                },
                ExpressionAttributeValues={
                    ":claim": to_attribute_value({"owner": owner, "at": now}),
                    ":kind": to_attribute_value(kind),
                    ":owner": to_attribute_value(owner),
                    ":stale": to_attribute_value(stale_before),
                },
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def confirm_announcement(self, run_key: str, kind: str) -> None:
        self._ddb().update_item(
            TableName=self._table,
            Key=_key(run_key),
            UpdateExpression="ADD #announced :kinds REMOVE #claim",
            ExpressionAttributeNames={
                **_names(ATTR.announced),
                "#claim": announcement_claim_attribute(kind),
            },
            ExpressionAttributeValues={":kinds": to_attribute_value({kind})},
        )

    def release_announcement(self, run_key: str, kind: str) -> None:
        self._ddb().update_item(
            TableName=self._table,
            Key=_key(run_key),
            UpdateExpression="REMOVE #claim",
            ExpressionAttributeNames={"#claim": announcement_claim_attribute(kind)},
        )


class DynamoRunsRepository(_Announcements, RunsRepository):
    """Start-run's writes."""

    def __init__(
        self,
        table_name: str,
        dynamodb_client: Callable[[], Any],
        timeline_max_entries: int = TIMELINE_MAX_ENTRIES,
    ):
        self._table = table_name
        self._ddb = dynamodb_client
        self._timeline_max = timeline_max_entries

    def claim(
        self, run_key: str, dataset: DatasetRef, now: str, lease_until: int, owner: str
    ) -> Claim:
        # The common case is one write: a new claim. A retry of the owner finds its own claim
        # and takes it back with a second write that counts the attempt.
        won, item = self._claim_write(
            run_key,
            dataset,
            now,
            lease_until,
            owner,
            condition=(
                "attribute_not_exists(#status)"  # a new record, or an orphan (progress only)
                " OR (#status = :start_failed AND"
                " (attribute_not_exists(#claim_owner) OR #claim_owner <> :owner))"
                " OR (#status = :accepted AND #claim_expires_at < :epoch"
                " AND #claim_owner <> :owner)"
            ),
            attempts="#claim_attempts = :one",
            clear_reason=True,
        )
        if not won and item.get(ATTR.status) == contracts.STATUS_ACCEPTED:
            if item.get(ATTR.claim_owner) == owner:
                won, item = self._claim_write(
                    run_key,
                    dataset,
                    now,
                    lease_until,
                    owner,
                    condition="#status = :accepted AND #claim_owner = :owner",
                    attempts="#claim_attempts = if_not_exists(#claim_attempts, :zero) + :one",
                )
        if won:
            self._trim_timeline(run_key, len(item.get(ATTR.timeline, [])))
        return Claim(
            won=won,
            status=str(item.get(ATTR.status, "")),
            attempt=int(item.get(ATTR.claim_attempts, 0)) if won else 0,
            owner=str(item.get(ATTR.claim_owner, "")),
            announced=frozenset(item.get(ATTR.announced) or ()),
            record=None if won or not item else RunRecord.from_item(item),
            holds_slot=won and bool(item.get(ATTR.holds_slot)),
        )

    def _claim_write(
        self,
        run_key: str,
        dataset: DatasetRef,
        now: str,
        lease_until: int,
        owner: str,
        *,
        condition: str,
        attempts: str,
        clear_reason: bool = False,
    ) -> tuple[bool, dict[str, Any]]:
        ddb = self._ddb()
        try:
            result = ddb.update_item(
                TableName=self._table,
                Key=_key(run_key),
                UpdateExpression=(
                    "SET #status = :accepted, #dataset = :dataset, #updated_at = :now,"
                    " #created_at = if_not_exists(#created_at, :now),"
                    " #start_attempts = if_not_exists(#start_attempts, :zero) + :one,"
                    f" #claim_owner = :owner, {attempts}, #claim_expires_at = :lease,"
                    " #timeline = list_append(if_not_exists(#timeline, :empty), :entry)"
                    + (" REMOVE #reason" if clear_reason else "")
                ),
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(
                    ATTR.status,
                    ATTR.dataset,
                    ATTR.updated_at,
                    ATTR.created_at,
                    ATTR.start_attempts,
                    ATTR.claim_owner,
                    ATTR.claim_attempts,
                    ATTR.claim_expires_at,
                    ATTR.timeline,
                    *([ATTR.reason] if clear_reason else []),
                ),
                ExpressionAttributeValues={
                    ":accepted": to_attribute_value(contracts.STATUS_ACCEPTED),
                    ":dataset": to_attribute_value(dataset.as_item()),
                    ":now": to_attribute_value(now),
                    ":zero": to_attribute_value(0),
                    ":one": to_attribute_value(1),
                    ":owner": to_attribute_value(owner),
                    ":lease": to_attribute_value(lease_until),
                    ":empty": to_attribute_value([]),
                    ":entry": _entry(now, contracts.STATUS_ACCEPTED, dataset.uri),
                    **(
                        {
                            ":start_failed": to_attribute_value(contracts.STATUS_START_FAILED),
                            ":epoch": to_attribute_value(_epoch_seconds(now)),
                        }
                        if ":start_failed" in condition
                        else {}
                    ),
                },
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as failed:
            return False, plain_item(failed.response.get("Item") or {})
        return True, plain_item(result["Attributes"])

    def record_retry(self, run_key: str, owner: str, reason: str, now: str) -> None:
        self._move(run_key, owner, "", now, reason, {ATTR.reason: reason}, event="START_RETRY")

    def mark_rejected(self, run_key: str, owner: str, reason: str, now: str) -> bool:
        return self._move(
            run_key, owner, contracts.STATUS_REJECTED, now, reason, {ATTR.reason: reason}
        )

    def mark_start_failed(self, run_key: str, owner: str, reason: str, now: str) -> bool:
        return self._move(
            run_key, owner, contracts.STATUS_START_FAILED, now, reason, {ATTR.reason: reason}
        )

    def close_stale_claim(
        self,
        run_key: str,
        owner: str,
        stale_before: int,
        now: str,
        reason: str,
        run: KfpRun | None = None,
        run_url: str = "",
    ) -> bool:
        if run is None:
            status, fields = contracts.STATUS_START_FAILED, {ATTR.reason: reason}
        else:
            status, fields = contracts.STATUS_RUN_STARTED, _run_fields(run, run_url)
        return self._move(run_key, owner, status, now, reason, fields, stale_before=stale_before)

    def mark_run_started(
        self,
        run_key: str,
        owner: str,
        run: KfpRun,
        run_url: str,
        now: str,
        detail: str,
        run_settings: Mapping[str, Any] | None = None,
        overridden: tuple[str, ...] = (),
    ) -> bool:
        fields = _run_fields(run, run_url)
        if run_settings:
            fields[ATTR.run_settings] = dict(run_settings)
            fields[ATTR.overridden] = list(overridden)
        moved = self._move(run_key, owner, contracts.STATUS_RUN_STARTED, now, detail, fields)
        if not moved:
            # Another invocation moved it on: keep its status, still save the run's ids.
            self._ddb().update_item(
                TableName=self._table,
                Key=_key(run_key),
                UpdateExpression="SET " + ", ".join(f"#{name} = :{name}" for name in fields),
                ExpressionAttributeNames=_names(*fields),
                ExpressionAttributeValues={
                    f":{name}": to_attribute_value(value) for name, value in fields.items()
                },
            )
        return moved

    def _move(
        self,
        run_key: str,
        owner: str,
        status: str,
        now: str,
        detail: str,
        fields: dict[str, Any],
        event: str = "",
        stale_before: int | None = None,
    ) -> bool:
        """Sets `status` (unless "") and `fields` only while the record is ACCEPTED by `owner`
        (and, with `stale_before`, its lease ended before then); a final status ends the claim."""
        values = {
            ":accepted": to_attribute_value(contracts.STATUS_ACCEPTED),
            ":owner": to_attribute_value(owner),
            ":now": to_attribute_value(now),
            ":empty": to_attribute_value([]),
            ":entry": _entry(now, event or status, detail),
            **{f":{name}": to_attribute_value(value) for name, value in fields.items()},
        }
        sets = [
            "#updated_at = :now",
            "#timeline = list_append(if_not_exists(#timeline, :empty), :entry)",
            *(f"#{name} = :{name}" for name in fields),
        ]
        update = ""
        if status:
            sets.insert(0, "#status = :final")
            values[":final"] = to_attribute_value(status)
            update = " REMOVE #claim_expires_at"
        condition = "#status = :accepted AND #claim_owner = :owner"
        if stale_before is not None:
            condition += " AND #claim_expires_at < :stale_before"
            values[":stale_before"] = to_attribute_value(stale_before)
        ddb = self._ddb()
        try:
            result = ddb.update_item(
                TableName=self._table,
                Key=_key(run_key),
                UpdateExpression="SET " + ", ".join(sets) + update,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names(
                    ATTR.status,
                    ATTR.claim_owner,
                    ATTR.updated_at,
                    ATTR.timeline,
                    *([ATTR.claim_expires_at] if status or stale_before is not None else []),
                    *fields,
                ),
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        timeline = plain_item(result.get("Attributes", {})).get(ATTR.timeline, [])
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
                Key=_key(run_key),
                UpdateExpression="REMOVE " + ", ".join(f"#timeline[{i}]" for i in range(excess)),
                ConditionExpression="size(#timeline) = :length",
                ExpressionAttributeNames=_names(ATTR.timeline),
                ExpressionAttributeValues={":length": to_attribute_value(length)},
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return  # someone else wrote meanwhile; the next write trims again


class DynamoRunProgress(_Announcements, RunProgress):
    """Progress tracking's writes: each event is one conditional UpdateItem on the run's item."""

    def __init__(self, table_name: str, dynamodb_client: Callable[[], Any]):
        self._table = table_name
        self._ddb = dynamodb_client

    def record_progress(self, run_key: str, attribute: str, entry: dict[str, Any]) -> ProgressWrite:
        # A top-level attribute per (step, status): DynamoDB cannot SET a nested path whose
        # parent map may not exist yet, nor create overlapping paths in one expression.
        ddb = self._ddb()
        try:
            result = ddb.update_item(
                TableName=self._table,
                Key=_key(run_key),
                UpdateExpression="SET #attr = :entry",
                ConditionExpression="attribute_not_exists(#attr) OR #attr.#ord < :ord",
                ExpressionAttributeNames={"#attr": attribute, "#ord": ORDER_FIELD},
                ExpressionAttributeValues={
                    ":entry": to_attribute_value(entry),
                    ":ord": to_attribute_value(entry[ORDER_FIELD]),
                },
                # The record as it was comes back from this same call: no read before writing.
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as failed:
            return ProgressWrite(applied=False, old=_record(failed.response.get("Item")))
        return ProgressWrite(applied=True, old=_record(result.get("Attributes")))

    def decide_outcome(self, run_key: str, outcome: str, order: str) -> OutcomeWrite:
        ddb = self._ddb()
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_key(run_key),
                UpdateExpression="SET #outcome = :outcome, #outcome_ord = :ord",
                ConditionExpression=(
                    "attribute_exists(#run_key)"
                    " AND (attribute_not_exists(#outcome_ord) OR #outcome_ord < :ord)"
                ),
                ExpressionAttributeNames=_names(ATTR.run_key, ATTR.outcome, ATTR.outcome_ord),
                ExpressionAttributeValues={
                    ":outcome": to_attribute_value(outcome),
                    ":ord": to_attribute_value(order),
                },
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ddb.exceptions.ConditionalCheckFailedException as failed:
            old = plain_item(failed.response.get("Item") or {})
            return OutcomeWrite(applied=False, outcome=str(old.get(ATTR.outcome, "")))
        return OutcomeWrite(applied=True, outcome=outcome)


# The slot count's item (contracts.RUN_SLOTS_ITEM_KEY): `in_flight` counts the records that hold
# a slot; `version` moves with every change, so a recount never overwrites a change it missed.
IN_FLIGHT = "in_flight"
VERSION = "version"
# A take-or-queue that loses a race (a slot freed or taken between its two transactions) tries
# again this many times in all; each loss means another writer made progress.
SLOT_RACE_ATTEMPTS = 8
_CONDITION_FAILED = "ConditionalCheckFailed"


class DynamoRunSlots(RunSlots):
    """The concurrency limit in the runs table: every change of a record's `holds_slot` and of
    the count is one TransactWriteItems (DynamoDB developer guide, "Amazon DynamoDB
    Transactions": all or nothing, each item's condition checked)."""

    def __init__(self, table_name: str, dynamodb_client: Callable[[], Any]):
        self._table = table_name
        self._ddb = dynamodb_client

    def _counter_take(self, limit: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._table,
                "Key": _key(contracts.RUN_SLOTS_ITEM_KEY),
                "UpdateExpression": "ADD #in_flight :one, #version :one",
                "ConditionExpression": "attribute_not_exists(#in_flight) OR #in_flight < :limit",
                "ExpressionAttributeNames": _names(IN_FLIGHT, VERSION),
                "ExpressionAttributeValues": {
                    ":one": to_attribute_value(1),
                    ":limit": to_attribute_value(limit),
                },
            }
        }

    def _transact(self, items: list[dict[str, Any]]) -> list[str] | None:
        """None when written; else each item's cancellation code ("None" when its condition
        held), as DynamoDB's TransactionCanceledException lists them."""
        ddb = self._ddb()
        try:
            ddb.transact_write_items(TransactItems=items)
        except ddb.exceptions.TransactionCanceledException as canceled:
            reasons = canceled.response.get("CancellationReasons") or []
            codes = [str(reason.get("Code", "")) for reason in reasons]
            if _CONDITION_FAILED not in codes:
                raise  # a conflict with another transaction, a throttle: the caller's retry
            return codes
        return None

    def take_or_queue(self, run_key: str, owner: str, limit: int, now: str) -> str:
        ours = "#status = :accepted AND #claim_owner = :owner AND attribute_not_exists(#holds)"
        record_names = {**_names(ATTR.status, ATTR.claim_owner), "#holds": ATTR.holds_slot}
        record_values = {
            ":accepted": to_attribute_value(contracts.STATUS_ACCEPTED),
            ":owner": to_attribute_value(owner),
        }
        for _attempt in range(SLOT_RACE_ATTEMPTS):
            taken = self._transact(
                [
                    self._counter_take(limit),
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _key(run_key),
                            "UpdateExpression": "SET #holds = :true",
                            "ConditionExpression": ours,
                            "ExpressionAttributeNames": record_names,
                            "ExpressionAttributeValues": {
                                **record_values,
                                ":true": to_attribute_value(True),
                            },
                        }
                    },
                ]
            )
            if taken is None:
                return RunSlots.TAKEN
            if taken[1] == _CONDITION_FAILED:
                return self._held_or_lost(run_key, owner)
            detail = f"every one of the {limit} run slots is held; waiting for a run to end"
            queued = self._transact(
                [
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": _key(contracts.RUN_SLOTS_ITEM_KEY),
                            "ConditionExpression": "#in_flight >= :limit",
                            "ExpressionAttributeNames": _names(IN_FLIGHT),
                            "ExpressionAttributeValues": {":limit": to_attribute_value(limit)},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _key(run_key),
                            "UpdateExpression": (
                                "SET #status = :queued, #updated_at = :now,"
                                " #timeline = list_append(if_not_exists(#timeline, :empty), :entry)"
                                " REMOVE #claim_expires_at"
                            ),
                            "ConditionExpression": ours,
                            "ExpressionAttributeNames": {
                                **record_names,
                                **_names(ATTR.updated_at, ATTR.timeline, ATTR.claim_expires_at),
                            },
                            "ExpressionAttributeValues": {
                                **record_values,
                                ":queued": to_attribute_value(contracts.STATUS_QUEUED),
                                ":now": to_attribute_value(now),
                                ":empty": to_attribute_value([]),
                                ":entry": _entry(now, contracts.STATUS_QUEUED, detail),
                            },
                        }
                    },
                ]
            )
            if queued is None:
                return RunSlots.QUEUED
            if queued[1] == _CONDITION_FAILED:
                return self._held_or_lost(run_key, owner)
            # A slot was freed between the two: try to take it.
        raise RuntimeError(f"the run slots kept changing: {SLOT_RACE_ATTEMPTS} tries lost a race")

    def _held_or_lost(self, run_key: str, owner: str) -> str:
        item = RunsTableReader(self._table, self._ddb).item(run_key) or {}
        ours = (
            item.get(ATTR.status) == contracts.STATUS_ACCEPTED
            and item.get(ATTR.claim_owner) == owner
        )
        return RunSlots.TAKEN if ours and item.get(ATTR.holds_slot) else RunSlots.LOST

    def start_next(self, owner: str, limit: int, now: str, lease_until: int) -> RunRecord | None:
        for key in self._queued_keys():
            taken = self._transact(
                [
                    self._counter_take(limit),
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": _key(key),
                            "UpdateExpression": (
                                "SET #status = :accepted, #holds = :true, #claim_owner = :owner,"
                                " #claim_attempts = :one, #claim_expires_at = :lease,"
                                " #updated_at = :now,"
                                " #start_attempts = if_not_exists(#start_attempts, :zero) + :one,"
                                " #timeline = list_append(if_not_exists(#timeline, :empty), :entry)"
                            ),
                            "ConditionExpression": "#status = :queued",
                            "ExpressionAttributeNames": {
                                **_names(
                                    ATTR.status,
                                    ATTR.claim_owner,
                                    ATTR.claim_attempts,
                                    ATTR.claim_expires_at,
                                    ATTR.updated_at,
                                    ATTR.start_attempts,
                                    ATTR.timeline,
                                ),
                                "#holds": ATTR.holds_slot,
                            },
                            "ExpressionAttributeValues": {
                                ":accepted": to_attribute_value(contracts.STATUS_ACCEPTED),
                                ":queued": to_attribute_value(contracts.STATUS_QUEUED),
                                ":true": to_attribute_value(True),
                                ":owner": to_attribute_value(owner),
                                ":one": to_attribute_value(1),
                                ":zero": to_attribute_value(0),
                                ":lease": to_attribute_value(lease_until),
                                ":now": to_attribute_value(now),
                                ":empty": to_attribute_value([]),
                                ":entry": _entry(now, SLOT_TAKEN_EVENT, "a run slot is free"),
                            },
                        }
                    },
                ]
            )
            if taken is None:
                return RunsTableReader(self._table, self._ddb).get(key)
            if taken[0] == _CONDITION_FAILED:
                return None  # every slot held
            # Another invocation started this one meanwhile: the next in line.
        return None

    def _queued_keys(self) -> list[str]:
        """The QUEUED records' keys, in upload order (as start-run accepted them)."""
        found = []
        request: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "FilterExpression": "#status = :queued",
            "ProjectionExpression": "#run_key, #created_at",
            "ExpressionAttributeNames": _names(ATTR.status, ATTR.run_key, ATTR.created_at),
            "ExpressionAttributeValues": {":queued": to_attribute_value(contracts.STATUS_QUEUED)},
        }
        while True:
            page = self._ddb().scan(**request)
            found.extend(plain_item(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        order = sorted(
            found, key=lambda i: queue_order(str(i.get(ATTR.created_at, "")), i[ATTR.run_key])
        )
        return [item[ATTR.run_key] for item in order]

    def release(self, run_key: str, now: str) -> bool:
        record = {
            "Update": {
                "TableName": self._table,
                "Key": _key(run_key),
                "UpdateExpression": (
                    "REMOVE #holds"
                    " SET #timeline = list_append(if_not_exists(#timeline, :empty), :entry)"
                ),
                "ConditionExpression": "attribute_exists(#holds)",
                "ExpressionAttributeNames": {"#holds": ATTR.holds_slot, **_names(ATTR.timeline)},
                "ExpressionAttributeValues": {
                    ":empty": to_attribute_value([]),
                    ":entry": _entry(now, SLOT_FREED_EVENT, "the run's slot is given back"),
                },
            }
        }
        return self._give_back(record)

    def requeue(self, run_key: str, owner: str, now: str, reason: str) -> bool:
        detail = f"back in line (its place kept): {reason}"
        record = {
            "Update": {
                "TableName": self._table,
                "Key": _key(run_key),
                "UpdateExpression": (
                    "SET #status = :queued, #updated_at = :now, #reason = :reason,"
                    " #timeline = list_append(if_not_exists(#timeline, :empty), :entry)"
                    " REMOVE #holds, #claim_expires_at"
                ),
                "ConditionExpression": (
                    "#status = :accepted AND #claim_owner = :owner AND attribute_exists(#holds)"
                ),
                "ExpressionAttributeNames": {
                    **_names(
                        ATTR.status,
                        ATTR.updated_at,
                        ATTR.reason,
                        ATTR.timeline,
                        ATTR.claim_expires_at,
                        ATTR.claim_owner,
                    ),
                    "#holds": ATTR.holds_slot,
                },
                "ExpressionAttributeValues": {
                    ":queued": to_attribute_value(contracts.STATUS_QUEUED),
                    ":accepted": to_attribute_value(contracts.STATUS_ACCEPTED),
                    ":owner": to_attribute_value(owner),
                    ":now": to_attribute_value(now),
                    ":reason": to_attribute_value(reason),
                    ":empty": to_attribute_value([]),
                    ":entry": _entry(now, contracts.STATUS_QUEUED, detail),
                },
            }
        }
        return self._give_back(record)

    def _give_back(self, record: dict[str, Any]) -> bool:
        """The record's write (conditional on its holding the slot) and the count's decrement,
        in one transaction."""
        released = self._transact(
            [
                record,
                {
                    "Update": {
                        "TableName": self._table,
                        "Key": _key(contracts.RUN_SLOTS_ITEM_KEY),
                        "UpdateExpression": "ADD #in_flight :minus_one, #version :one",
                        "ConditionExpression": "#in_flight > :zero",
                        "ExpressionAttributeNames": _names(IN_FLIGHT, VERSION),
                        "ExpressionAttributeValues": {
                            ":minus_one": to_attribute_value(-1),
                            ":one": to_attribute_value(1),
                            ":zero": to_attribute_value(0),
                        },
                    }
                },
            ]
        )
        if released is None:
            return True
        if released[0] == _CONDITION_FAILED:
            return False  # not held (released before, never taken) or the claim moved on
        # The count says no slot is held, yet this record holds one: free the record (the
        # watchdog's recount puts the count right).
        ddb = self._ddb()
        try:
            ddb.update_item(**record["Update"])
        except ddb.exceptions.ConditionalCheckFailedException:
            return False
        return True

    def _counter(self) -> tuple[int, int]:
        item = (
            self._ddb()
            .get_item(
                TableName=self._table,
                Key=_key(contracts.RUN_SLOTS_ITEM_KEY),
                ConsistentRead=True,
            )
            .get("Item")
        )
        plain = plain_item(item) if item else {}
        return int(plain.get(IN_FLIGHT, 0)), int(plain.get(VERSION, 0))

    def in_flight(self) -> int:
        return self._counter()[0]

    def repair(self) -> tuple[int, int] | None:
        stored, version = self._counter()
        counted = 0
        request: dict[str, Any] = {
            "TableName": self._table,
            "ConsistentRead": True,
            "Select": "COUNT",
            "FilterExpression": "attribute_exists(#holds)",
            "ExpressionAttributeNames": {"#holds": ATTR.holds_slot},
        }
        while True:
            page = self._ddb().scan(**request)
            counted += int(page.get("Count", 0))
            if "LastEvaluatedKey" not in page:
                break
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        if counted == stored:
            return stored, counted
        ddb = self._ddb()
        try:
            ddb.update_item(
                TableName=self._table,
                Key=_key(contracts.RUN_SLOTS_ITEM_KEY),
                UpdateExpression="SET #in_flight = :counted, #version = :next",
                ConditionExpression=(
                    "#version = :version"
                    if version
                    else "attribute_not_exists(#version) OR #version = :version"
                ),
                ExpressionAttributeNames=_names(IN_FLIGHT, VERSION),
                ExpressionAttributeValues={
                    ":counted": to_attribute_value(counted),
                    ":version": to_attribute_value(version),
                    ":next": to_attribute_value(version + 1),
                },
            )
        except ddb.exceptions.ConditionalCheckFailedException:
            return None
        return stored, counted


class RunsTableReader:
    """Reads run records: one run, or all of them, newest first."""

    def __init__(self, table_name: str, dynamodb_client: Callable[[], Any]):
        self._table = table_name
        self._ddb = dynamodb_client

    @property
    def table_name(self) -> str:
        return self._table

    def get(self, run_key: str) -> RunRecord | None:
        item = self.item(run_key)
        return RunRecord.from_item(item) if item else None

    def item(self, run_key: str) -> dict[str, Any] | None:
        """The run's item as stored, in plain values (every attribute, known or not)."""
        item = (
            self._ddb()
            .get_item(TableName=self._table, Key=_key(run_key), ConsistentRead=True)
            .get("Item")
        )
        return plain_item(item) if item else None

    def items(self) -> list[dict[str, Any]]:
        """Every item as stored, in plain values, in the table's order."""
        return [plain_item(item) for item in self._items()]

    def scan(self) -> list[RunRecord]:
        """Every run record (one item per dataset version: a scan is fine), newest first."""
        records = [RunRecord.from_item(item) for item in self.items()]
        return sorted(records, key=lambda record: record.created_at, reverse=True)

    def _items(self) -> Iterator[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self._table, "ConsistentRead": True}
        slots = _key(contracts.RUN_SLOTS_ITEM_KEY)[ATTR.run_key]
        while True:
            page = self._ddb().scan(**request)
            yield from (i for i in page.get("Items", []) if i.get(ATTR.run_key) != slots)
            if "LastEvaluatedKey" not in page:
                return
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# Timeline entries of the slot moves (besides QUEUED).
SLOT_TAKEN_EVENT = "STARTED_FROM_QUEUE"
SLOT_FREED_EVENT = "SLOT_FREED"


def _record(item: dict[str, Any] | None) -> RunRecord | None:
    return RunRecord.from_item(plain_item(item)) if item else None


def _epoch_seconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
