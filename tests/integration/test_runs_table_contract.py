"""One contract, two implementations: the in-memory runs-table fakes the unit tests use and the
DynamoDB adapters (on moto) behave the same for every scenario here, so a unit test that passes
on a fake says something about the real adapter."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from core import contracts
from core.run_record import TIMELINE_MAX_ENTRIES, DatasetRef
from lambdas.dal.runs_table import DynamoRunProgress, DynamoRunsRepository, RunsTableReader
from lambdas.logic.ports import KfpRun
from mnistflow.local.provision import create_runs_table
from tests.fakes import InMemoryRunProgress, InMemoryRuns

pytestmark = pytest.mark.integration

KEY = "mnist-0123456789ab"
DATASET = DatasetRef("mnistflow-data", "incoming/mnist.npz", "v1", "etag", 10)
T0, T1, T2 = "2026-11-28T12:00:00.000Z", "2026-11-28T12:00:30.000Z", "2026-11-28T12:05:00.000Z"
LEASE_AT_T1 = 1795867230  # epoch seconds of T1


class DynamoPair:
    """The two DynamoDB adapters over one table, plus the one reader."""

    def __init__(self) -> None:
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_runs_table(lambda service: ddb, contracts.RUNS_TABLE_NAME)
        self.runs = DynamoRunsRepository(contracts.RUNS_TABLE_NAME, lambda: ddb)
        self.progress = DynamoRunProgress(contracts.RUNS_TABLE_NAME, lambda: ddb)
        self._reader = RunsTableReader(contracts.RUNS_TABLE_NAME, lambda: ddb)

    def record(self, run_key: str):
        return self._reader.get(run_key)


class MemoryPair:
    def __init__(self) -> None:
        self.runs = InMemoryRuns()
        self.progress = InMemoryRunProgress(self.runs.items)  # one table, two views

    def record(self, run_key: str):
        return self.runs.record(run_key)


@pytest.fixture(params=["memory", "dynamodb"])
def table(request):
    if request.param == "memory":
        yield MemoryPair()
        return
    with mock_aws():
        yield DynamoPair()


def entry(ord_: str, status: str = "IN_PROGRESS") -> dict:
    return {"status": status, "event_status": "InProgress", "at": ord_[:20], "ord": ord_,
            "event_id": ord_[-1], "source": "aws.sagemaker"}  # fmt: skip


# -- start-run's writes ----------------------------------------------------------------------


def test_a_first_claim_wins_and_records_the_dataset(table):
    claim = table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    assert (claim.won, claim.status, claim.start_attempts) == (True, "ACCEPTED", 1)
    record = table.record(KEY)
    assert record.status == "ACCEPTED" and record.dataset == DATASET
    assert record.created_at == T0 and record.claim_expires_at == LEASE_AT_T1
    assert [(e.event, e.detail) for e in record.timeline] == [("ACCEPTED", DATASET.uri)]


def test_a_held_claim_is_not_taken_until_its_lease_runs_out(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    lost = table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1 + 60)
    assert (lost.won, lost.status, lost.start_attempts) == (False, "ACCEPTED", 1)
    # After the lease (T2 is past T1), a redelivery takes the claim over
    taken = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600)
    assert (taken.won, taken.start_attempts) == (True, 2)
    assert table.record(KEY).created_at == T0  # the first acceptance stays


def test_after_start_failed_a_claim_wins_again_and_clears_the_reason(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    table.runs.mark_start_failed(KEY, "HTTP 500", T1)
    assert table.record(KEY).reason == "HTTP 500"
    again = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600)
    assert (again.won, again.start_attempts) == (True, 2)
    record = table.record(KEY)
    assert record.reason == "" and record.status == "ACCEPTED"
    assert [e.event for e in record.timeline] == ["ACCEPTED", "START_FAILED", "ACCEPTED"]


def test_a_rejected_upload_stays_rejected(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    table.runs.mark_rejected(KEY, "the object is empty", T1)
    lost = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600)
    assert (lost.won, lost.status) == (False, "REJECTED")
    record = table.record(KEY)
    assert record.reason == "the object is empty" and record.claim_expires_at is None


def test_run_started_moves_once_and_always_keeps_the_run_ids(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    run = KfpRun("run-1", KEY, "exp-1")
    assert table.runs.mark_run_started(KEY, run, "https://kfp/#/runs/details/run-1", T1, "made")
    other = KfpRun("run-2", KEY, "exp-1")
    assert not table.runs.mark_run_started(KEY, other, "https://kfp/#/runs/details/run-2", T2, "x")
    record = table.record(KEY)
    assert record.status == "RUN_STARTED" and record.kfp_run_id == "run-2"
    assert [e.event for e in record.timeline] == ["ACCEPTED", "RUN_STARTED"]


def test_the_timeline_keeps_the_newest_entries_only(table):
    for _ in range(TIMELINE_MAX_ENTRIES):
        table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1)
        table.runs.mark_start_failed(KEY, "again", T2)
    timeline = table.record(KEY).timeline
    assert len(timeline) == TIMELINE_MAX_ENTRIES
    assert timeline[-1].event == "START_FAILED"


# -- progress tracking's writes -------------------------------------------------------------


def test_progress_for_an_unknown_run_key_leaves_an_orphan(table):
    write = table.progress.record_progress(KEY, "progress:training:IN_PROGRESS", entry("t|a"), "")
    assert write.applied and write.old is None
    assert table.record(KEY).is_orphan


def test_an_entry_is_replaced_only_by_a_newer_one(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    attribute = "progress:training:IN_PROGRESS"
    assert table.progress.record_progress(KEY, attribute, entry("2|b"), "").applied
    older = table.progress.record_progress(KEY, attribute, entry("1|z"), "")
    same = table.progress.record_progress(KEY, attribute, entry("2|b"), "")
    newer = table.progress.record_progress(KEY, attribute, entry("3|a"), "")
    assert (older.applied, same.applied, newer.applied) == (False, False, True)
    assert older.old.entry("training", "IN_PROGRESS").ord == "2|b"  # the record as it was
    assert table.record(KEY).entry("training", "IN_PROGRESS").ord == "3|a"


def test_the_outcome_is_set_once_by_an_announcing_write(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    first = table.progress.record_progress(
        KEY, "progress:endpoint:IN_SERVICE", entry("1|a"), "SUCCEEDED"
    )
    assert first.applied and first.old.outcome == ""
    second = table.progress.record_progress(KEY, "progress:pipeline:FAILED", entry("2|a"), "FAILED")
    assert second.applied and second.old.outcome == "SUCCEEDED"
    assert table.record(KEY).outcome == "SUCCEEDED"


def test_claiming_and_releasing_the_outcome(table):
    assert not table.progress.claim_outcome(KEY, "FAILED")  # no record: nothing to claim
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1)
    assert table.progress.claim_outcome(KEY, "FAILED")
    assert not table.progress.claim_outcome(KEY, "SUCCEEDED")
    table.progress.release_outcome(KEY, "SUCCEEDED")  # not the held outcome: kept
    assert table.record(KEY).outcome == "FAILED"
    table.progress.release_outcome(KEY, "FAILED")
    assert table.record(KEY).outcome == ""
