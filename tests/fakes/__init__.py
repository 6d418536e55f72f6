"""In-memory fakes of the domain's ports: they record what happened for tests to assert on.

The runs-table fakes keep the same rules as the DynamoDB adapters: tests/integration/
test_runs_table_contract.py runs one set of scenarios against both.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core import contracts
from core.run_record import ATTR, TIMELINE_MAX_ENTRIES, DatasetRef, RunRecord
from lambdas.logic.ports import (
    Claim,
    KfpCallFailed,
    KfpExperiment,
    KfpRun,
    KfpRunsApi,
    Notifier,
    ProgressWrite,
    RunProgress,
    RunsRepository,
)


class InMemoryRuns(RunsRepository):
    """Same claim rules as the DynamoDB adapter, in a dict of plain items."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _epoch_of(now: str) -> int:
        return int(datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp())

    def record(self, run_key: str) -> RunRecord | None:
        item = self.items.get(run_key)
        return RunRecord.from_item(copy.deepcopy(item)) if item else None

    def claim(self, run_key: str, dataset: DatasetRef, now: str, lease_until: int) -> Claim:
        item = self.items.get(run_key)
        if item is not None:
            status = item[ATTR.status]
            lease_over = status == contracts.STATUS_ACCEPTED and item.get(
                ATTR.claim_expires_at, 0
            ) < self._epoch_of(now)
            if status != contracts.STATUS_START_FAILED and not lease_over:
                return Claim(False, status, item[ATTR.start_attempts])
        item = item or {
            ATTR.run_key: run_key,
            ATTR.created_at: now,
            ATTR.start_attempts: 0,
            ATTR.timeline: [],
        }
        item.update(
            {
                ATTR.status: contracts.STATUS_ACCEPTED,
                ATTR.dataset: dataset.as_item(),
                ATTR.updated_at: now,
                ATTR.claim_expires_at: lease_until,
                ATTR.start_attempts: item[ATTR.start_attempts] + 1,
            }
        )
        item.pop(ATTR.reason, None)
        self._append(item, now, contracts.STATUS_ACCEPTED, dataset.uri)
        self.items[run_key] = item
        return Claim(True, contracts.STATUS_ACCEPTED, item[ATTR.start_attempts])

    def _move(self, run_key: str, status: str, now: str, detail: str, **fields: Any) -> bool:
        item = self.items[run_key]
        if item[ATTR.status] != contracts.STATUS_ACCEPTED:
            return False
        item.update({ATTR.status: status, ATTR.updated_at: now, **fields})
        item.pop(ATTR.claim_expires_at, None)
        self._append(item, now, status, detail)
        return True

    @staticmethod
    def _append(item: dict[str, Any], now: str, event: str, detail: str) -> None:
        item[ATTR.timeline].append({"at": now, "event": event, "detail": detail[:500]})
        del item[ATTR.timeline][:-TIMELINE_MAX_ENTRIES]

    def mark_rejected(self, run_key: str, reason: str, now: str) -> None:
        self._move(run_key, contracts.STATUS_REJECTED, now, reason, **{ATTR.reason: reason})

    def mark_start_failed(self, run_key: str, reason: str, now: str) -> None:
        self._move(run_key, contracts.STATUS_START_FAILED, now, reason, **{ATTR.reason: reason})

    def mark_run_started(
        self, run_key: str, run: KfpRun, run_url: str, now: str, detail: str
    ) -> bool:
        ids = {
            ATTR.kfp_run_id: run.run_id,
            ATTR.kfp_run_url: run_url,
            ATTR.experiment_id: run.experiment_id,
        }
        moved = self._move(run_key, contracts.STATUS_RUN_STARTED, now, detail, **ids)
        if not moved:
            self.items[run_key].update(ids)  # progress got there first: still save the ids
        return moved


@dataclass
class Published:
    kind: str
    run_key: str
    subject: str
    message: str


class RecordingNotifier(Notifier):
    """Records every publish; `fail_next` publishes raise instead (then it works again)."""

    def __init__(self, fail_next: int = 0) -> None:
        self.published: list[Published] = []
        self.fail_next = fail_next

    def publish(self, kind: str, run_key: str, subject: str, message: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise ConnectionError("SNS Publish: connection reset (injected by the test)")
        self.published.append(Published(kind, run_key, subject, message))

    def kinds(self) -> list[str]:
        return [p.kind for p in self.published]


@dataclass
class ScriptedKfp(KfpRunsApi):
    """KFP in memory; `failures` is consumed call by call: (call name, KfpCallFailed)."""

    experiments: dict[str, KfpExperiment] = field(default_factory=dict)
    runs: list[KfpRun] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    failures: list[tuple[str, KfpCallFailed]] = field(default_factory=list)
    lose_create_response: int = 0
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.failures and self.failures[0][0] in (call, "*"):
            raise self.failures.pop(0)[1]

    def find_experiments(self, display_name: str) -> list[KfpExperiment]:
        self._maybe_fail("find_experiments")
        return [e for e in self.experiments.values() if e.display_name == display_name]

    def create_experiment(self, display_name: str, description: str) -> KfpExperiment:
        self._maybe_fail("create_experiment")
        experiment = KfpExperiment(f"exp-{next(self._ids)}", display_name)
        self.experiments[experiment.experiment_id] = experiment
        return experiment

    def find_runs(self, experiment_id: str, display_name: str) -> list[KfpRun]:
        self._maybe_fail("find_runs")
        return [
            r
            for r in self.runs
            if r.experiment_id == experiment_id and r.display_name == display_name
        ]

    def create_run(
        self,
        experiment_id: str,
        display_name: str,
        description: str,
        pipeline_spec: dict[str, Any],
        parameters: dict[str, Any],
        service_account: str = "",
    ) -> KfpRun:
        self._maybe_fail("create_run")
        run = KfpRun(f"run-{next(self._ids)}", display_name, experiment_id, f"t{len(self.runs)}")
        self.runs.append(run)
        self.created.append(
            {
                "experiment_id": experiment_id,
                "display_name": display_name,
                "pipeline_spec": pipeline_spec,
                "parameters": parameters,
                "service_account": service_account,
            }
        )
        if self.lose_create_response:
            self.lose_create_response -= 1
            raise KfpCallFailed(
                KfpCallFailed.TRANSIENT, "POST /apis/v2beta1/runs: connection reset"
            )
        return run


class FakeClock:
    """time.time and time.sleep that never wait: sleeping moves the clock."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class InMemoryRunProgress(RunProgress):
    """Same write rules as the DynamoDB adapter, in a dict; `writes` counts calls."""

    def __init__(self, items: dict[str, dict[str, Any]] | None = None) -> None:
        self.items: dict[str, dict[str, Any]] = items if items is not None else {}
        self.writes: list[str] = []

    def record(self, run_key: str) -> RunRecord | None:
        item = self.items.get(run_key)
        return RunRecord.from_item(copy.deepcopy(item)) if item else None

    def record_progress(
        self, run_key: str, attribute: str, entry: dict[str, Any], outcome: str
    ) -> ProgressWrite:
        self.writes.append("record_progress")
        old = copy.deepcopy(self.items.get(run_key))
        record = RunRecord.from_item(old) if old else None
        stored = (old or {}).get(attribute)
        if stored is not None and not stored["ord"] < entry["ord"]:
            return ProgressWrite(applied=False, old=record)
        item = self.items.setdefault(run_key, {ATTR.run_key: run_key})
        item[attribute] = copy.deepcopy(entry)
        if outcome:
            item.setdefault(ATTR.outcome, outcome)
        return ProgressWrite(applied=True, old=record)

    def claim_outcome(self, run_key: str, outcome: str) -> bool:
        self.writes.append("claim_outcome")
        item = self.items.get(run_key)
        if item is None or ATTR.outcome in item:
            return False
        item[ATTR.outcome] = outcome
        return True

    def release_outcome(self, run_key: str, outcome: str) -> None:
        self.writes.append("release_outcome")
        item = self.items.get(run_key) or {}
        if item.get(ATTR.outcome) == outcome:
            del item[ATTR.outcome]
