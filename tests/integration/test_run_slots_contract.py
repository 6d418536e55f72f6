"""One contract, two implementations, for the run slots: InMemoryRunSlots (the unit tests') and
DynamoRunSlots on moto's DynamoDB (TransactWriteItems with conditions) behave the same; then
the adapter's own race handling."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from core import contracts
from core.run_record import DatasetRef
from lambdas.dal.runs_table import DynamoRunSlots, DynamoRunsRepository, RunsTableReader
from lambdas.logic.ports import RunSlots
from mnistflow.local.provision import create_runs_table
from tests.fakes import InMemoryRuns, InMemoryRunSlots

pytestmark = pytest.mark.integration

T0 = "2026-11-28T12:00:00.000Z"
LEASE = 1795867230
LIMIT = 2


def key(n: int) -> str:
    return f"mnist-{n:012x}"


def dataset(n: int) -> DatasetRef:
    return DatasetRef("mnistflow-data", f"incoming/{n}.npz", f"v{n}", "etag", 10)


class Dynamo:
    def __init__(self) -> None:
        self.ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_runs_table(lambda service: self.ddb, contracts.RUNS_TABLE_NAME)
        self.runs = DynamoRunsRepository(contracts.RUNS_TABLE_NAME, lambda: self.ddb)
        self.slots = DynamoRunSlots(contracts.RUNS_TABLE_NAME, lambda: self.ddb)
        self.reader = RunsTableReader(contracts.RUNS_TABLE_NAME, lambda: self.ddb)

    def record(self, run_key: str):
        return self.reader.get(run_key)

    def set_count(self, count: int) -> None:
        self.ddb.update_item(
            TableName=contracts.RUNS_TABLE_NAME,
            Key={"run_key": {"S": contracts.RUN_SLOTS_ITEM_KEY}},
            UpdateExpression="SET in_flight = :n",
            ExpressionAttributeValues={":n": {"N": str(count)}},
        )


class Memory:
    def __init__(self) -> None:
        self.runs = InMemoryRuns()
        self.slots = InMemoryRunSlots(self.runs.items)

    def record(self, run_key: str):
        return self.runs.record(run_key)

    def set_count(self, count: int) -> None:
        self.slots.count = count


@pytest.fixture(params=["memory", "dynamodb"])
def table(request):
    if request.param == "memory":
        yield Memory()
        return
    with mock_aws():
        yield Dynamo()


def accept(table, n: int, owner: str = "", at: str = "") -> None:
    stamp = at or f"2026-11-28T12:00:{n:02d}.000Z"
    assert table.runs.claim(key(n), dataset(n), stamp, LEASE, owner or f"r{n}").won


def test_slots_are_taken_up_to_the_limit_then_uploads_queue(table):
    for n in (1, 2, 3):
        accept(table, n)
    placed = [table.slots.take_or_queue(key(n), f"r{n}", LIMIT, T0) for n in (1, 2, 3)]
    assert placed == [RunSlots.TAKEN, RunSlots.TAKEN, RunSlots.QUEUED]
    assert table.slots.in_flight() == 2
    queued = table.record(key(3))
    assert queued.status == contracts.STATUS_QUEUED and not queued.holds_slot
    assert queued.claim_expires_at is None
    assert queued.timeline[-1].event == contracts.STATUS_QUEUED
    assert table.record(key(1)).holds_slot


def test_taking_again_with_the_slot_held_takes_nothing_more(table):
    accept(table, 1)
    assert table.slots.take_or_queue(key(1), "r1", LIMIT, T0) == RunSlots.TAKEN
    assert table.slots.take_or_queue(key(1), "r1", LIMIT, T0) == RunSlots.TAKEN
    assert table.slots.in_flight() == 1
    # and a retry's claim says the slot is held
    again = table.runs.claim(key(1), dataset(1), T0, LEASE, "r1")
    assert again.won and again.holds_slot


def test_a_claim_that_moved_on_takes_no_slot(table):
    accept(table, 1)
    assert table.slots.take_or_queue(key(1), "someone-else", LIMIT, T0) == RunSlots.LOST
    assert table.slots.in_flight() == 0


def test_the_oldest_queued_upload_starts_first_and_only_while_a_slot_is_free(table):
    for n in (1, 2, 5, 4, 3):  # accepted in this order of time: created_at by n
        accept(table, n)
    for n in (1, 2, 5, 4, 3):
        table.slots.take_or_queue(key(n), f"r{n}", LIMIT, T0)
    assert table.slots.start_next("q", LIMIT, T0, LEASE) is None  # every slot held
    assert table.slots.release(key(1), T0)
    started = table.slots.start_next("q", LIMIT, T0, LEASE)
    assert started.run_key == key(3)  # the oldest of 3, 4, 5
    assert started.status == contracts.STATUS_ACCEPTED and started.holds_slot
    assert (started.claim_owner, started.claim_attempts, started.claim_expires_at) == (
        "q",
        1,
        LEASE,
    )
    assert table.slots.in_flight() == 2
    table.slots.release(key(2), T0)
    table.slots.release(key(3), T0)
    assert table.slots.start_next("q", LIMIT, T0, LEASE).run_key == key(4)
    assert table.slots.start_next("q", LIMIT, T0, LEASE).run_key == key(5)
    assert table.slots.start_next("q", LIMIT, T0, LEASE) is None  # nothing queued


def test_a_requeued_run_gives_its_slot_back_and_keeps_its_place_in_line(table):
    for n in (1, 2, 3):
        accept(table, n)
        table.slots.take_or_queue(key(n), f"r{n}", 1, T0)
    table.slots.release(key(1), T0)
    started = table.slots.start_next("q", 1, T0, LEASE)
    assert started.run_key == key(2) and started.start_attempts == 2
    # When KFP failed (not for good): back to QUEUED and the slot freed, in one move
    assert table.slots.requeue(key(2), "q", T0, "KFP run not started (try 2 of 12): 503")
    record = table.record(key(2))
    assert record.status == contracts.STATUS_QUEUED and not record.holds_slot
    assert record.created_at == "2026-11-28T12:00:02.000Z"  # its place in line
    assert record.reason == "KFP run not started (try 2 of 12): 503"
    assert record.claim_expires_at is None
    assert record.timeline[-1].event == contracts.STATUS_QUEUED
    assert table.slots.in_flight() == 0
    # Then it is the next to start again, ahead of 3, and counts the try
    again = table.slots.start_next("q2", 1, T0, LEASE)
    assert again.run_key == key(2) and again.start_attempts == 3
    # And a requeue by another owner, or of a record without the slot, writes nothing
    assert table.slots.requeue(key(2), "q", T0, "late") is False
    assert table.slots.requeue(key(3), "r3", T0, "queued") is False
    assert table.record(key(2)).status == contracts.STATUS_ACCEPTED
    assert table.slots.in_flight() == 1


def test_a_slot_is_released_once(table):
    accept(table, 1)
    table.slots.take_or_queue(key(1), "r1", LIMIT, T0)
    assert table.slots.release(key(1), T0) is True
    assert table.slots.release(key(1), T0) is False
    assert table.slots.in_flight() == 0
    assert not table.record(key(1)).holds_slot
    assert table.record(key(1)).timeline[-1].event == "SLOT_FREED"


def test_a_record_never_holding_a_slot_releases_nothing(table):
    accept(table, 1)
    table.slots.take_or_queue(key(1), "r1", LIMIT, T0)
    accept(table, 2)
    assert table.slots.release(key(2), T0) is False
    assert table.slots.in_flight() == 1


def test_a_count_at_zero_still_frees_the_holding_record_and_the_recount_rebuilds_it(table):
    accept(table, 1)
    accept(table, 2)
    table.slots.take_or_queue(key(1), "r1", LIMIT, T0)
    table.slots.take_or_queue(key(2), "r2", LIMIT, T0)
    table.set_count(0)  # the count gone wrong
    assert table.slots.release(key(1), T0) is True
    assert not table.record(key(1)).holds_slot
    assert table.slots.repair() == (0, 1)
    assert table.slots.in_flight() == 1
    assert table.slots.repair() == (1, 1)  # right: nothing to do


def test_the_count_item_is_not_a_run():
    with mock_aws():
        table = Dynamo()
        accept(table, 1)
        table.slots.take_or_queue(key(1), "r1", LIMIT, T0)
        assert [r.run_key for r in table.reader.scan()] == [key(1)]


# -- the adapter's races ----------------------------------------------------------------------


def test_a_slot_freed_between_the_lost_take_and_the_queueing_is_taken():
    with mock_aws():
        table = Dynamo()
        for n in (1, 2):
            accept(table, n)
        table.slots.take_or_queue(key(1), "r1", 1, T0)
        real = table.slots._transact
        calls = []

        def transact(items):
            calls.append(items)
            codes = real(items)
            if len(calls) == 1:  # the take lost: run 1 ends before the queueing
                table.slots.release(key(1), T0)
            return codes

        table.slots._transact = transact
        assert table.slots.take_or_queue(key(2), "r2", 1, T0) == RunSlots.TAKEN
        # for run 2: take (lost), queue (lost: a slot is free), take (won)
        ours = [c for c in calls if c[1][next(iter(c[1]))]["Key"]["run_key"]["S"] == key(2)]
        assert [next(iter(c[1])) for c in ours] == ["Update", "Update", "Update"]
        assert [next(iter(c[0])) for c in ours] == ["Update", "ConditionCheck", "Update"]
        assert table.slots.in_flight() == 1 and table.record(key(2)).holds_slot


def test_a_recount_that_races_a_slot_move_writes_nothing():
    with mock_aws():
        table = Dynamo()
        accept(table, 1)
        table.slots.take_or_queue(key(1), "r1", LIMIT, T0)
        table.set_count(5)  # the count gone wrong
        real_scan = table.ddb.scan

        def scan(**request):
            page = real_scan(**request)
            table.slots.release(key(1), T0)  # run 1 ends during the recount
            return page

        table.ddb.scan = scan
        assert table.slots.repair() is None  # the count moved: the next pass tries again
        table.ddb.scan = real_scan
        assert table.slots.repair() == (4, 0)
        assert table.slots.in_flight() == 0
