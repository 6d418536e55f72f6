"""`mnistflow cleanup` and `mnistflow rollback`: the product's SageMaker resources, by their
run-key tag, from the user's side (the decisions are pipeline/steps/retire.py's).

cleanup: what goes (superseded configs beyond the kept N, per-run endpoints past their time to
live, what runs that are over left behind) and what stays, with why; never a resource without
the product's tag, never anything of a run still in flight (by the runs table).

rollback: the stable endpoint back onto the kept config that served last before the one it
serves (by the deploy step's served-at tag; never a config that never served or was rolled back).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core import contracts
from core.run_record import RunRecord
from pipeline.steps import endpoint_mode, retire
from pipeline.steps.sagemaker_jobs import describe_or_none

# Statuses of a record without an outcome that are over (start-run never started a run).
_NEVER_STARTED = frozenset({contracts.STATUS_REJECTED, contracts.STATUS_START_FAILED})


class CleanupError(Exception):
    """A refusal the user can act on: one line."""


def runs_in_flight(records: Iterable[RunRecord]) -> set[str]:
    """Run keys whose run may still create or deploy something: no outcome yet, and started."""
    return {r.run_key for r in records if not r.outcome and r.status not in _NEVER_STARTED}


def cleanup(
    sm,
    s3,
    *,
    bucket: str,
    endpoint_name: str,
    keep: int,
    ttl_hours: float,
    in_flight: Iterable[str],
    dry_run: bool,
) -> list[retire.Outcome]:
    inv = retire.read_inventory(sm, s3, bucket)
    decisions = retire.plan_cleanup(
        inv,
        endpoint_name=endpoint_name,
        keep=keep,
        ttl_seconds=ttl_hours * 3600,
        now=retire.now(),
        runs_in_flight=in_flight,
    )
    return retire.carry_out(sm, decisions, s3=s3, bucket=bucket, dry_run=dry_run)


def describe_cleanup(outcomes: list[retire.Outcome], dry_run: bool) -> str:
    if not outcomes:
        return "No SageMaker resources of the product (none carries the mnistflow:run-key tag)."
    going = sum(o.result in (retire.DELETED, retire.WOULD_DELETE) for o in outcomes)
    refused = sum(o.result == retire.REFUSED for o in outcomes)
    verb = "would delete" if dry_run else "deleted"
    lines = [o.line() for o in outcomes]
    summary = f"{verb} {going}, kept {sum(o.result == retire.KEPT for o in outcomes)}"
    if refused:
        summary += f", refused by SageMaker {refused}"
    if dry_run:
        summary += " (dry run: nothing was deleted)"
    return "\n".join([*lines, summary])


@dataclass(frozen=True)
class Rollback:
    endpoint: str
    from_config: str
    to_config: str
    run_key: str  # the run whose model the endpoint moves to


def rollback(sm, *, endpoint_name: str) -> Rollback:
    """Points the stable endpoint at the config that served before the one it serves; refuses
    while it is changing or when no such config of the product is kept."""
    if not endpoint_name:
        raise CleanupError("no stable endpoint named: pass --endpoint (the endpoint_name setting)")
    endpoint = describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
    if endpoint is None:
        raise CleanupError(f"endpoint {endpoint_name} does not exist")
    if endpoint["EndpointStatus"] != "InService":
        raise CleanupError(
            f"endpoint {endpoint_name} is {endpoint['EndpointStatus']}: roll back once it is"
            " InService"
        )
    inv = retire.read_inventory(sm)
    current = inv.configs.get(endpoint["EndpointConfigName"])
    if current is None:
        raise CleanupError(
            f"endpoint {endpoint_name} serves {endpoint['EndpointConfigName']}, which is not the"
            " product's (no mnistflow:run-key tag): nothing to roll back to"
        )
    in_use = inv.configs_in_use()
    # By when they served (the deploy step's served-at tag), not when they were created: a
    # config made by a run still waiting its turn, or rolled back, never served.
    older = [
        c
        for c in inv.configs.values()
        if c.served_at
        and (not current.served_at or c.served_at < current.served_at)
        and not c.rolled_back
        and c.name not in in_use
        and all(m in inv.models for m in c.uses)  # its model still there to serve
    ]
    if not older:
        raise CleanupError(
            f"no earlier endpoint config is kept for {endpoint_name} (it serves {current.name};"
            " one that served before it, not rolled back; kept_endpoint_configs sets how many"
            " are kept)"
        )
    target = max(older, key=lambda c: c.served_at)
    change = endpoint_mode.mode_change(
        sm.describe_endpoint_config(EndpointConfigName=current.name),
        endpoint_mode.mode_of(sm.describe_endpoint_config(EndpointConfigName=target.name)),
    )
    if not change.in_place:
        raise CleanupError(
            f"endpoint {endpoint_name} serves {current.name} on instances and the previous kept"
            f" config {target.name} is serverless: SageMaker cannot update an instance endpoint"
            " to serverless in place, so rollback does not; a run deployed with endpoint_type"
            " serverless re-creates the endpoint (docs/deploy.md, Costs)"
        )
    sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=target.name)
    sm.add_tags(
        ResourceArn=endpoint["EndpointArn"],
        Tags=[{"Key": contracts.RUN_KEY_TAG, "Value": target.run_key}],
    )
    return Rollback(endpoint_name, current.name, target.name, target.run_key)
