"""`status`: the runs table for people, newest run first, or one run's whole timeline."""

from __future__ import annotations

from core.contracts import (
    PROGRESS_STEPS,
    STATUS_QUEUED,
    STEP_PREPROCESS,
    STEP_TRAINING,
    STEP_TRANSFORM,
    STEPS,
)
from core.run_record import RunRecord, queue_positions
from lambdas.dal.runs_table import RunsTableReader
from lambdas.logic import costs
from lambdas.logic.notifications import settings_line

_SHORT_STEPS = {STEP_PREPROCESS: "prep", STEP_TRAINING: "train", STEP_TRANSFORM: "xform"}


class UnknownRun(LookupError):
    pass


def read_run(reader: RunsTableReader, run_key: str) -> RunRecord:
    record = reader.get(run_key)
    if record is None:
        raise UnknownRun(f"no run {run_key!r} in table {reader.table_name}")
    return record


def _dataset(record: RunRecord) -> str:
    return record.dataset.uri if record.dataset else "(no dataset: orphan)"


def describe_runs(records: list[RunRecord]) -> str:
    if not records:
        return "no runs yet"
    lines = []
    places = queue_positions(records)
    for record in records:
        steps = record.steps()
        cells = [
            f"{_SHORT_STEPS.get(step, step)}={steps[step][0].lower()}"
            for step in STEPS
            if step in steps
        ]
        accuracy = "" if record.accuracy is None else f"acc={record.accuracy:.3f} "
        status = record.overall_status
        if record.run_key in places:
            status = f"{STATUS_QUEUED} #{places[record.run_key]}"
        lines.append(
            f"{record.run_key}  {status:<14} {record.created_at:<24}"
            f" {_dataset(record)}  {accuracy}{' '.join(cells)}".rstrip()
        )
    return "\n".join(lines)


def describe_run(
    record: RunRecord,
    prices: costs.PriceLookup | None = None,
    region: str = "",
    billed: bool = True,
    place: int | None = None,
) -> str:
    """One run; its cost priced by `prices` in `region` (None: price unknown), or, on the
    local stack (`billed` False), its billable seconds with "nothing is billed". `place`: the
    run's place in line when it is QUEUED (queue_positions)."""
    lines = [f"Run {record.run_key}: {record.overall_status}", f"  dataset   {_dataset(record)}"]
    if record.status == STATUS_QUEUED:
        where = f"#{place} in line" if place else "in line"
        lines.append(
            f"  queued    {where}: every run slot (max_concurrent_runs) is held; it starts"
            " when a run ends, oldest upload first"
        )
    if record.kfp_run_id:
        link = record.kfp_run_url or "(no KFP UI address configured)"
        lines.append(f"  KFP run   {record.kfp_run_id}  {link}")
    if record.reason:
        lines.append(f"  reason    {record.reason}")
    if record.run_settings:
        lines.append(f"  settings  {settings_line(record.run_settings, record.overridden)}")
    if record.accuracy is not None:
        gate = record.evaluation.get("min_accuracy")
        weakest = ", ".join(f"{d} ({r:.0%})" for d, r in record.weakest_digits())
        lines.append(
            f"  accuracy  {record.accuracy:.4f} on the test split"
            + (f" (gate {gate:.2f})" if isinstance(gate, int | float) else "")
            + (f"; weakest digits {weakest}" if weakest else "")
        )
        champion = record.evaluation.get("champion_accuracy")
        if isinstance(champion, int | float):
            tolerance = record.evaluation.get("deploy_tolerance", 0.0)
            lines.append(
                f"  serving   {champion:.4f}: the model the endpoint served, on the same test"
                f" split (deploys at {champion - tolerance:.4f} or more)"
            )
    cost = costs.run_cost(
        record,
        region,
        prices if billed and prices is not None else (lambda *_: None),
        costs.serving_of(record) if record.endpoint_names() else None,
    )
    if cost.steps or cost.serving:
        lines.append("  cost")
        lines.extend(f"  {line}" for line in costs.cost_lines(cost, billed=billed))
    steps = record.steps()
    if steps:
        lines.append("  steps")
        for step in STEPS:
            if step in steps:
                status, at = steps[step]
                lines.append(f"    {step:<11} {status:<12} {at}")
    # Causal order: SageMaker's event times have whole seconds, so within one second start-run's
    # entries come first, then the steps in pipeline order, each step's statuses by rank
    # (IN_PROGRESS before COMPLETED); the full time last.
    events = [
        ((entry.at[:19], 0, 0, 0, entry.at), f"{entry.event}: {entry.detail}".rstrip(": "))
        for entry in record.timeline
    ]
    for progress in record.progress:
        entry = progress.entry
        what = f"{progress.step} {progress.status}"
        if entry.job_name:
            what += f" ({entry.job_name})"
        if entry.failure_reason or entry.error:
            what += f": {entry.failure_reason or entry.error}"
        step = PROGRESS_STEPS.index(progress.step) if progress.step in PROGRESS_STEPS else 99
        events.append(((entry.at[:19], 1, step, progress.rank, entry.at), what))
    if events:
        lines.append("  timeline")
        lines.extend(f"    {key[-1]:<24} {what}" for key, what in sorted(events))
    return "\n".join(lines)
