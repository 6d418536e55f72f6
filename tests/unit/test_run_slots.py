"""The concurrency limit with in-memory ports: uploads past `max_concurrent_runs` wait as
QUEUED and start in upload order when a run ends; each fault of lambdas.logic.start_run's
docstring, with what the user sees (records, emails, KFP runs)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

from core import contracts
from core.run_record import ATTR
from lambdas.logic.ports import KfpCallFailed, KfpExperiment, RunSlots
from lambdas.logic.track_progress import TrackProgress
from lambdas.logic.watchdog import Watchdog, WatchdogPolicy
from tests.conftest import load_event
from tests.fakes import InMemoryRunProgress
from tests.fakes.progress import event
from tests.fakes.settings import function_settings
from tests.unit.test_start_run_logic import BUCKET, World

SLOT_EVENT = {"Records": [{"eventSource": "aws:sqs", "body": '{"slot_free": "test"}'}]}


def upload(number: int) -> dict:
    """The canned upload under another name: a dataset version of its own."""
    payload = copy.deepcopy(load_event("s3_put"))
    obj = payload["Records"][0]["s3"]["object"]
    obj["key"] = f"incoming/mnist-{number:02d}.pkl.gz"
    obj["versionId"] = f"version-{number:02d}"
    return payload


def key(number: int) -> str:
    return contracts.run_key(BUCKET, f"incoming/mnist-{number:02d}.pkl.gz", f"version-{number:02d}")


class Slots(World):
    """Start-run, track-progress and the watchdog over one in-memory table."""

    def __init__(self, limit: int = 2, **settings) -> None:
        super().__init__(max_concurrent_runs=limit, **settings)
        self.progress = InMemoryRunProgress(self.runs.items)
        self.track = TrackProgress(
            self.progress, self.notifier, slots=self.slots, slot_signal=self.signal
        )

    def upload(self, number: int, request_id: str = "") -> dict:
        self.clock.now += 1  # each upload accepted a second after the one before
        return self.service.handle_notification(
            upload(number), lambda: 60.0, request_id or f"request-{number}"
        )

    def slot_free(self, request_id: str = "slot-request") -> dict:
        return self.service.handle_slot_free(SLOT_EVENT, lambda: 60.0, request_id)

    def end(self, number: int, event_id: str = "end-1", name: str = "pipeline_succeeded"):
        """The pipeline's final-state event for upload `number`."""
        payload = event(name, id=event_id)
        payload["detail"]["run_key"] = key(number)
        return self.track.handle(payload)

    def status(self, number: int) -> str:
        return self.runs.items[key(number)][ATTR.status]

    def started_keys(self) -> list[str]:
        return [created["display_name"] for created in self.kfp.created]

    def emails(self, number: int) -> list[str]:
        return [p.kind for p in self.notifier.published if p.run_key == key(number)]


def test_uploads_past_the_limit_wait_as_queued_without_a_kfp_run_or_a_claim():
    # Given a limit of 2
    world = Slots(limit=2)
    # When 3 uploads arrive
    outcomes = [world.upload(n) for n in (1, 2, 3)]
    # Then 2 runs start, the third waits as QUEUED: no KFP run, no claim lease, no email yet
    assert [o["started"] for o in outcomes] == [[key(1)], [key(2)], []]
    assert outcomes[2]["queued"] == [key(3)]
    assert world.started_keys() == [key(1), key(2)]
    assert world.status(3) == contracts.STATUS_QUEUED
    assert ATTR.claim_expires_at not in world.runs.items[key(3)]
    assert world.emails(3) == []
    assert world.slots.count == 2 and world.slots.holders() == sorted([key(1), key(2)])


def test_a_run_that_ends_frees_its_slot_and_the_oldest_queued_upload_starts():
    # Given 2 runs in flight and uploads 3, 4, 5 waiting (limit 2)
    world = Slots(limit=2)
    for n in (1, 2, 3, 4, 5):
        world.upload(n)
    # When run 1 ends (its outcome decided by track-progress)
    world.end(1)
    # Then its slot is given back and start-run is told
    assert world.slots.count == 1
    assert len(world.signal.sent) == 1
    # And the slot-free message starts upload 3, the oldest waiting, with its own email
    outcome = world.slot_free()
    assert outcome["started"] == [key(3)]
    assert world.status(3) == contracts.STATUS_RUN_STARTED
    assert world.emails(3) == [contracts.KIND_RUN_STARTED]
    assert world.status(4) == world.status(5) == contracts.STATUS_QUEUED
    # And runs end one by one: the rest start in upload order, never more than 2 in flight
    world.end(2)
    world.slot_free()
    world.end(3)
    world.slot_free()
    assert world.started_keys() == [key(n) for n in (1, 2, 3, 4, 5)]
    assert world.slots.count == 2


def test_duplicate_slot_free_messages_start_nothing_twice():
    world = Slots(limit=1)
    world.upload(1)
    world.upload(2)
    world.end(1)
    # When the message arrives three times (SQS delivers at least once)
    outcomes = [world.slot_free(f"slot-{i}") for i in range(3)]
    # Then upload 2 starts once; the others find no free slot
    assert [o["started"] for o in outcomes] == [[key(2)], [], []]
    assert world.started_keys() == [key(1), key(2)]
    assert world.emails(2) == [contracts.KIND_RUN_STARTED]


def test_an_outcome_event_delivered_twice_frees_the_slot_once():
    world = Slots(limit=2)
    world.upload(1)
    world.upload(2)
    world.end(1, event_id="end-1")
    # When the same final event comes again, and then a later deciding event
    world.end(1, event_id="end-1")
    world.end(1, event_id="end-2", name="pipeline_failed")
    # Then one slot was freed, once: run 2 still holds its own
    assert world.slots.count == 1
    assert world.slots.holders() == [key(2)]
    assert len(world.signal.sent) == 1


def test_a_slot_freed_between_the_lost_take_and_the_queueing_is_taken_not_missed():
    # Given every slot held when the upload tries to take one
    world = Slots(limit=1)
    world.upload(1)
    # And run 1 ends just after the upload's take lost (before it could queue)
    world.slots.before_queue.append(lambda: world.end(1))
    # When upload 2 is handled
    outcome = world.upload(2)
    # Then it takes the freed slot and starts: it is never left QUEUED with a slot free
    assert outcome["started"] == [key(2)]
    assert world.slots.count == 1


def test_a_rejected_dataset_never_takes_a_slot():
    world = Slots(limit=1)
    # When an upload is refused (too large)
    world.service.handle_notification(load_event("s3_put_too_large"), lambda: 60.0, "r-big")
    # Then no slot is held and the next upload starts at once
    assert world.slots.count == 0 and world.slots.holders() == []
    assert world.upload(1)["started"] == [key(1)]


def test_a_run_that_cannot_start_gives_its_slot_back_and_the_next_one_starts():
    # Given a limit of 1, run 1 in flight and upload 2 waiting
    world = Slots(limit=1)
    world.upload(1)
    world.upload(2)
    world.upload(3)
    world.end(1)
    # When KFP refuses upload 2's run for good (HTTP 400)
    world.kfp.fail_with_status("create_run", 400)
    outcome = world.slot_free()
    # Then upload 2 is START_FAILED with its email, its slot given back, and upload 3 started
    assert outcome["failed"] == [key(2)] and outcome["started"] == [key(3)]
    assert world.status(2) == contracts.STATUS_START_FAILED
    assert world.emails(2) == [contracts.KIND_RUN_FAILED]
    assert world.slots.holders() == [key(3)] and world.slots.count == 1


def kfp_down(world: Slots) -> None:
    """Every KFP call fails with an error that may heal (a 503, a timeout), until cleared."""
    world.kfp.failures[:] = [("*", KfpCallFailed(KfpCallFailed.TRANSIENT, "HTTP 503"))] * 10_000


def test_a_kfp_outage_puts_the_queued_run_back_in_line_and_loses_no_upload():
    # Given a limit of 1, run 1 in flight and uploads 2, 3, 4 waiting
    world = Slots(limit=1)
    for n in (1, 2, 3, 4):
        world.upload(n)
    created_at = {n: world.runs.items[key(n)][ATTR.created_at] for n in (2, 3, 4)}
    world.end(1)
    # When KFP is down as the slot-free message starts upload 2
    kfp_down(world)
    outcome = world.slot_free()
    # Then upload 2 is back in line with its place kept, its slot given back in the same move,
    # and start-run stops: uploads 3 and 4 were never tried, nothing failed, no email
    assert outcome["requeued"] == [key(2)]
    assert outcome["failed"] == outcome["started"] == []
    assert [world.status(n) for n in (2, 3, 4)] == [contracts.STATUS_QUEUED] * 3
    assert {n: world.runs.items[key(n)][ATTR.created_at] for n in (2, 3, 4)} == created_at
    assert world.slots.count == 0 and world.slots.holders() == []
    assert ATTR.claim_expires_at not in world.runs.items[key(2)]
    assert "try 2 of" in world.runs.items[key(2)][ATTR.reason]
    assert world.emails(2) == world.emails(3) == []
    assert [world.runs.items[key(n)][ATTR.start_attempts] for n in (2, 3, 4)] == [2, 1, 1]
    # And the watchdog's next pass wakes start-run again (a slot is free, runs are queued)
    world.signal.sent.clear()
    assert watchdog(world, world.clock.now + 60).run()["woke"] == ["3 queued"]
    # When KFP is back, Then the runs start in upload order, one at a time
    world.kfp.failures.clear()
    assert world.slot_free()["started"] == [key(2)]
    world.end(2, "end-2")
    assert world.slot_free()["started"] == [key(3)]
    world.end(3, "end-3")
    assert world.slot_free()["started"] == [key(4)]
    assert world.started_keys() == [key(n) for n in (1, 2, 3, 4)]
    assert world.emails(2)[0] == contracts.KIND_RUN_STARTED  # then its outcome's email
    assert contracts.KIND_RUN_FAILED not in world.emails(2) + world.emails(3) + world.emails(4)
    assert not [i for i in world.runs.items.values() if i.get(ATTR.status) == "START_FAILED"]


def test_a_queued_run_kfp_keeps_refusing_is_given_up_at_the_bound_then_the_next_waits():
    from lambdas.logic.start_run import START_ATTEMPTS_LIMIT

    # Given a limit of 1, run 1 ended, uploads 2 and 3 waiting, and KFP down for long
    world = Slots(limit=1)
    for n in (1, 2, 3):
        world.upload(n)
    world.end(1)
    kfp_down(world)
    # When "a slot is free" comes again and again (the watchdog's passes)
    tries = START_ATTEMPTS_LIMIT - world.runs.items[key(2)][ATTR.start_attempts]
    outcomes = [world.slot_free(f"slot-{i}") for i in range(tries)]
    # Then upload 2 stays QUEUED, without an email, until its last try
    assert [o["requeued"] for o in outcomes[:-1]] == [[key(2)]] * (tries - 1)
    assert all(o["failed"] == [] for o in outcomes[:-1])
    # And at the bound it is given up: START_FAILED with one RUN_FAILED email; upload 3 takes
    # its turn in the same invocation and, KFP still down, goes back in line
    assert outcomes[-1]["failed"] == [key(2)] and outcomes[-1]["requeued"] == [key(3)]
    assert world.status(2) == contracts.STATUS_START_FAILED
    assert world.emails(2) == [contracts.KIND_RUN_FAILED]
    assert world.status(3) == contracts.STATUS_QUEUED and world.emails(3) == []
    assert world.slots.count == 0


def test_a_retry_of_an_upload_that_held_a_slot_does_not_take_a_second():
    # Given an upload whose first attempt took a slot, then KFP failed (Lambda retries it)
    world = Slots(limit=2)
    world.kfp.failures += [("*", KfpCallFailed(KfpCallFailed.TRANSIENT, "down"))] * 8
    world.clock.now += 1
    first = world.service.handle_notification  # the same request id on each attempt
    try:
        first(upload(1), lambda: 12.0, "request-1")
    except Exception:  # noqa: BLE001, S110 - StartRunFailed: Lambda retries
        pass
    assert world.slots.count == 1 and world.status(1) == contracts.STATUS_ACCEPTED
    # When Lambda's retry (same request id) starts the run
    world.kfp.failures.clear()
    outcome = first(upload(1), lambda: 60.0, "request-1")
    # Then it goes on with the slot it holds: one slot, one run
    assert outcome["started"] == [key(1)]
    assert world.slots.count == 1 and world.started_keys() == [key(1)]


def test_a_queued_upload_deleted_before_its_turn_is_rejected_and_frees_the_slot():
    from lambdas.logic.ports import UploadGone

    world = Slots(limit=1)
    world.upload(1)
    world.upload(2)
    world.upload(3)
    world.end(1)

    def gone(dataset):
        if dataset.key.endswith("mnist-02.pkl.gz"):
            raise UploadGone("NoSuchVersion")
        return {}

    world.uploads.metadata = gone
    outcome = world.slot_free()
    assert outcome["rejected"] == [key(2)] and outcome["started"] == [key(3)]
    assert world.status(2) == contracts.STATUS_REJECTED
    assert world.emails(2) == [contracts.KIND_DATA_REJECTED]
    assert world.slots.holders() == [key(3)]


def test_a_start_run_out_of_time_hands_the_rest_on():
    world = Slots(limit=2)
    world.upload(1)
    world.upload(2)
    world.upload(3)
    world.end(1)
    world.signal.sent.clear()
    outcome = world.service.handle_slot_free(SLOT_EVENT, lambda: 1.0, "late")
    assert outcome["started"] == []
    assert world.status(3) == contracts.STATUS_QUEUED
    assert len(world.signal.sent) == 1  # the next invocation takes it up


# -- the watchdog: freeing, recounting, waking -------------------------------------------------


def watchdog(world: Slots, now: float) -> Watchdog:
    settings = function_settings(
        contracts.WATCHDOG, kfp_experiment_name="mnist-uploads", max_concurrent_runs=2
    )
    return Watchdog(
        records=lambda: [r for k in list(world.runs.items) if (r := world.runs.record(k))],
        runs=world.runs,
        progress=world.progress,
        notifier=world.notifier,
        kfp=world.kfp,
        settings=settings,
        policy=WatchdogPolicy.from_settings(settings),
        clock=lambda: now,
        slots=world.slots,
        slot_signal=world.signal,
    )


def test_a_lost_slot_free_message_is_made_up_by_the_watchdog():
    # Given run 1 ended while 3 waited, and the "slot is free" message was lost
    world = Slots(limit=2)
    for n in (1, 2, 3):
        world.upload(n)
    world.signal.lose = 1
    world.end(1)
    assert world.signal.sent == [] and world.status(3) == contracts.STATUS_QUEUED
    # When the watchdog passes
    done = watchdog(world, world.clock.now + 60).run()
    # Then it sends the message again, and start-run starts upload 3
    assert done["woke"] == ["1 queued"] and len(world.signal.sent) == 1
    assert world.slot_free()["started"] == [key(3)]


def test_the_watchdog_rebuilds_a_wrong_count_from_the_records():
    world = Slots(limit=2)
    world.upload(1)
    world.slots.count = 2  # a count gone wrong (a release whose count update was refused)
    done = watchdog(world, world.clock.now + 60).run()
    assert done["recounted"] == ["2 -> 1"] and world.slots.count == 1


def test_the_watchdog_frees_a_slot_a_finished_record_still_holds():
    # Given a START_FAILED record still holding its slot (its owner died between the writes)
    world = Slots(limit=1)
    world.upload(1)
    item = world.runs.items[key(1)]
    item[ATTR.status] = contracts.STATUS_START_FAILED
    world.upload(2)
    assert world.status(2) == contracts.STATUS_QUEUED
    # When the watchdog passes
    done = watchdog(world, world.clock.now + 60).run()
    # Then the slot is free again and start-run is told, so upload 2 starts
    assert done["freed"] == [key(1)] and world.slots.count == 0
    assert world.slot_free()["started"] == [key(2)]


def test_a_stale_claim_the_watchdog_ends_start_failed_frees_its_slot():
    # Given start-run died after taking a slot, before creating the KFP run, every attempt
    world = Slots(limit=1)
    world.kfp.experiments["exp-1"] = KfpExperiment("exp-1", "mnist-uploads")
    world.clock.now += 1
    claim = world.runs.claim(key(1), _dataset(1), _iso(world.clock.now), 0, "dead-request")
    assert claim.won
    stamp = _iso(world.clock.now)
    assert world.slots.take_or_queue(key(1), "dead-request", 1, stamp) == RunSlots.TAKEN
    world.upload(2)
    # When the watchdog finds the claim stale and KFP has no run for it
    done = watchdog(world, world.clock.now + 3600).run()
    # Then the record is START_FAILED (with its email), the slot free, upload 2 woken
    assert done["start_failed"] == [key(1)] and done["freed"] == [key(1)]
    assert world.emails(1) == [contracts.KIND_RUN_FAILED]
    assert world.slot_free()["started"] == [key(2)]


def _dataset(number: int):
    from core.run_record import DatasetRef

    return DatasetRef(BUCKET, f"incoming/mnist-{number:02d}.pkl.gz", f"version-{number:02d}", "e")


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def test_a_training_job_past_the_quota_fails_with_resource_limit_exceeded():
    # botocore/data/sagemaker/2017-07-24/service-2.json: CreateTrainingJob's errors; the reason
    # runs wait as QUEUED instead of starting past `max_concurrent_runs`
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    errors = {shape.name for shape in model.operation_model("CreateTrainingJob").error_shapes}
    assert "ResourceLimitExceeded" in errors


def test_status_shows_each_waiting_upload_with_its_place_in_line():
    from core.run_record import RunRecord
    from mnistflow.status import describe_run, describe_runs

    world = Slots(limit=1)
    for n in (1, 2, 3):
        world.upload(n)
    records = [r for k in world.runs.items if (r := world.runs.record(k))]
    table = describe_runs(records)
    line = {k: next(x for x in table.splitlines() if x.startswith(k)) for k in map(key, (1, 2, 3))}
    assert contracts.STATUS_RUN_STARTED in line[key(1)]
    assert "QUEUED #1" in line[key(2)] and "QUEUED #2" in line[key(3)]
    one: RunRecord = world.runs.record(key(3))
    assert "#2 in line" in describe_run(one, place=2)
