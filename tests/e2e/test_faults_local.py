"""Faults on the whole local stack: Lambda's retries, the failure queue, `redrive`, the
watchdog, with the same handlers and pipeline as the demo."""

from __future__ import annotations

import time

import pytest

from core import contracts
from core.contracts import KIND_RUN_FAILED, KIND_RUN_STARTED, run_key
from core.run_record import DatasetRef
from lambdas.dal.run_slots_queue import is_slot_event
from lambdas.dal.runs_table import DynamoRunsRepository
from mnistflow.local.kfp_api import Fault
from mnistflow.local.stack import LocalStack
from mnistflow.redrive import redrive
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.e2e
DEADLINE_SECONDS = 60


def test_a_start_kfp_refuses_ends_on_the_failure_queue_and_redrive_starts_it(tmp_path):
    with LocalStack(tmp_path) as stack:
        # Given KFP refusing every run (an error no retry heals)
        stack.kfp.inject(Fault("status", times=1000, method="POST", status=400))
        key, version = stack.upload(SAMPLE_DIR / "mnist-sample.npz")
        this_run = run_key(stack.names.data_bucket, key, version)
        emails = []
        assert stack.run_until(
            lambda: emails.extend(stack.inbox()) or bool(emails), DEADLINE_SECONDS
        )
        # Then the start was given up once: START_FAILED, one RUN_FAILED, no run, and Lambda's
        # invocation record on start-run's failure queue after its three attempts
        assert stack.runs.get(this_run).status == contracts.STATUS_START_FAILED
        assert [e.kind for e in emails] == [KIND_RUN_FAILED]
        # (the upload's invocations: giving the slot back also said "a slot is free")
        calls = [
            c
            for c in stack.invocations
            if c.function == contracts.START_RUN and not is_slot_event(c.event)
        ]
        assert [(c.attempts, bool(c.error)) for c in calls][-1:] == [
            (contracts.LAMBDA_ASYNC_ATTEMPTS, True)
        ], [(c.event, c.error) for c in calls]

        # When KFP is fixed and the failure queue is redriven
        stack.kfp.clear_faults()
        results = redrive(stack.emulator.client("sqs"), stack.invoke, stack.redrive_targets())

        # Then the upload starts its one run, the message is gone, RUN_STARTED goes out
        assert [r.outcome for r in results] == ["redriven"]
        assert stack.runs.get(this_run).status == contracts.STATUS_RUN_STARTED
        assert len(stack.kfp.runs_named(this_run)) == 1
        assert [e.kind for e in stack.inbox()] == [KIND_RUN_STARTED]
        assert redrive(stack.emulator.client("sqs"), stack.invoke, stack.redrive_targets()) == []


def test_the_watchdog_closes_a_claim_whose_invocation_died(tmp_path):
    with LocalStack(tmp_path) as stack:
        # Given an invocation that claimed an upload and died (its lease long over)
        key = "incoming/lost.npz"
        dataset = DatasetRef(stack.names.data_bucket, key, "v1", "etag", 10)
        this_run = run_key(stack.names.data_bucket, key, "v1")
        runs = DynamoRunsRepository(
            stack.names.runs_table, lambda: stack.emulator.client("dynamodb")
        )
        assert runs.claim(this_run, dataset, "2026-11-28T12:00:00.000Z", 1, "dead-request").won

        # When the watchdog runs
        done = stack.run_watchdog(clock=lambda: time.time())

        # Then KFP is asked, has no such run, and the record is closed with one email
        assert done["start_failed"] == [this_run]
        assert stack.runs.get(this_run).status == contracts.STATUS_START_FAILED
        [email] = stack.inbox()
        assert email.kind == KIND_RUN_FAILED and "KFP has no run named" in email.message
        assert stack.kfp.runs == {}
