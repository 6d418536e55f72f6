"""The run record's progress part, and the views derived from it (pure functions).

Progress tracking keeps, per (step, normalized status), the newest event that reported it in one
top-level attribute `progress:<step>:<status>`; "newest" is by `ord` (event time, then event
id), a total order, so the record is the same whatever order the events came in. Everything
else here is read from those attributes: per-step status, overall status, timeline.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runflow import contracts

# The normalized statuses a step can be in, and their rank: a step shows its highest-ranked
# status, so a late or repeated event never moves it backwards. Terminal failures outrank
# success: if a job ever reported FAILED, the step says so.
IN_PROGRESS = "IN_PROGRESS"
STOPPING = "STOPPING"
OUT_OF_SERVICE = "OUT_OF_SERVICE"
COMPLETED = "COMPLETED"
IN_SERVICE = "IN_SERVICE"
SUCCEEDED = "SUCCEEDED"
DELETING = "DELETING"
STOPPED = "STOPPED"
CANCELED = "CANCELED"
FAILED = "FAILED"
STATUS_RANK = {
    IN_PROGRESS: 1,
    STOPPING: 2,
    OUT_OF_SERVICE: 2,
    COMPLETED: 3,
    IN_SERVICE: 3,
    SUCCEEDED: 3,
    DELETING: 4,
    STOPPED: 5,
    CANCELED: 5,
    FAILED: 5,
}
# The bound on the record's progress: one attribute per (step, status) at most.
PROGRESS_MAX_ATTRIBUTES = len(contracts.PROGRESS_STEPS) * len(STATUS_RANK)


def progress_attribute(step: str, status: str) -> str:
    return f"{contracts.PROGRESS_ATTRIBUTE_PREFIX}{step}:{status}"


def is_run_record(item: Mapping[str, Any] | None) -> bool:
    """True for a record start-run made (it has the dataset); False for none or an orphan."""
    return item is not None and "dataset" in item


def progress_entries(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every progress entry of the record, each with its step and normalized status."""
    entries = []
    for name, value in item.items():
        if not name.startswith(contracts.PROGRESS_ATTRIBUTE_PREFIX) or not isinstance(value, dict):
            continue
        step, _, status = name[len(contracts.PROGRESS_ATTRIBUTE_PREFIX) :].partition(":")
        entries.append({**value, "step": step, "status": status})
    return entries


def step_statuses(item: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """{step: (status, time of its event)}: per step the highest-ranked status (ties by ord)."""
    best: dict[str, dict[str, Any]] = {}
    for entry in progress_entries(item):
        current = best.get(entry["step"])
        if current is None or _precedence(entry) > _precedence(current):
            best[entry["step"]] = entry
    return {step: (entry["status"], str(entry.get("at", ""))) for step, entry in best.items()}


def overall_status(item: Mapping[str, Any]) -> str:
    """The announced outcome; else RUNNING once any progress exists; else start-run's status."""
    outcome = item.get(contracts.OUTCOME_ATTRIBUTE)
    if outcome:
        return str(outcome)
    if progress_entries(item):
        return contracts.STATUS_RUNNING
    return str(item.get("status", ""))


def timeline(item: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The progress entries in the order their events happened."""
    return sorted(progress_entries(item), key=lambda e: str(e.get("ord", "")))


def _precedence(entry: Mapping[str, Any]) -> tuple[int, str]:
    return STATUS_RANK.get(entry["status"], 0), str(entry.get("ord", ""))
