"""What a run cost, from its record's usage and on-demand prices; no boto3.

Usage comes from SageMaker's own figures, as the run record keeps them (one progress entry per
step): training's BillableTimeInSeconds x ResourceConfig.InstanceCount (botocore's
DescribeTrainingJob: "BillableTimeInSeconds * InstanceCount"), transform's
TransformEndTime - TransformStartTime x TransformResources.InstanceCount, and the endpoint's
instances (type x count, priced by the hour and for a month of `HOURS_PER_MONTH`).

Prices are on-demand USD per hour, read from the AWS Price List API's GetProducts answers
(`parse_hourly_usd`); a price that could not be had is None and shows as "price unknown": the
cost of a run is never a reason for the run to fail.

Managed spot training: botocore's DescribeTrainingJob gives the saving as
(1 - BillableTimeInSeconds / TrainingTimeInSeconds) * 100.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from core import contracts
from core import run_record as rr
from core.run_record import RunRecord
from core.serving import serving_instance_count

# The Price List's SageMaker products: productFamily "ML Instance", with the instance type in
# `instanceType` and the job kind in `platoinstancetype` (vantage-sh/ec2instances.info,
# sagemaker.py, reads the same attributes of the AmazonSageMaker offer file).
SERVICE_CODE = "AmazonSageMaker"
PRODUCT_FAMILY = "ML Instance"
COMPONENT_TRAINING = "Training"
COMPONENT_TRANSFORM = "BatchTransform"
COMPONENT_HOSTING = "Hosting"
HOURLY_UNIT = "Hrs"
# A month of an always-on instance: 24 x 365 / 12 hours, the figure AWS's pricing examples use.
HOURS_PER_MONTH = 730
SECONDS_PER_HOUR = 3600

PRICE_UNKNOWN = "price unknown"
# Serverless inference is billed per use (the developer guide, "Serverless Inference": "you only
# pay for what you use"), by memory size ("The memory size increments have different pricing").
# Its Price List products' attributes and units are not in the documented shape this module
# reads (ML Instance, by the hour), so no serverless price is asked: it says so.
SERVERLESS_PRICE = (
    f"{PRICE_UNKNOWN} (billed per use by memory size and compute time; no Price List figure"
    " read for it here: https://aws.amazon.com/sagemaker/pricing/)"
)
LOCAL_NOT_BILLED = "nothing is billed on the local stack"

# Which component prices which step.
STEP_COMPONENTS = {
    contracts.STEP_TRAINING: COMPONENT_TRAINING,
    contracts.STEP_TRANSFORM: COMPONENT_TRANSFORM,
    contracts.STEP_ENDPOINT: COMPONENT_HOSTING,
}


# A price source: (region, component, instance type) -> USD an hour, or None when unknown.
PriceLookup = Callable[[str, str, str], "float | None"]


def product_filters(region: str, component: str, instance_type: str) -> list[dict[str, str]]:
    """GetProducts filters for one SageMaker instance price (TERM_MATCH, botocore's pricing
    model; `regionCode` is the region's code, e.g. us-east-1)."""
    return [
        {"Type": "TERM_MATCH", "Field": "productFamily", "Value": PRODUCT_FAMILY},
        {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
        {"Type": "TERM_MATCH", "Field": "platoinstancetype", "Value": component},
        {"Type": "TERM_MATCH", "Field": "instanceType", "Value": instance_type},
    ]


def parse_hourly_usd(price_list: Iterable[Any], component: str, instance_type: str) -> float | None:
    """The on-demand USD price an hour in GetProducts' PriceList (a list of JSON strings, each
    {"product": {"attributes": ...}, "terms": {"OnDemand": {<offer>: {"priceDimensions":
    {<rate>: {"unit": "Hrs", "pricePerUnit": {"USD": "0.1150000000"}}}}}}}); None when no
    product of that component and instance type has one. A malformed entry is skipped."""
    prices = []
    for raw in price_list:
        try:
            item = json.loads(raw) if isinstance(raw, str | bytes) else raw
            attributes = item["product"]["attributes"]
            on_demand = item["terms"]["OnDemand"]
        except (ValueError, KeyError, TypeError):
            continue
        if attributes.get("platoinstancetype") != component:
            continue
        if attributes.get("instanceType") != instance_type:
            continue
        for offer in on_demand.values() if isinstance(on_demand, Mapping) else ():
            for dimension in (offer.get("priceDimensions") or {}).values():
                if dimension.get("unit") != HOURLY_UNIT:
                    continue
                try:
                    usd = float(dimension["pricePerUnit"]["USD"])
                except (KeyError, TypeError, ValueError):
                    continue
                if usd > 0:
                    prices.append(usd)
    # One on-demand hourly rate per SKU; should the answer hold more, the highest is the honest
    # bound (a cost shown never understates the bill).
    return max(prices) if prices else None


@dataclass(frozen=True)
class StepUsage:
    """What one step of a run ran on, and for how long SageMaker bills it."""

    step: str
    instance_type: str
    instance_count: int
    billable_seconds: int  # wall-clock seconds billed, per instance
    training_seconds: int | None = None  # training only: TrainingTimeInSeconds
    spot: bool = False  # a managed spot training job

    @property
    def instance_seconds(self) -> int:
        return self.billable_seconds * self.instance_count

    @property
    def spot_saving(self) -> float | None:
        """botocore's formula: 1 - BillableTimeInSeconds / TrainingTimeInSeconds (0.8 is 80%)."""
        if not self.spot or not self.training_seconds or self.step != contracts.STEP_TRAINING:
            return None
        return max(0.0, 1 - self.billable_seconds / self.training_seconds)


@dataclass(frozen=True)
class StepCost:
    usage: StepUsage
    hourly_usd: float | None

    @property
    def usd(self) -> float | None:
        if self.hourly_usd is None:
            return None
        return self.usage.instance_seconds / SECONDS_PER_HOUR * self.hourly_usd


@dataclass(frozen=True)
class Serverless:
    """A serverless endpoint's settings (ServerlessConfig): billed per use, not by the hour."""

    memory_mb: int
    max_concurrency: int

    def describe(self) -> str:
        return f"serverless, {self.memory_mb} MB, at most {self.max_concurrency} at once"


@dataclass(frozen=True)
class Instances:
    """An endpoint on instances: the count it serves on while in service (core.serving), and
    the most its autoscaling may add up to (the stable endpoint's; else the count)."""

    instance_type: str
    count: int
    autoscaling_max: int = 0

    def describe(self) -> str:
        plural = "instance" if self.count == 1 else "instances"
        what = f"{self.count} {self.instance_type} {plural} while in service"
        if self.autoscaling_max > self.count:
            what += f" (autoscaling up to {self.autoscaling_max})"
        return what


@dataclass(frozen=True)
class ServingCost:
    instance_type: str
    instance_count: int
    hourly_usd: float | None  # one instance's
    serverless: Serverless | None = None
    autoscaling_max: int = 0

    def describe(self) -> str:
        return Instances(self.instance_type, self.instance_count, self.autoscaling_max).describe()

    @property
    def per_hour(self) -> float | None:
        return None if self.hourly_usd is None else self.hourly_usd * self.instance_count

    @property
    def per_month(self) -> float | None:
        return None if self.per_hour is None else self.per_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class RunCost:
    steps: tuple[StepCost, ...]
    serving: ServingCost | None

    @property
    def total_usd(self) -> float | None:
        """The run's jobs (training and transform); None when any of them has no price."""
        if not self.steps or any(step.usd is None for step in self.steps):
            return None
        return sum(step.usd or 0.0 for step in self.steps)


def usage_of(record: RunRecord) -> tuple[StepUsage, ...]:
    """The billed jobs of a run, from its completed (or failed/stopped) progress entries."""
    usages = []
    for step in (contracts.STEP_TRAINING, contracts.STEP_TRANSFORM):
        for status in (rr.COMPLETED, rr.FAILED, rr.STOPPED):
            entry = record.entry(step, status)
            if entry is None or entry.billable_seconds is None or not entry.instance_type:
                continue
            usages.append(
                StepUsage(
                    step=step,
                    instance_type=entry.instance_type,
                    instance_count=entry.instance_count or 1,
                    billable_seconds=entry.billable_seconds,
                    training_seconds=entry.training_seconds,
                    spot=bool(entry.managed_spot),
                )
            )
            break
    return tuple(usages)


def run_cost(
    record: RunRecord,
    region: str,
    prices: PriceLookup,
    serving: Instances | Serverless | None = None,
) -> RunCost:
    """The run's cost at on-demand prices; `serving`: the endpoint's instances, or its
    Serverless settings (no price asked: see SERVERLESS_PRICE)."""
    steps = tuple(
        StepCost(u, prices(region, STEP_COMPONENTS[u.step], u.instance_type))
        for u in usage_of(record)
    )
    hosting = None
    if isinstance(serving, Serverless):
        hosting = ServingCost("", 0, None, serverless=serving)
    elif serving is not None:
        hosting = ServingCost(
            serving.instance_type,
            serving.count,
            prices(region, COMPONENT_HOSTING, serving.instance_type),
            autoscaling_max=serving.autoscaling_max,
        )
    return RunCost(steps, hosting)


def _whole(value: Any, default: int) -> int:
    text = str(value)
    return int(text) if text.isdigit() and int(text) > 0 else default


def serving_of(record: RunRecord) -> Instances | Serverless | None:
    """The endpoint's instances, as the deploy step serves them from the run's recorded
    settings (core.serving: the stable endpoint holds endpoint_instance_count within its
    autoscaling bounds), or its serverless settings when it was serverless. A record from
    before the bounds were recorded: the count as it is."""
    settings = record.run_settings
    if settings.get("endpoint_type") == contracts.ENDPOINT_TYPE_SERVERLESS:
        return Serverless(
            int(settings.get("serverless_memory_mb", 0)),
            int(settings.get("serverless_max_concurrency", 0)),
        )
    instance_type = settings.get("endpoint_instance_type")
    if not isinstance(instance_type, str) or not instance_type:
        return None
    count = _whole(settings.get("endpoint_instance_count", 1), 1)
    if "endpoint_min_instances" not in settings or settings.get("per_run_endpoints"):
        return Instances(instance_type, count)
    low = _whole(settings["endpoint_min_instances"], 1)
    high = _whole(settings.get("endpoint_max_instances", low), low)
    serving = serving_instance_count(count, low, high, stable=True)
    return Instances(instance_type, serving, autoscaling_max=high)


def usd(value: float | None) -> str:
    if value is None:
        return PRICE_UNKNOWN
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def _step_words(step: str) -> str:
    return {contracts.STEP_TRAINING: "training", contracts.STEP_TRANSFORM: "batch transform"}.get(
        step, step
    )


def cost_lines(cost: RunCost, *, billed: bool = True) -> list[str]:
    """The email's and `mnistflow status`'s cost lines. `billed` False: the local stack, where
    the seconds are real and nothing is billed (no price is asked)."""
    lines = []
    for step in cost.steps:
        u = step.usage
        what = (
            f"{u.billable_seconds} s billable x {u.instance_count} {u.instance_type}"
            f" ({_step_words(u.step)})"
        )
        price = usd(step.usd) if billed else LOCAL_NOT_BILLED
        lines.append(f"  {what}: {price}")
        saving = u.spot_saving
        if saving is not None and u.training_seconds:
            lines.append(
                f"    spot: {u.training_seconds} s trained, {u.billable_seconds} s billed:"
                f" {saving:.0%} saved (1 - BillableTimeInSeconds / TrainingTimeInSeconds)"
            )
    if not cost.steps:
        lines.append("  no billed job recorded yet")
    if billed:
        lines.append(f"Run cost: {usd(cost.total_usd)} (on-demand prices, AWS Price List)")
    else:
        lines.append(f"Run cost: {LOCAL_NOT_BILLED}")
    if cost.serving is not None and cost.serving.serverless is not None:
        what = cost.serving.serverless.describe()
        price = SERVERLESS_PRICE if billed else LOCAL_NOT_BILLED
        lines.append(f"Endpoint: {what}: {price}")
    elif cost.serving is not None:
        s = cost.serving
        if billed:
            lines.append(
                f"Endpoint: {s.describe()}: {usd(s.per_hour)} an hour,"
                f" {usd(s.per_month)} a month ({HOURS_PER_MONTH} h), not in the run cost"
            )
        else:
            lines.append(f"Endpoint: {s.describe()}: {LOCAL_NOT_BILLED}")
    return lines


# -- the README's cost table (on paper) ----------------------------------------------------------


@dataclass(frozen=True)
class PaperAssumptions:
    """What the README's table assumes; each figure is stated next to the table."""

    hourly_usd: float | None  # one ml.m5.large, on demand, for training, transform and hosting
    train_seconds: int  # billable seconds of one training job
    transform_seconds: int  # billable seconds of one batch transform
    runs_per_month: int


def paper_rows(a: PaperAssumptions) -> list[tuple[str, str, str]]:
    """(setup, per run, per month) for the seed's defaults and ours, from on-demand prices.

    Seed: every run creates its own ml.m5.large endpoint and keeps it, so once a month of runs
    has piled up, `runs_per_month` endpoints bill all month. Ours: one stable endpoint for the
    stack (its month is shared by every run). Spot training: the jobs' figure is an upper bound;
    the saving is SageMaker's to report per run (1 - billable / training), no figure assumed.
    """
    if a.hourly_usd is None:
        unknown = (PRICE_UNKNOWN, PRICE_UNKNOWN)
        return [
            ("seed: a new ml.m5.large endpoint per run, kept", *unknown),
            ("ours: one stable ml.m5.large endpoint", *unknown),
            ("ours + spot training", *unknown),
            ("ours + serverless endpoint", *unknown),
        ]
    jobs = (a.train_seconds + a.transform_seconds) / SECONDS_PER_HOUR * a.hourly_usd
    endpoint_month = a.hourly_usd * HOURS_PER_MONTH
    seed_run = jobs + endpoint_month  # the run's jobs and its own endpoint, kept a month
    seed_month = a.runs_per_month * (jobs + endpoint_month)
    ours_run = jobs + endpoint_month / a.runs_per_month
    ours_month = a.runs_per_month * jobs + endpoint_month
    train = a.train_seconds / SECONDS_PER_HOUR * a.hourly_usd
    return [
        ("seed: a new ml.m5.large endpoint per run, kept", usd(seed_run), usd(seed_month)),
        ("ours: one stable ml.m5.large endpoint", usd(ours_run), usd(ours_month)),
        (
            "ours + spot training",
            f"at most {usd(ours_run)}, less the spot saving on {usd(train)} of training",
            f"at most {usd(ours_month)}",
        ),
        ("ours + serverless endpoint", PRICE_UNKNOWN, PRICE_UNKNOWN),
    ]


def paper_table(a: PaperAssumptions) -> str:
    rows = [
        "| setup | per run | per month (" + str(a.runs_per_month) + " runs) |",
        "| --- | --- | --- |",
    ]
    rows += [f"| {setup} | {run} | {month} |" for setup, run, month in paper_rows(a)]
    return "\n".join(rows)


# The figures behind the README's table (README.md, "What it costs").
README_ASSUMPTIONS = PaperAssumptions(
    hourly_usd=0.115, train_seconds=600, transform_seconds=600, runs_per_month=30
)
