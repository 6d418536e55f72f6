"""The stuck-run watchdog with in-memory ports: what it closes, what it leaves alone."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core import contracts
from core.run_record import DatasetRef
from lambdas.logic.ports import KfpCallFailed, KfpExperiment, KfpRun
from lambdas.logic.track_progress import TrackProgress
from lambdas.logic.watchdog import (
    CLAIM_GRACE_SECONDS,
    EMAIL_GRACE_SECONDS,
    Watchdog,
    WatchdogPolicy,
)
from tests.conftest import load_event
from tests.fakes import (
    InMemoryRunProgress,
    InMemoryRuns,
    InMemoryRunSlots,
    RecordingNotifier,
    RecordingSignal,
    ScriptedEndpoints,
    ScriptedKfp,
)
from tests.fakes.progress import RUN_KEY, start_run_record
from tests.fakes.settings import function_settings

DATASET = DatasetRef("mnistflow-data-123456789012", "incoming/mnist.pkl.gz", "v1", "etag", 10)
T0 = 1_795_867_200  # 2026-11-28T12:00:00Z
HOUR = 3600


def iso(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


class World:
    def __init__(self) -> None:
        self.now = float(T0)
        self.runs = InMemoryRuns()
        self.progress = InMemoryRunProgress(self.runs.items)  # one table, two views
        self.slots = InMemoryRunSlots(self.runs.items)
        self.signal = RecordingSignal()
        self.notifier = RecordingNotifier()
        self.kfp = ScriptedKfp()
        self.experiment = KfpExperiment("exp-1", "mnist")
        self.kfp.experiments["exp-1"] = self.experiment
        settings = function_settings(contracts.WATCHDOG, kfp_experiment_name="mnist")
        self.endpoints = ScriptedEndpoints()
        self.watchdog = Watchdog(
            records=lambda: [r for key in self.runs.items if (r := self.runs.record(key))],
            runs=self.runs,
            progress=self.progress,
            notifier=self.notifier,
            kfp=self.kfp,
            settings=settings,
            policy=WatchdogPolicy.from_settings(settings),
            connection_hint="check the access entry",
            clock=lambda: self.now,
            endpoints=self.endpoints,
            slots=self.slots,
            slot_signal=self.signal,
        )

    def stale_claim(self, lease_seconds: int = 150) -> None:
        """An invocation that claimed the run key at T0 and stopped."""
        claim = self.runs.claim(RUN_KEY, DATASET, iso(T0), T0 + lease_seconds, "request-1")
        assert claim.won

    def started_run(self, state: str = "RUNNING") -> None:
        """A run start-run recorded at T0, which KFP holds in `state`."""
        record = start_run_record(created_at=iso(T0), updated_at=iso(T0 + 2))
        record["kfp_run_id"] = "run-1"
        record["announced"] = [contracts.KIND_RUN_STARTED]  # start-run's email went out
        self.runs.items[RUN_KEY] = record
        self.kfp.runs.append(KfpRun("run-1", RUN_KEY, "exp-1", "t0", state=state))

    def record(self):
        return self.runs.record(RUN_KEY)


def test_a_stale_claim_with_no_run_ends_start_failed_with_one_email():
    # Given a claim whose invocation stopped, past its lease and Lambda's retry delays
    world = World()
    world.stale_claim()
    world.now = T0 + 150 + CLAIM_GRACE_SECONDS + 1

    # When the watchdog runs (twice: passes may overlap)
    first = world.watchdog.run()
    second = world.watchdog.run()

    # Then the start is failed once, with the email saying what was found
    assert first["start_failed"] == [RUN_KEY] and second["start_failed"] == []
    record = world.record()
    assert record.status == contracts.STATUS_START_FAILED
    assert "KFP has no run named" in record.reason
    [note] = world.notifier.published
    assert note.kind == contracts.KIND_RUN_FAILED and "check the access entry" in note.message
    assert world.kfp.created == []  # the watchdog never creates runs


def test_a_stale_claim_whose_run_exists_becomes_run_started():
    world = World()
    world.stale_claim()
    world.kfp.runs.append(KfpRun("run-7", RUN_KEY, "exp-1", "t0", state="RUNNING"))
    world.now = T0 + 150 + CLAIM_GRACE_SECONDS + 1
    assert world.watchdog.run()["started"] == [RUN_KEY]
    record = world.record()
    assert (record.status, record.kfp_run_id) == (contracts.STATUS_RUN_STARTED, "run-7")
    assert world.notifier.kinds() == [contracts.KIND_RUN_STARTED]


def test_a_claim_within_its_lease_or_grace_is_left_to_its_owner():
    world = World()
    world.stale_claim()
    world.now = T0 + 150 + CLAIM_GRACE_SECONDS - 1  # Lambda's retry may still come
    assert world.watchdog.run()["start_failed"] == []
    assert world.record().status == contracts.STATUS_ACCEPTED and world.kfp.calls == []


@pytest.mark.parametrize(
    ("state", "closed", "finding"),
    [
        ("FAILED", True, "KFP says run run-1 is FAILED"),
        ("CANCELED", True, "KFP says run run-1 is CANCELED"),
        ("RUNNING", False, ""),
        ("PENDING", False, ""),
        ("SUCCEEDED", False, ""),
    ],
)
def test_a_quiet_run_is_closed_only_when_kfp_says_it_ended(state, closed, finding):
    # Given a started run with no progress for longer than the deadline
    world = World()
    world.started_run(state)
    world.now = T0 + 2 * HOUR

    # When the watchdog runs
    done = world.watchdog.run()

    # Then KFP's state decides
    record = world.record()
    if closed:
        assert done["closed"] == [RUN_KEY] and record.outcome == contracts.STATUS_FAILED
        [note] = world.notifier.published
        assert note.kind == contracts.KIND_RUN_FAILED and finding in note.message
    else:
        assert record.outcome == "" and world.notifier.published == []
        assert RUN_KEY in done["running"] + done["finished"]


def test_a_run_kfp_does_not_have_is_closed():
    world = World()
    world.started_run()
    world.kfp.runs.clear()
    world.now = T0 + 2 * HOUR
    assert world.watchdog.run()["closed"] == [RUN_KEY]
    assert "KFP has no run run-1" in world.notifier.published[0].message


def test_a_run_with_progress_is_left_until_its_maximum_age():
    world = World()
    world.started_run("FAILED")
    TrackProgress(
        world.progress, world.notifier, slots=world.slots, slot_signal=world.signal
    ).handle(load_event("sagemaker_training_in_progress"))
    world.now = T0 + 23 * HOUR
    assert world.watchdog.run()["closed"] == []
    world.now = T0 + 25 * HOUR
    assert world.watchdog.run()["closed"] == [RUN_KEY]


def test_kfp_unreachable_closes_nothing():
    world = World()
    world.started_run("FAILED")
    world.kfp.failures = [("*", KfpCallFailed(KfpCallFailed.TRANSIENT, "HTTP 503"))]
    world.now = T0 + 2 * HOUR
    assert world.watchdog.run()["unreachable"] == [RUN_KEY]
    assert world.record().outcome == "" and world.notifier.published == []
    assert world.watchdog.run()["closed"] == [RUN_KEY]  # the next pass asks again


def test_a_late_pipeline_event_does_not_reopen_a_closed_run():
    # Given a run the watchdog closed as FAILED
    world = World()
    world.started_run("CANCELED")
    world.now = T0 + 2 * HOUR
    world.watchdog.run()
    # When the pipeline's final-state event arrives late (its time is before the closing)
    TrackProgress(
        world.progress, world.notifier, slots=world.slots, slot_signal=world.signal
    ).handle(load_event("pipeline_succeeded"))
    # Then the outcome stays, and no second kind of email goes out
    assert world.record().outcome == contracts.STATUS_FAILED
    assert world.notifier.kinds() == [contracts.KIND_RUN_FAILED]


def test_an_email_a_finished_start_owes_is_sent_after_its_grace():
    # Given a start that failed, whose email did not go out (no retry came)
    world = World()
    world.stale_claim()
    world.runs.mark_start_failed(RUN_KEY, "request-1", "HTTP 500", iso(T0 + 10))
    world.now = T0 + 10 + EMAIL_GRACE_SECONDS - 1
    assert world.watchdog.run()["emailed"] == []
    world.now = T0 + 10 + EMAIL_GRACE_SECONDS + 1
    assert world.watchdog.run()["emailed"] == [RUN_KEY]
    assert world.watchdog.run()["emailed"] == []
    assert world.notifier.kinds() == [contracts.KIND_RUN_FAILED]


def test_per_run_endpoints_go_when_their_time_to_live_ends():
    # Given two per-run endpoints, made 25 h and 1 h ago, and the default time to live (24 h)
    world = World()
    world.endpoints.created = {
        "mnist-aaa-endpoint": T0 - 25 * HOUR,
        "mnist-bbb-endpoint": T0 - HOUR,
    }
    # When the watchdog passes
    done = world.watchdog.run()
    # Then the old one is retired, the young one stays; the policy's time to live was asked for
    assert done["retired"] == ["endpoint mnist-aaa-endpoint"]
    assert world.endpoints.calls == [(24 * HOUR, T0)]
    assert list(world.endpoints.created) == ["mnist-bbb-endpoint"]


def test_sagemaker_unreachable_retires_nothing_and_the_runs_are_still_handled():
    # Given SageMaker unreachable and a stale claim
    world = World()
    world.endpoints.unreachable = True
    world.endpoints.created = {"mnist-aaa-endpoint": T0 - 25 * HOUR}
    world.stale_claim()
    world.now = T0 + 150 + CLAIM_GRACE_SECONDS + 1
    # When the watchdog passes
    done = world.watchdog.run()
    # Then the claim is handled, nothing was retired, and the next pass tries again
    assert done["start_failed"] == [RUN_KEY] and done["retired"] == []
    world.endpoints.unreachable = False
    assert world.watchdog.run()["retired"] == ["endpoint mnist-aaa-endpoint"]
