"""Property: for a run's full set of events, any order and any duplicates give the same final
record and exactly one announcement (the real DynamoDB adapter on moto, a fresh table each time).
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
from lambdas.dal.runs_table import DynamoRunProgress, RunsTableReader, to_attribute_value
from lambdas.logic.track_progress import TrackProgress
from lambdas.observability import metrics
from mnistflow.local.provision import create_runs_table
from tests.fakes import RecordingNotifier
from tests.fakes.progress import FAILED_RUN, RUN_KEY, SUCCESSFUL_RUN, event, start_run_record

pytestmark = pytest.mark.integration

REGION = "us-east-1"
# ~60 examples per property keeps both under ~10 s on moto (each example: one table, 8-20 writes).
EXAMPLES = 60
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
    service = TrackProgress(DynamoRunProgress(table, partial(lambda c: c, ddb)), notifier)
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
        assert item == expected
        assert announced == [kind]

    any_delivery()
