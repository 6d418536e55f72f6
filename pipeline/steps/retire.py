"""The product's SageMaker resources, and retiring them: what exists, what is in use, what may go.

Only resources that carry the run-key tag (core.contracts.RUN_KEY_TAG) are the product's: a
resource without it is never touched, whatever its name. The pipeline's steps (after a deploy,
in the exit handler), the watchdog (per-run endpoints past their time to live) and
`mnistflow cleanup` / `mnistflow rollback` all decide and delete through this module.

"In use" is decided here, not by SageMaker: SageMaker deletes an endpoint config or a model
even while an endpoint runs on it (API reference, DeleteEndpointConfig: "You must not delete an
EndpointConfig in use by an endpoint that is live or while the UpdateEndpoint or CreateEndpoint
operations are being performed on the endpoint"; DeleteEndpointConfig and DeleteModel list no
error of their own in botocore's sagemaker model). So:

- an endpoint config is in use when an endpoint serves it or is moving to it
  (DescribeEndpoint's EndpointConfigName and PendingDeploymentSummary.EndpointConfigName);
- a model is in use when a config that stays names it;
- an endpoint is in use while it is Creating, Updating, SystemUpdating, RollingBack or
  Deleting (a change SageMaker is making), and the stable endpoint always is;
- a promoted artifact (models/<run key>/...) is in use while a model that stays points at it.

Deleting: SageMaker's "Could not find ..." (ValidationException) means already gone, which is
fine; any other refusal skips the resource with SageMaker's own words. Throttling is left to
botocore's standard retries on the client the caller passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from botocore.exceptions import ClientError

from core import kfp
from core.contracts import (
    ENDPOINT_CONFIG_SUFFIX,
    ENDPOINT_SUFFIX,
    MODEL_SUFFIX,
    ROLLED_BACK_TAG,
    RUN_KEY_TAG,
    SAGEMAKER_NAME_PREFIX,
    SERVED_AT_TAG,
    SERVING_MODELS_PREFIX,
    resource_name,
)
from pipeline.steps.sagemaker_jobs import describe_or_none, is_not_found

ENDPOINT, CONFIG, MODEL, ARTIFACT = "endpoint", "endpoint-config", "model", "artifact"
ORDER = (ENDPOINT, CONFIG, MODEL, ARTIFACT)  # what is deleted first: users before the used
# EndpointStatus values (botocore's sagemaker model, shape EndpointStatus) in which SageMaker is
# changing the endpoint: it is left alone until the change is over.
CHANGING_STATUSES = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"})
# ListEndpoints/ListEndpointConfigs/ListModels take at most 100 a page (botocore's model).
LIST_PAGE_SIZE = 100

DELETE, KEEP = "delete", "keep"
# plan_superseded's reason for a config that never served (no SERVED_AT_TAG).
NOT_SERVED = "never served: its run is in flight, or its exit handler or cleanup retires it"
DELETED, GONE, WOULD_DELETE, KEPT, REFUSED = (
    "deleted",
    "already gone",
    "would delete",
    "kept",
    "refused",
)


@dataclass(frozen=True)
class Resource:
    kind: str  # ENDPOINT, CONFIG, MODEL or ARTIFACT
    name: str  # SageMaker's name; an artifact's S3 key
    run_key: str  # the value of the run-key tag
    created: datetime
    arn: str = ""
    status: str = ""  # an endpoint's EndpointStatus
    uses: tuple[str, ...] = ()  # endpoint: its configs; config: its models; model: its artifact
    served_at: str = ""  # a config's SERVED_AT_TAG (ISO 8601 UTC): when it began to serve
    rolled_back: bool = False  # a config tagged ROLLED_BACK_TAG: never a rollback target


@dataclass(frozen=True)
class Decision:
    resource: Resource
    action: str  # DELETE or KEEP
    reason: str


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    result: str  # DELETED, GONE, WOULD_DELETE, KEPT or REFUSED
    detail: str = ""

    def line(self) -> str:
        r = self.decision.resource
        why = self.detail or self.decision.reason
        return f"{self.result:<13} {r.kind:<16} {r.name}  ({r.run_key}: {why})"


@dataclass
class Inventory:
    """The product's resources by kind and name, and the mnist- names that are not the product's."""

    endpoints: dict[str, Resource] = field(default_factory=dict)
    configs: dict[str, Resource] = field(default_factory=dict)
    models: dict[str, Resource] = field(default_factory=dict)
    artifacts: dict[str, Resource] = field(default_factory=dict)
    not_ours: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) without the tag
    bucket: str = ""

    def configs_in_use(self) -> dict[str, str]:
        """Config name -> the endpoint that serves it or is moving to it."""
        return {config: e.name for e in self.endpoints.values() for config in e.uses}


# -- reading -----------------------------------------------------------------------------------


def _tags(sm, arn: str) -> dict[str, str]:
    """A resource's tags; none when the resource is gone meanwhile."""
    try:
        tags = sm.list_tags(ResourceArn=arn)["Tags"]
    except ClientError as error:
        if is_not_found(error):
            return {}
        raise
    return {t["Key"]: t.get("Value", "") for t in tags}


def _tag_value(sm, arn: str) -> str | None:
    """The run-key tag of a resource; None without it, or when the resource is gone meanwhile."""
    return _tags(sm, arn).get(RUN_KEY_TAG)


def _listed(sm, operation: str, key: str) -> Iterable[dict]:
    for page in sm.get_paginator(operation).paginate(
        NameContains=SAGEMAKER_NAME_PREFIX, PaginationConfig={"PageSize": LIST_PAGE_SIZE}
    ):
        yield from page[key]


def read_inventory(sm, s3=None, bucket: str = "") -> Inventory:
    """Every endpoint, endpoint config and model whose name holds `mnist-` and that carries the
    run-key tag, and (with `s3` and `bucket`) the promoted artifacts under models/ with it."""
    inv = Inventory(bucket=bucket)
    for row in _listed(sm, "list_endpoints", "Endpoints"):
        name, arn = row["EndpointName"], row["EndpointArn"]
        key = _tag_value(sm, arn)
        described = describe_or_none(sm.describe_endpoint, EndpointName=name) if key else None
        if key is None or described is None:
            if key is None:
                inv.not_ours.append((ENDPOINT, name))
            continue
        pending = described.get("PendingDeploymentSummary", {}).get("EndpointConfigName")
        uses = tuple(c for c in (described.get("EndpointConfigName"), pending) if c)
        inv.endpoints[name] = Resource(
            ENDPOINT, name, key, row["CreationTime"], arn, described["EndpointStatus"], uses
        )
    for row in _listed(sm, "list_endpoint_configs", "EndpointConfigs"):
        name, arn = row["EndpointConfigName"], row["EndpointConfigArn"]
        tags = _tags(sm, arn)
        key = tags.get(RUN_KEY_TAG)
        described = (
            describe_or_none(sm.describe_endpoint_config, EndpointConfigName=name) if key else None
        )
        if key is None or described is None:
            if key is None:
                inv.not_ours.append((CONFIG, name))
            continue
        models = tuple(v["ModelName"] for v in described.get("ProductionVariants", []))
        inv.configs[name] = Resource(
            CONFIG,
            name,
            key,
            row["CreationTime"],
            arn,
            uses=models,
            served_at=tags.get(SERVED_AT_TAG, ""),
            rolled_back=ROLLED_BACK_TAG in tags,
        )
    for row in _listed(sm, "list_models", "Models"):
        name, arn = row["ModelName"], row["ModelArn"]
        key = _tag_value(sm, arn)
        described = describe_or_none(sm.describe_model, ModelName=name) if key else None
        if key is None or described is None:
            if key is None:
                inv.not_ours.append((MODEL, name))
            continue
        url = described.get("PrimaryContainer", {}).get("ModelDataUrl", "")
        inv.models[name] = Resource(
            MODEL, name, key, row["CreationTime"], arn, uses=(url,) if url else ()
        )
    if s3 is not None and bucket:
        _read_artifacts(s3, bucket, inv)
    return inv


def _read_artifacts(s3, bucket: str, inv: Inventory) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=SERVING_MODELS_PREFIX
    ):
        for obj in page.get("Contents", []):
            try:
                tags = s3.get_object_tagging(Bucket=bucket, Key=obj["Key"])["TagSet"]
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    continue
                raise
            key = next((t["Value"] for t in tags if t["Key"] == RUN_KEY_TAG), None)
            if key is None:
                inv.not_ours.append((ARTIFACT, obj["Key"]))
                continue
            inv.artifacts[obj["Key"]] = Resource(
                ARTIFACT, obj["Key"], key, obj["LastModified"], f"s3://{bucket}/{obj['Key']}"
            )


# -- deciding ----------------------------------------------------------------------------------


def _keep(resource: Resource, reason: str) -> Decision:
    return Decision(resource, KEEP, reason)


def _delete(resource: Resource, reason: str) -> Decision:
    return Decision(resource, DELETE, reason)


def _endpoint_busy(endpoint: Resource) -> str:
    return (
        f"endpoint is {endpoint.status}: SageMaker is changing it"
        if endpoint.status in CHANGING_STATUSES
        else ""
    )


def _dependents(
    inv: Inventory, deleted_configs: set[str], models: Iterable[Resource], reason: str
) -> list[Decision]:
    """For `models` (once used by the deleted configs): delete those no staying config names,
    and the promoted artifacts of their runs that no staying model points at."""
    named = {
        m: c.name for c in inv.configs.values() if c.name not in deleted_configs for m in c.uses
    }
    out: list[Decision] = []
    for model in {m.name: m for m in models}.values():
        if model.name in named:
            out.append(_keep(model, f"named by endpoint config {named[model.name]}"))
        else:
            out.append(_delete(model, reason))
    gone = {d.resource.name for d in out if d.action == DELETE}
    retired_runs = {d.resource.run_key for d in out if d.action == DELETE}
    return out + _artifacts(inv, retired_runs, deleted_configs | gone, reason)


def _artifacts(inv: Inventory, runs: set[str], deleted: set[str], reason: str) -> list[Decision]:
    """The promoted artifacts of `runs`: each stays while a model points at it, or while its
    run still has a config or model (`deleted` names those that go)."""
    out = []
    staying = [r for r in (*inv.configs.values(), *inv.models.values()) if r.name not in deleted]
    pointed = {url: m.name for m in inv.models.values() if m.name not in deleted for url in m.uses}
    owners = {r.run_key: r.name for r in staying}
    for artifact in inv.artifacts.values():
        if artifact.run_key not in runs:
            continue
        if artifact.arn in pointed:
            out.append(_keep(artifact, f"model {pointed[artifact.arn]} points at it"))
        elif artifact.run_key in owners:
            out.append(_keep(artifact, f"its run's {owners[artifact.run_key]} stays"))
        else:
            out.append(_delete(artifact, reason))
    return out


def plan_superseded(inv: Inventory, *, endpoint_name: str, keep: int) -> list[Decision]:
    """After a successful update of the stable endpoint: the configs that served on it before
    (tagged SERVED_AT_TAG), but the `keep` - 1 that served last (with the serving one, `keep`
    for rollback; a rolled-back config is never one of them), with their models and promoted
    artifacts. The order is the order they served in, not the order they were created in: a
    deploy creates its config and then waits its turn. A config that never served is left
    alone: its run is in flight, or its run's exit handler (or `mnistflow cleanup`, by the runs
    table) retires it. So is everything while the endpoint is changing."""
    endpoint = inv.endpoints.get(endpoint_name)
    if endpoint is None:
        return []
    if busy := _endpoint_busy(endpoint):
        return [_keep(endpoint, f"{busy}; retired after its next update")]
    in_use = inv.configs_in_use()
    serving = inv.configs.get(endpoint.uses[0]) if endpoint.uses else None
    if serving is None:
        return []
    decided: dict[str, Decision] = {}
    served = sorted(
        (c for c in inv.configs.values() if c.served_at and c.name not in in_use),
        key=lambda c: c.served_at,
        reverse=True,
    )
    for config in inv.configs.values():
        if config.name in in_use:
            decided[config.name] = _keep(config, f"in use by endpoint {in_use[config.name]}")
        elif not config.served_at:
            decided[config.name] = _keep(config, NOT_SERVED)
    rank = 1  # the serving config is the first kept
    for config in served:
        if config.rolled_back:
            decided[config.name] = _delete(config, f"rolled back on {endpoint_name}")
            continue
        rank += 1
        if rank <= keep:
            decided[config.name] = _keep(config, f"kept for rollback ({rank} of {keep})")
        else:
            decided[config.name] = _delete(config, f"superseded on {endpoint_name}")
    deleted = {name for name, d in decided.items() if d.action == DELETE}
    models = [
        inv.models[m]
        for name in deleted
        for m in inv.configs[name].uses
        if m in inv.models and inv.models[m].run_key == inv.configs[name].run_key
    ]
    reason = f"its endpoint config was superseded on {endpoint_name}"
    return list(decided.values()) + _dependents(inv, deleted, models, reason)


def plan_run(inv: Inventory, *, run_key: str, endpoint_name: str) -> list[Decision]:
    """What a failed or rejected run created: its per-run endpoint, its config and model, its
    promoted artifact; never the stable endpoint, never what another run serves."""
    out: list[Decision] = []
    own_endpoint = resource_name(run_key, ENDPOINT_SUFFIX)
    freed: set[str] = set()
    for endpoint in inv.endpoints.values():
        if endpoint.run_key != run_key:
            continue
        if endpoint.name != own_endpoint or endpoint.name == endpoint_name:
            out.append(_keep(endpoint, "the stable endpoint: never deleted for a run"))
        elif busy := _endpoint_busy(endpoint):
            out.append(_keep(endpoint, busy))
        else:
            out.append(_delete(endpoint, "its run failed"))
            freed.update(endpoint.uses)
    in_use = {c: e for c, e in inv.configs_in_use().items() if c not in freed}
    config = inv.configs.get(resource_name(run_key, ENDPOINT_CONFIG_SUFFIX))
    deleted: set[str] = set()
    if config is not None and config.run_key == run_key:
        if config.name in in_use:
            out.append(_keep(config, f"in use by endpoint {in_use[config.name]}"))
        else:
            out.append(_delete(config, "its run failed"))
            deleted.add(config.name)
    model = inv.models.get(resource_name(run_key, MODEL_SUFFIX))
    models = [model] if model is not None and model.run_key == run_key else []
    decided = _dependents(inv, deleted, models, "its run failed")
    if not models:  # the model is gone already: its promoted artifact may still be there
        decided += _artifacts(inv, {run_key}, deleted, "its run failed")
    return out + decided


def plan_expired(
    inv: Inventory, *, ttl_seconds: float, now: datetime, stable_endpoint: str = ""
) -> list[Decision]:
    """Per-run endpoints (`<run key>-endpoint`) older than their time to live, with their
    configs, models and artifacts."""
    out: list[Decision] = []
    for endpoint in inv.endpoints.values():
        if endpoint.name != resource_name(endpoint.run_key, ENDPOINT_SUFFIX):
            continue  # not a per-run endpoint
        if endpoint.name == stable_endpoint:
            continue
        age = (now - endpoint.created).total_seconds()
        if age < ttl_seconds:
            out.append(_keep(endpoint, f"{age / 3600:.1f} h old, lives {ttl_seconds / 3600:g} h"))
        elif busy := _endpoint_busy(endpoint):
            out.append(_keep(endpoint, busy))
        else:
            out.append(_delete(endpoint, f"past its time to live of {ttl_seconds / 3600:g} h"))
            rest = replace(
                inv, endpoints={n: e for n, e in inv.endpoints.items() if n != endpoint.name}
            )
            out += [
                replace(d, reason="its per-run endpoint's time to live ended")
                if d.action == DELETE
                else d
                for d in plan_run(rest, run_key=endpoint.run_key, endpoint_name=stable_endpoint)
            ]
    return out


def plan_cleanup(
    inv: Inventory,
    *,
    endpoint_name: str,
    keep: int,
    ttl_seconds: float,
    now: datetime,
    runs_in_flight: Iterable[str] = (),
) -> list[Decision]:
    """`mnistflow cleanup`: superseded configs beyond the kept N, per-run endpoints past their
    time to live, and what runs that are over left behind (a config no endpoint uses, a model
    no staying config names, an artifact of neither). Runs in flight (by the runs table) keep
    everything; so does every run while the stable endpoint is changing."""
    flying = set(runs_in_flight)
    decisions: dict[tuple[str, str], Decision] = {}
    for d in plan_superseded(inv, endpoint_name=endpoint_name, keep=keep):
        decisions[(d.resource.kind, d.resource.name)] = d
    for d in plan_expired(inv, ttl_seconds=ttl_seconds, now=now, stable_endpoint=endpoint_name):
        if d.action == DELETE or (d.resource.kind, d.resource.name) not in decisions:
            decisions[(d.resource.kind, d.resource.name)] = d
    stable = inv.endpoints.get(endpoint_name)
    if stable is not None:
        decisions.setdefault((ENDPOINT, stable.name), _keep(stable, "the stable endpoint"))
    for endpoint in inv.endpoints.values():
        decisions.setdefault((ENDPOINT, endpoint.name), _keep(endpoint, "a per-run endpoint"))
    changing = _endpoint_busy(stable) if stable is not None else ""

    def held(resource: Resource) -> str:
        if resource.run_key in flying:
            return "its run is in flight"
        return f"endpoint {endpoint_name}: {changing}" if changing else ""

    in_use = inv.configs_in_use()
    for endpoint in inv.endpoints.values():  # what endpoints being deleted used is free
        if decisions[(ENDPOINT, endpoint.name)].action == DELETE:
            in_use = {c: e for c, e in in_use.items() if e != endpoint.name}
    for config in inv.configs.values():
        current = decisions.get((CONFIG, config.name))
        over = current is None or current.reason == NOT_SERVED
        if config.name in in_use:
            decisions[(CONFIG, config.name)] = _keep(
                config, f"in use by endpoint {in_use[config.name]}"
            )
        elif over and (why := held(config)):
            decisions[(CONFIG, config.name)] = _keep(config, why)
        elif over:
            decisions[(CONFIG, config.name)] = _delete(config, "left by a run that is over")
    deleted = {n for (k, n), d in decisions.items() if k == CONFIG and d.action == DELETE}
    named = {m: c.name for c in inv.configs.values() if c.name not in deleted for m in c.uses}
    for model in inv.models.values():
        if (MODEL, model.name) in decisions and decisions[(MODEL, model.name)].action == DELETE:
            continue
        if model.name in named:
            decisions[(MODEL, model.name)] = _keep(
                model, f"named by endpoint config {named[model.name]}"
            )
        elif why := held(model):
            decisions[(MODEL, model.name)] = _keep(model, why)
        else:
            decisions[(MODEL, model.name)] = _delete(model, "left by a run that is over")
    gone = deleted | {n for (k, n), d in decisions.items() if k == MODEL and d.action == DELETE}
    runs = {a.run_key for a in inv.artifacts.values() if not held(a)}
    for d in _artifacts(inv, runs, gone, "left by a run that is over"):
        decisions[(ARTIFACT, d.resource.name)] = d
    for artifact in inv.artifacts.values():
        decisions.setdefault((ARTIFACT, artifact.name), _keep(artifact, held(artifact)))
    for kind, name in inv.not_ours:
        decisions[(kind, name)] = _keep(
            Resource(kind, name, "-", now), f"no {RUN_KEY_TAG} tag: not the product's"
        )
    return sorted(decisions.values(), key=lambda d: (ORDER.index(d.resource.kind), d.resource.name))


# -- deleting ----------------------------------------------------------------------------------


def carry_out(
    sm, decisions: Iterable[Decision], *, s3=None, bucket: str = "", dry_run: bool = False
) -> list[Outcome]:
    """Deletes what the decisions say, users before what they use; SageMaker's not-found is
    fine (GONE), any other refusal is REFUSED with its words. A dry run deletes nothing."""
    outcomes = []
    for decision in sorted(decisions, key=lambda d: ORDER.index(d.resource.kind)):
        if decision.action == KEEP:
            outcomes.append(Outcome(decision, KEPT))
        elif dry_run:
            outcomes.append(Outcome(decision, WOULD_DELETE))
        else:
            outcomes.append(_delete_one(sm, s3, bucket, decision))
    return outcomes


def _delete_one(sm, s3, bucket: str, decision: Decision) -> Outcome:
    r = decision.resource
    try:
        if r.kind == ENDPOINT:
            sm.delete_endpoint(EndpointName=r.name)
        elif r.kind == CONFIG:
            sm.delete_endpoint_config(EndpointConfigName=r.name)
        elif r.kind == MODEL:
            sm.delete_model(ModelName=r.name)
        else:
            s3.delete_object(Bucket=bucket, Key=r.name)  # S3: deleting a missing key succeeds
    except ClientError as error:
        if is_not_found(error):
            return Outcome(decision, GONE)
        err = error.response.get("Error", {})
        return Outcome(decision, REFUSED, f"{err.get('Code', '')}: {err.get('Message', error)}")
    return Outcome(decision, DELETED)


def now() -> datetime:
    return datetime.now(UTC)


# -- the pipeline's calls ----------------------------------------------------------------------


def after_deploy(
    sm, s3, *, bucket: str, run_key: str, endpoint_name: str, keep: int
) -> list[Outcome]:
    """The step after deploy: on the stable endpoint, the superseded configs beyond the kept N,
    their models and artifacts. A per-run endpoint (`<run key>-endpoint`) supersedes nothing."""
    if endpoint_name == resource_name(run_key, ENDPOINT_SUFFIX):
        return []
    inv = read_inventory(sm, s3, bucket)
    decisions = plan_superseded(inv, endpoint_name=endpoint_name, keep=keep)
    return carry_out(sm, decisions, s3=s3, bucket=bucket)


def after_run(
    sm, s3, *, state: str, run_key: str, dataset_uri: str, endpoint_name: str
) -> list[Outcome]:
    """The exit handler: a run that did not succeed deletes what it created (its per-run
    endpoint, config, model, promoted artifact), never the stable endpoint `endpoint_name` nor
    what an endpoint serves. Its record, evaluation and registry entry are not SageMaker
    resources of this module and stay."""
    if kfp.final_state(state) == kfp.SUCCEEDED:
        return []
    bucket = dataset_uri.removeprefix("s3://").partition("/")[0]
    inv = read_inventory(sm, s3, bucket)
    decisions = plan_run(inv, run_key=run_key, endpoint_name=endpoint_name)
    outcomes = carry_out(sm, decisions, s3=s3, bucket=bucket)
    print("\n".join(o.line() for o in outcomes) or f"{run_key}: nothing to retire")
    return outcomes
