"""The concurrency limit on the whole local stack (issue 12's "must show"): 10 uploads at once
with a limit of 2 never have more than 2 runs in flight, all 10 end, each with its own emails."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from core import contracts
from core.contracts import KIND_RUN_STARTED, run_key
from mnistflow.status import describe_runs
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.e2e
UPLOADS = 10
LIMIT = 2
DEADLINE_SECONDS = 600  # ~5 s a run, 5 rounds of 2, on 2 shared cores


def test_ten_uploads_at_once_with_a_limit_of_two(tmp_path):
    from mnistflow.local.stack import LocalStack

    with LocalStack(tmp_path, context={"max_concurrent_runs": LIMIT}) as stack:
        # Given 10 uploads at once
        keys = [
            run_key(stack.names.data_bucket, *stack.upload(SAMPLE_DIR / "mnist-sample.npz", key))
            for key in (f"incoming/burst-{i:02d}.npz" for i in range(UPLOADS))
        ]
        sagemaker = stack.emulator.client("sagemaker")
        peak = Counter()
        emails = []
        queued_positions = []

        def sample() -> None:
            records = [r for r in stack.runs.scan() if r.run_key in keys]
            started = [r for r in records if r.kfp_run_id and not r.outcome]
            peak["records"] = max(peak["records"], len(started))
            peak["slots"] = max(peak["slots"], sum(r.holds_slot for r in records))
            training = sagemaker.list_training_jobs(StatusEquals="InProgress")
            peak["training"] = max(peak["training"], len(training["TrainingJobSummaries"]))
            if not queued_positions and any(r.status == contracts.STATUS_QUEUED for r in records):
                queued_positions.append(describe_runs(records))

        def done() -> bool:
            emails.extend(stack.inbox())
            outcomes = {e.run_key for e in emails if e.kind != KIND_RUN_STARTED}
            return outcomes >= set(keys)

        # When the stack runs until every run has its outcome email
        started = time.monotonic()
        assert stack.run_until(done, DEADLINE_SECONDS, on_round=sample), (
            describe_runs(stack.runs.scan()),
            [c.error for c in stack.invocations if c.error],
        )
        seconds = time.monotonic() - started

        # Then never more than 2 were in flight, and 2 were: runs started without an outcome
        # and slots held (the local KFP executes one run at a time, the other waits PENDING
        # in KFP), and SageMaker training jobs in progress
        assert peak["records"] == LIMIT and peak["slots"] == LIMIT, peak
        assert 1 <= peak["training"] <= LIMIT, peak
        # And the others waited as QUEUED, with their place in line in `status`
        assert queued_positions and "QUEUED #1" in queued_positions[0], queued_positions
        # And all 10 ended, each with its own emails: RUN_STARTED and its outcome, once each
        records = {r.run_key: r for r in stack.runs.scan()}
        assert all(records[k].outcome for k in keys)
        for key in keys:
            kinds = sorted(e.kind for e in emails if e.run_key == key)
            outcome = contracts.KIND_FOR_OUTCOME[records[key].outcome]
            assert kinds == sorted([KIND_RUN_STARTED, outcome]), (key, kinds)
        # And every KFP run was created once, no slot is left held, the count is back to 0
        assert all(len(stack.kfp.runs_named(k)) == 1 for k in keys)
        assert not any(r.holds_slot for r in records.values())
        slots = stack.emulator.client("dynamodb").get_item(
            TableName=stack.names.runs_table,
            Key={"run_key": {"S": contracts.RUN_SLOTS_ITEM_KEY}},
            ConsistentRead=True,
        )["Item"]
        assert slots["in_flight"] == {"N": "0"}
        print(f"10 uploads, limit 2: all ended in {seconds:.1f} s; peak {dict(peak)}")
