"""Property: for a run's set of events, any order and any duplicates give the same final
record, and each email kind goes out at most once; the outcome is that of the latest deciding
event, by (time, event id), so conflicting sets settle the same way whatever came first.

Two runners: the real DynamoDB adapter on moto (a fresh table each time, ~60 examples per set),
and the in-memory fake, held to the adapter by tests/integration/test_runs_table_contract.py,
for more than 1,000 examples across the sets.
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from core import contracts
from lambdas.dal.runs_table import (
    DynamoRunProgress,
    DynamoRunSlots,
    RunsTableReader,
    to_attribute_value,
)
from lambdas.logic.track_progress import TrackProgress
from lambdas.observability import metrics
from mnistflow.local.provision import create_runs_table
from tests.fakes import InMemoryRunProgress, InMemoryRunSlots, RecordingNotifier, RecordingSignal
from tests.fakes.progress import FAILED_RUN, RUN_KEY, SUCCESSFUL_RUN, event, start_run_record

pytestmark = pytest.mark.integration

REGION = "us-east-1"
# ~60 examples per property keeps both under ~10 s on moto (each example: one table, 8-20 writes).
EXAMPLES = 60
# In memory: 6 sets x 180 examples = 1,080 orders.
MEMORY_EXAMPLES = 180
MAX_DUPLICATES = 8
_tables = itertools.count()


def run_events(names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The run's events, plus SageMaker's habit of sending a state change twice (another id)."""
    events = [event(name) for name in names]
    events.append(event(names[1], id="ffffffff-sent-again"))
    return events


def deliveries(events: list[dict[str, Any]]):
    """Every event at least once, some more than once, in any order."""
    extra = st.lists(st.sampled_from(events), max_size=MAX_DUPLICATES)
    return extra.flatmap(lambda more: st.permutations([*events, *more]))


def replay(deliveries: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Applies the deliveries to a fresh table holding start-run's record."""
    table = f"runs-{next(_tables)}"
    ddb = boto3.client("dynamodb", region_name=REGION)
    create_runs_table(lambda service: ddb, table)
    record = {name: to_attribute_value(value) for name, value in start_run_record().items()}
    ddb.put_item(TableName=table, Item=record)
    notifier = RecordingNotifier()
    client = partial(lambda c: c, ddb)
    service = TrackProgress(
        DynamoRunProgress(table, client),
        notifier,
        slots=DynamoRunSlots(table, client),
        slot_signal=RecordingSignal(),
    )
    for delivery in deliveries:
        service.handle(delivery)
    metrics.clear_metrics()  # Powertools flushes by itself at 100 metrics; nothing reads them
    item = RunsTableReader(table, lambda: ddb).item(RUN_KEY)
    assert item is not None
    ddb.delete_table(TableName=table)
    return item, notifier.kinds()


@pytest.fixture(scope="module")
def moto_aws():
    with mock_aws():
        yield


@pytest.mark.parametrize(
    ("names", "kind", "outcome"),
    [
        (SUCCESSFUL_RUN, contracts.KIND_ENDPOINT_READY, contracts.STATUS_SUCCEEDED),
        (FAILED_RUN, contracts.KIND_RUN_FAILED, contracts.STATUS_FAILED),
    ],
    ids=["successful-run", "failed-run"],
)
def test_any_order_and_duplication_gives_the_same_record_and_one_email(
    moto_aws, names, kind, outcome
):
    events = run_events(names)
    # The reference: every event once, in the order it happened
    expected, kinds = replay(sorted(events, key=lambda e: (e["time"], e["id"])))
    assert kinds == [kind]
    assert expected["outcome"] == outcome

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(deliveries(events))
    def any_delivery(delivered: list[dict[str, Any]]) -> None:
        item, announced = replay(delivered)
        assert _state(item) == _state(expected)
        assert announced == [kind]

    any_delivery()


# Conflicting sets: what the latest deciding event says wins, each email is true when sent.
READY, FAILED = contracts.KIND_ENDPOINT_READY, contracts.KIND_RUN_FAILED
CONFLICTS = {
    # The endpoint failed after it was in service (12:45 > 12:40).
    "endpoint-failed-after-in-service": (
        [*(event(n) for n in SUCCESSFUL_RUN[:-1]), event("sagemaker_endpoint_failed",
                                                         time="2026-11-28T12:45:00Z")],
        contracts.STATUS_FAILED,
    ),
    # The pipeline failed after the endpoint was in service (a later step, or the exit handler).
    "pipeline-failed-after-in-service": (
        [*(event(n) for n in SUCCESSFUL_RUN[:-1]), event("pipeline_failed",
                                                         time="2026-11-28T12:41:00Z")],
        contracts.STATUS_FAILED,
    ),
    # A training attempt failed, KFP retried the step, and the run succeeded.
    "retried-step-then-success": (
        [*(event(n) for n in SUCCESSFUL_RUN), event("sagemaker_training_failed")],
        contracts.STATUS_SUCCEEDED,
    ),
    # Two deciding events in the same second: the greater event id decides.
    "same-second-tie": (
        [*(event(n) for n in SUCCESSFUL_RUN[:-1]), event("pipeline_failed",
         time="2026-11-28T12:40:00Z", id="ffffffff-0000-0000-0000-000000000000")],
        contracts.STATUS_FAILED,
    ),
}  # fmt: skip


def replay_in_memory(delivered: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    progress = InMemoryRunProgress({RUN_KEY: start_run_record()})
    notifier = RecordingNotifier()
    service = TrackProgress(
        progress,
        notifier,
        slots=InMemoryRunSlots(progress.items),
        slot_signal=RecordingSignal(),
    )
    for delivery in delivered:
        service.handle(delivery)
    metrics.clear_metrics()
    return progress.items[RUN_KEY], notifier.kinds()


def _state(item: dict[str, Any]) -> dict[str, Any]:
    """The record's state: everything but the ledger of which emails went out."""
    return {name: value for name, value in item.items() if name != "announced"}


def _check(item, kinds, expected_state, outcome):
    assert _state(item) == expected_state
    assert item["outcome"] == outcome
    assert len(kinds) == len(set(kinds))  # at most one email per kind
    final_kind = READY if outcome == contracts.STATUS_SUCCEEDED else FAILED
    assert final_kind in kinds  # the outcome's own email always went out
    assert sorted(item.get("announced", ())) == sorted(kinds)


@pytest.mark.parametrize("name", [*CONFLICTS, "successful-run", "failed-run"])
def test_conflicting_sets_settle_by_the_latest_deciding_event_in_any_order(name):
    if name in CONFLICTS:
        events, outcome = CONFLICTS[name]
    else:
        names = SUCCESSFUL_RUN if name == "successful-run" else FAILED_RUN
        events = run_events(names)
        succeeded = name == "successful-run"
        outcome = contracts.STATUS_SUCCEEDED if succeeded else contracts.STATUS_FAILED
    reference, _ = replay_in_memory(sorted(events, key=lambda e: (e["time"], e["id"])))
    expected_state = _state(reference)

    @settings(
        max_examples=MEMORY_EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(deliveries(events))
    def any_delivery(delivered: list[dict[str, Any]]) -> None:
        item, kinds = replay_in_memory(delivered)
        _check(item, kinds, expected_state, outcome)

    any_delivery()


@pytest.mark.parametrize("name", list(CONFLICTS))
def test_conflicting_sets_settle_the_same_on_dynamodb(moto_aws, name):
    events, outcome = CONFLICTS[name]
    reference, _ = replay(sorted(events, key=lambda e: (e["time"], e["id"])))
    expected_state = _state(reference)

    @settings(
        max_examples=EXAMPLES // 3,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(deliveries(events))
    def any_delivery(delivered: list[dict[str, Any]]) -> None:
        item, kinds = replay(delivered)
        _check(item, kinds, expected_state, outcome)

    any_delivery()
