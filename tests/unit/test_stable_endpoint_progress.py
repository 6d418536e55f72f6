"""Events about the stable endpoint, which run after run updates: each is filed under the run
whose endpoint config it names, not the run whose tag the endpoint carries (the one that made
it). Fixtures (tests/events/sagemaker_stable_endpoint_*.json) have the shape of the SageMaker
developer guide's "SageMaker endpoint state change" example (EventBridge page: detail =
DescribeEndpoint's fields, statuses in capitals, Tags as a map); the `_pending` one adds
PendingDeploymentSummary as DescribeEndpoint and the "endpoint deployment state change" example
show it while an update is under way."""

from __future__ import annotations

import itertools

import pytest

from core import contracts
from core import run_record as rr
from core.run_record import RunRecord
from lambdas.logic.progress_events import ProgressEvent, parse_event
from lambdas.logic.track_progress import TrackProgress
from lambdas.observability import metrics
from tests.conftest import load_event
from tests.fakes import InMemoryRunProgress, RecordingNotifier, slot_fakes
from tests.fakes.progress import RUN_KEY, start_run_record


@pytest.fixture(autouse=True)
def _no_metrics_left_behind():
    # Powertools keeps metrics in a module-wide object and flushes it by itself at 100: what
    # these many events add must not be flushed in another test (without a namespace).
    yield
    metrics.clear_metrics()


CHAMPION = RUN_KEY  # made the stable endpoint (its tag), serves before the update
CHALLENGER = "mnist-7e1f0c2b9a44"


def _parsed(name: str) -> ProgressEvent:
    parsed = parse_event(load_event(name))
    assert isinstance(parsed, ProgressEvent), parsed
    return parsed


def test_the_endpoint_on_a_new_runs_config_is_that_runs_event_whatever_its_tags_say():
    event = _parsed("sagemaker_stable_endpoint_updated")
    assert load_event("sagemaker_stable_endpoint_updated")["detail"]["Tags"] == {
        contracts.RUN_KEY_TAG: CHAMPION
    }
    assert (event.run_key, event.normalized) == (CHALLENGER, rr.IN_SERVICE)
    assert event.announces == contracts.STATUS_SUCCEEDED


def test_an_update_under_way_is_the_pending_runs_when_the_event_names_it():
    assert _parsed("sagemaker_stable_endpoint_pending").run_key == CHALLENGER
    # The documented endpoint event names only the config in service: the serving run's
    updating = _parsed("sagemaker_stable_endpoint_updating")
    assert (updating.run_key, updating.normalized) == (CHAMPION, rr.IN_PROGRESS)
    assert updating.announces == ""


def test_a_rolled_back_update_leaves_the_event_with_the_run_that_keeps_serving():
    event = _parsed("sagemaker_stable_endpoint_rolled_back")
    assert (event.run_key, event.normalized) == (CHAMPION, rr.IN_SERVICE)
    assert "ALARM" in event.failure_reason


def _world():
    runs = InMemoryRunProgress(
        {
            CHAMPION: start_run_record(),
            CHALLENGER: start_run_record(run_key=CHALLENGER),
        }
    )
    notifier = RecordingNotifier()
    return (
        runs,
        notifier,
        TrackProgress(runs, notifier, "https://kfp.example.com", **slot_fakes(runs)),
    )


ROLLBACK = [
    "sagemaker_stable_endpoint_updating",
    "sagemaker_stable_endpoint_pending",
    "sagemaker_stable_endpoint_rolled_back",
    "pipeline_failed_rolled_back",
]


@pytest.mark.parametrize("order", list(itertools.permutations(ROLLBACK)))
def test_a_rolled_back_challenger_fails_saying_who_serves_and_never_claims_the_endpoint(order):
    runs, notifier, service = _world()
    # Given the champion's endpoint announced
    service.handle(load_event("sagemaker_endpoint_in_service"))
    # When the challenger's update is rolled back, the events arriving in any order, twice
    for name in [*order, *order]:
        service.handle(load_event(name))
    champion = RunRecord.from_item(runs.items[CHAMPION])
    challenger = RunRecord.from_item(runs.items[CHALLENGER])
    # Then the challenger failed at the endpoint, its record never in service
    assert challenger.overall_status == contracts.STATUS_FAILED
    assert challenger.entry(contracts.STEP_ENDPOINT, rr.IN_SERVICE) is None
    # And the champion is still the run whose endpoint is ready, announced once
    assert champion.overall_status == contracts.STATUS_SUCCEEDED
    kinds = [(note.run_key, note.kind) for note in notifier.published]
    assert kinds.count((CHAMPION, contracts.KIND_ENDPOINT_READY)) == 1
    assert kinds.count((CHALLENGER, contracts.KIND_RUN_FAILED)) == 1
    assert (CHALLENGER, contracts.KIND_ENDPOINT_READY) not in kinds
    # And the challenger's email says it was rolled back and who keeps serving
    [failed] = [n for n in notifier.published if n.run_key == CHALLENGER]
    assert f"rolled back; {CHAMPION}" in failed.subject + failed.message
    assert "The model it served before keeps serving" in failed.message
