"""A run's cost: usage from the record, prices from the Price List's documented shape, the
email's lines (price unknown, local stack, spot saving), the README's table, and the facts
behind them pinned to botocore's models and the AWS docs."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import botocore
import pytest

from core import contracts
from core.run_record import RunRecord
from core.serving import serving_instance_count
from lambdas.logic import costs
from lambdas.logic.progress_events import parse_event
from lambdas.logic.track_progress import TrackProgress
from pipeline.steps import endpoint_mode, steps
from tests.conftest import load_event
from tests.fakes import InMemoryRunProgress, RecordingNotifier, slot_fakes
from tests.fakes.progress import RUN_KEY, start_run_record

REPO = Path(__file__).resolve().parents[2]
PRICING = REPO / "tests" / "pricing"
BOTOCORE_DATA = Path(botocore.__file__).parent / "data"


def _model(service: str, version: str) -> dict:
    path = BOTOCORE_DATA / service / version / "service-2.json.gz"
    if path.exists():
        return json.loads(gzip.open(path).read())
    return json.loads((path.with_suffix("")).read_text())


def _fixture(name: str) -> dict:
    return json.loads((PRICING / f"{name}.json").read_text())


def _fixture_prices(region: str, component: str, instance_type: str) -> float | None:
    name = {
        costs.COMPONENT_TRAINING: "get_products_training_ml_m5_large",
        costs.COMPONENT_TRANSFORM: "get_products_transform_ml_m5_large",
        costs.COMPONENT_HOSTING: "get_products_hosting_ml_m5_large",
    }[component]
    return costs.parse_hourly_usd(_fixture(name)["PriceList"], component, instance_type)


# -- the Price List's answer -----------------------------------------------------------------


def test_the_hourly_price_is_read_from_on_demand_price_dimensions():
    answer = _fixture("get_products_training_ml_m5_large")
    assert all(isinstance(item, str) for item in answer["PriceList"])  # JSON strings, documented
    price = costs.parse_hourly_usd(answer["PriceList"], costs.COMPONENT_TRAINING, "ml.m5.large")
    assert price == pytest.approx(0.115)


@pytest.mark.parametrize(
    ("answer", "component", "instance_type"),
    [
        ("get_products_empty", costs.COMPONENT_TRAINING, "ml.m5.large"),
        # another component's product, or another instance type's, is not this price
        ("get_products_hosting_ml_m5_large", costs.COMPONENT_TRAINING, "ml.m5.large"),
        ("get_products_training_ml_m5_large", costs.COMPONENT_TRAINING, "ml.c5.xlarge"),
    ],
)
def test_no_matching_product_is_no_price(answer, component, instance_type):
    price_list = _fixture(answer)["PriceList"]
    assert costs.parse_hourly_usd(price_list, component, instance_type) is None


def test_malformed_price_list_items_are_skipped_not_fatal():
    good = _fixture("get_products_training_ml_m5_large")["PriceList"][0]
    broken = json.loads(good)
    broken["terms"]["OnDemand"] = {"x": {"priceDimensions": {"y": {"unit": "Hrs"}}}}
    items = ["not json", "{}", json.dumps(broken), good]
    assert costs.parse_hourly_usd(items, costs.COMPONENT_TRAINING, "ml.m5.large") == 0.115
    assert costs.parse_hourly_usd(items[:3], costs.COMPONENT_TRAINING, "ml.m5.large") is None


def test_the_filters_are_ones_the_pricing_model_accepts():
    model = _model("pricing", "2017-10-15")
    filter_types = model["shapes"]["FilterType"]["enum"]
    for item in costs.product_filters("eu-west-1", costs.COMPONENT_HOSTING, "ml.m5.large"):
        assert set(item) == set(model["shapes"]["Filter"]["required"])
        assert item["Type"] in filter_types
    fields = {f["Field"]: f["Value"] for f in costs.product_filters("eu-west-1", "Hosting", "x")}
    assert fields["regionCode"] == "eu-west-1"  # the region's code, not its location name


def test_the_price_list_answers_in_the_regions_botocore_lists():
    from lambdas.dal.price_list import PRICING_REGION, PRICING_REGIONS

    endpoints = json.loads((BOTOCORE_DATA / "endpoints.json").read_text())
    aws = next(p for p in endpoints["partitions"] if p["partition"] == "aws")
    assert set(aws["services"]["api.pricing"]["endpoints"]) == set(PRICING_REGIONS)
    assert PRICING_REGION in PRICING_REGIONS


# -- usage from the record -------------------------------------------------------------------


def _record_after(*names: str, **changes) -> RunRecord:
    runs = InMemoryRunProgress({RUN_KEY: start_run_record(**changes)})
    service = TrackProgress(runs, RecordingNotifier(), **slot_fakes(runs))
    for name in names:
        service.handle(load_event(name))
    return RunRecord.from_item(runs.items[RUN_KEY])


def test_the_event_fields_read_for_usage_are_in_botocores_describe_shapes():
    # The events' detail is the Describe* answer (AWS docs, "Events that Amazon SageMaker AI
    # sends to Amazon EventBridge"); each field read must be one botocore's model names.
    shapes = _model("sagemaker", "2017-07-24")["shapes"]
    training = shapes["DescribeTrainingJobResponse"]["members"]
    transform = shapes["DescribeTransformJobResponse"]["members"]
    for field in ("BillableTimeInSeconds", "TrainingTimeInSeconds", "ResourceConfig"):
        assert field in training
    for field in ("TransformStartTime", "TransformEndTime", "TransformResources"):
        assert field in transform
    assert {"InstanceType", "InstanceCount"} <= set(shapes["ResourceConfig"]["members"])
    assert {"InstanceType", "InstanceCount"} <= set(shapes["TransformResources"]["members"])
    # botocore's own words for the two figures the email uses
    doc = training["BillableTimeInSeconds"]["documentation"]
    assert "BillableTimeInSeconds * InstanceCount" in doc
    assert "(1 - BillableTimeInSeconds / TrainingTimeInSeconds) * 100" in doc


def test_training_and_transform_usage_are_kept_in_the_record():
    training = parse_event(load_event("sagemaker_training_completed"))
    assert (training.billable_seconds, training.training_seconds) == (810, 810)
    assert (training.instance_type, training.instance_count) == ("ml.m5.large", 1)
    transform = parse_event(load_event("sagemaker_transform_completed"))
    # TransformEndTime - TransformStartTime, epoch milliseconds in the event
    assert transform.billable_seconds == (1795868990000 - 1795868580000) // 1000
    record = _record_after("sagemaker_training_completed", "sagemaker_transform_completed")
    usage = {u.step: u for u in costs.usage_of(record)}
    assert usage[contracts.STEP_TRAINING].instance_seconds == 810
    assert usage[contracts.STEP_TRANSFORM].instance_seconds == 410


def test_usage_missing_from_an_event_leaves_the_cost_unknown_not_failed():
    event = load_event("sagemaker_training_completed")
    for field in ("BillableTimeInSeconds", "TrainingTimeInSeconds", "ResourceConfig"):
        event["detail"].pop(field)
    parsed = parse_event(event)
    assert parsed.billable_seconds is None and parsed.instance_type == ""
    event["detail"]["ResourceConfig"] = "garbage"
    assert parse_event(event).instance_count is None


# -- priced ----------------------------------------------------------------------------------


def test_a_runs_cost_is_billable_instance_seconds_at_the_hourly_price():
    record = _record_after(
        "sagemaker_training_completed",
        "sagemaker_transform_completed",
        run_settings={"endpoint_instance_type": "ml.m5.large", "endpoint_instance_count": 2},
    )
    cost = costs.run_cost(record, "us-east-1", _fixture_prices, costs.serving_of(record))
    assert cost.total_usd == pytest.approx((810 + 410) / 3600 * 0.115)
    assert cost.serving.per_hour == pytest.approx(0.23)
    assert cost.serving.per_month == pytest.approx(0.23 * 730)
    text = "\n".join(costs.cost_lines(cost))
    assert "810 s billable x 1 ml.m5.large (training): $0.0259" in text
    # (a record from before the autoscaling bounds were recorded: its count as it is)
    assert (
        "Endpoint: 2 ml.m5.large instances while in service: $0.2300 an hour,"
        " $167.90 a month (730 h), not in the run cost"
    ) in text


@pytest.mark.parametrize(
    ("count", "low", "high", "per_run", "serves", "words"),
    [
        # the stable endpoint serves endpoint_instance_count held within min..max
        (1, 1, 2, False, 1, "1 ml.m5.large instance while in service (autoscaling up to 2)"),
        (1, 2, 4, False, 2, "2 ml.m5.large instances while in service (autoscaling up to 4)"),
        (5, 1, 3, False, 3, "3 ml.m5.large instances while in service"),
        # a per-run endpoint is not autoscaled: the count as it is
        (3, 1, 2, True, 3, "3 ml.m5.large instances while in service"),
    ],
)
def test_the_endpoint_is_priced_at_the_instances_deploy_serves(
    count, low, high, per_run, serves, words
):
    from core.settings import BY_KEY, recorded_settings

    values = {p: BY_KEY[p].default for p in BY_KEY if not BY_KEY[p].required}
    values.update(
        endpoint_instance_type="ml.m5.large",
        endpoint_instance_count=count,
        endpoint_min_instances=low,
        endpoint_max_instances=high,
        per_run_endpoints=per_run,
    )
    record = _record_after("sagemaker_training_completed", run_settings=recorded_settings(values))
    serving = costs.serving_of(record)
    # The deploy step's own rule (one function, core.serving) gives the same count
    assert steps.serving_instance_count is serving_instance_count
    assert serving.count == serves == serving_instance_count(count, low, high, stable=not per_run)
    cost = costs.run_cost(record, "us-east-1", _fixture_prices, serving)
    assert cost.serving.per_hour == pytest.approx(0.115 * serves)
    lines = costs.cost_lines(cost)
    assert f"Endpoint: {words}: {costs.usd(0.115 * serves)} an hour," in "\n".join(lines)
    assert cost.total_usd == pytest.approx(810 / 3600 * 0.115)  # the jobs alone


def test_no_price_says_price_unknown_and_keeps_the_seconds():
    record = _record_after("sagemaker_training_completed")
    cost = costs.run_cost(record, "us-east-1", lambda *_: None, costs.Instances("ml.m5.large", 1))
    lines = costs.cost_lines(cost)
    assert cost.total_usd is None
    assert "  810 s billable x 1 ml.m5.large (training): price unknown" in lines
    assert "Run cost: price unknown (on-demand prices, AWS Price List)" in lines
    assert any(line.startswith("Endpoint:") and "price unknown" in line for line in lines)


def test_a_serverless_endpoint_is_price_unknown_and_asks_no_instance_price():
    # Given a run whose endpoint was serverless (start-run records its serverless settings)
    settings = {
        "endpoint_instance_type": "ml.m5.large",
        "endpoint_instance_count": 1,
        "endpoint_type": "serverless",
        "serverless_memory_mb": 3072,
        "serverless_max_concurrency": 7,
    }
    record = _record_after("sagemaker_training_completed", run_settings=settings)
    asked = []

    def prices(*lookup):
        asked.append(lookup)
        return _fixture_prices(*lookup)

    cost = costs.run_cost(record, "us-east-1", prices, costs.serving_of(record))
    # Then the jobs are priced, the endpoint is not (no hourly instance price applies to it)
    assert [component for _, component, _ in asked] == [costs.COMPONENT_TRAINING]
    lines = costs.cost_lines(cost)
    endpoint = [line for line in lines if line.startswith("Endpoint:")]
    assert endpoint == [
        f"Endpoint: serverless, 3072 MB, at most 7 at once: {costs.SERVERLESS_PRICE}"
    ]
    assert costs.SERVERLESS_PRICE.startswith(costs.PRICE_UNKNOWN)
    assert "Endpoint: serverless, 3072 MB, at most 7 at once: nothing is billed" in "\n".join(
        costs.cost_lines(cost, billed=False)
    )


def test_the_run_record_keeps_the_serverless_settings_only_for_a_serverless_endpoint():
    from core.settings import BY_KEY, INSTANCE_SERVING_KEYS, PER_UPLOAD_KEYS, recorded_settings

    values = {p: BY_KEY[p].default for p in BY_KEY if not BY_KEY[p].required}
    instance = recorded_settings(values)
    assert list(instance) == [*PER_UPLOAD_KEYS, *INSTANCE_SERVING_KEYS]  # what the cost needs
    serverless = recorded_settings({**values, "endpoint_type": "serverless"})
    assert serverless["serverless_memory_mb"] == 2048
    assert serverless["serverless_max_concurrency"] == 5
    assert not set(INSTANCE_SERVING_KEYS) & set(serverless)


def test_on_the_local_stack_nothing_is_billed_and_it_says_so():
    record = _record_after("sagemaker_training_completed")
    cost = costs.run_cost(record, "us-east-1", lambda *_: None, costs.Instances("ml.m5.large", 1))
    lines = costs.cost_lines(cost, billed=False)
    assert "Run cost: nothing is billed on the local stack" in lines
    assert not any("$" in line or costs.PRICE_UNKNOWN in line for line in lines)


def test_spot_saving_is_botocores_formula():
    # botocore's example: billable 100, training 500 -> 80% saved
    usage = costs.StepUsage(contracts.STEP_TRAINING, "ml.m5.large", 1, 100, 500, spot=True)
    assert usage.spot_saving == pytest.approx(0.8)
    lines = costs.cost_lines(costs.RunCost((costs.StepCost(usage, 0.115),), None))
    assert any("80% saved" in line for line in lines)
    # an on-demand job has no spot line at all
    on_demand = costs.StepUsage(contracts.STEP_TRAINING, "ml.m5.large", 1, 500, 500)
    assert on_demand.spot_saving is None
    lines = costs.cost_lines(costs.RunCost((costs.StepCost(on_demand, 0.115),), None))
    assert not any("spot" in line for line in lines)


def test_a_spot_training_event_is_recorded_as_spot_with_its_saving():
    event = load_event("sagemaker_training_completed")
    event["detail"]["EnableManagedSpotTraining"] = True
    event["detail"]["BillableTimeInSeconds"] = 243  # 810 trained: 70% saved
    runs = InMemoryRunProgress({RUN_KEY: start_run_record()})
    TrackProgress(runs, RecordingNotifier(), **slot_fakes(runs)).handle(event)
    record = RunRecord.from_item(runs.items[RUN_KEY])
    (usage,) = costs.usage_of(record)
    assert usage.spot and usage.spot_saving == pytest.approx(0.7)
    lines = costs.cost_lines(costs.run_cost(record, "us-east-1", _fixture_prices))
    assert "    spot: 810 s trained, 243 s billed: 70% saved" in "\n".join(lines)
    shapes = _model("sagemaker", "2017-07-24")["shapes"]
    assert "EnableManagedSpotTraining" in shapes["DescribeTrainingJobResponse"]["members"]


def test_the_endpoint_ready_email_carries_the_cost_and_the_local_stack_truth():
    for emulator, expected in (("", "price unknown"), ("http://127.0.0.1:5000", "nothing is")):
        runs = InMemoryRunProgress(
            {RUN_KEY: start_run_record(run_settings={"endpoint_instance_type": "ml.m5.large"})}
        )
        notifier = RecordingNotifier()
        service = TrackProgress(
            runs, notifier, emulator_url=emulator, prices=lambda *_: None, **slot_fakes(runs)
        )
        for name in (
            "sagemaker_training_completed",
            "sagemaker_transform_completed",
            "sagemaker_endpoint_in_service",
        ):
            service.handle(load_event(name))
        (email,) = [p for p in notifier.published if p.kind == contracts.KIND_ENDPOINT_READY]
        cost = email.message.split("\nCost:\n", 1)[1]
        assert "810 s billable x 1 ml.m5.large (training)" in cost
        assert expected in cost


def test_a_price_lookup_that_raises_loses_the_cost_not_the_email():
    def broken(*_):
        raise RuntimeError("injected")

    runs = InMemoryRunProgress({RUN_KEY: start_run_record()})
    notifier = RecordingNotifier()
    service = TrackProgress(runs, notifier, prices=broken, **slot_fakes(runs))
    service.handle(load_event("sagemaker_training_completed"))
    assert service.handle(load_event("sagemaker_endpoint_in_service"))["outcome"] == "announced"
    assert "Cost:" not in notifier.published[-1].message


# -- the README's table ----------------------------------------------------------------------


def test_the_readme_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    assert costs.paper_table(costs.README_ASSUMPTIONS) in readme


def test_the_paper_arithmetic():
    a = costs.PaperAssumptions(
        hourly_usd=1.0, train_seconds=1800, transform_seconds=1800, runs_per_month=30
    )
    rows = {setup.split(":")[0]: (run, month) for setup, run, month in costs.paper_rows(a)}
    assert rows["seed"] == ("$731.00", "$21,930.00")  # 1 h of jobs + 730 h of its endpoint
    assert rows["ours"] == ("$25.33", "$760.00")  # 1 h of jobs + a 30th of one endpoint
    unknown = costs.paper_rows(costs.PaperAssumptions(None, 1, 1, 30))
    assert all(run == month == costs.PRICE_UNKNOWN for _, run, month in unknown)


# -- cost tags, spot, serverless --------------------------------------------------------------


def test_every_run_resource_carries_the_cost_allocation_tags():
    from pipeline.steps.sagemaker_jobs import run_tags

    tags = {t["Key"]: t["Value"] for t in run_tags("mnist-0123456789ab")}
    assert tags[contracts.RUN_KEY_TAG] == "mnist-0123456789ab"
    for key, value in contracts.COST_TAGS.items():
        assert tags[key] == value
    assert set(contracts.COST_ALLOCATION_TAG_KEYS) <= set(tags)
    tag = _model("sagemaker", "2017-07-24")["shapes"]
    for key, value in tags.items():
        assert 1 <= len(key) <= tag["TagKey"]["max"] and len(value) <= tag["TagValue"]["max"]


def test_spot_rules_come_from_botocores_model():
    shapes = _model("sagemaker", "2017-07-24")["shapes"]
    wait_doc = shapes["StoppingCondition"]["members"]["MaxWaitTimeInSeconds"]["documentation"]
    assert "must be equal to or greater than <code>MaxRuntimeInSeconds</code>" in wait_doc
    request = shapes["CreateTrainingJobRequest"]
    assert "EnableManagedSpotTraining" in request["members"]
    assert "CheckpointConfig" not in request["required"]  # checkpoints are optional


def test_serverless_variant_fits_botocores_production_variant():
    shapes = _model("sagemaker", "2017-07-24")["shapes"]
    variant = endpoint_mode.production_variant("m", "serverless", memory_mb=3072, max_concurrency=7)
    assert set(variant) <= set(shapes["ProductionVariant"]["members"])
    serverless = shapes["ProductionVariantServerlessConfig"]
    assert set(variant["ServerlessConfig"]) <= set(serverless["members"])
    memory = shapes[serverless["members"]["MemorySizeInMB"]["shape"]]
    concurrency = shapes[serverless["members"]["MaxConcurrency"]["shape"]]
    assert (memory["min"], memory["max"]) == (1024, 6144)
    assert (memory["min"], memory["max"]) == (
        endpoint_mode.SERVERLESS_MEMORY_MB[0],
        endpoint_mode.SERVERLESS_MEMORY_MB[-1],
    )
    assert (
        "1024 MB, 2048 MB, 3072 MB, 4096 MB, 5120 MB, or 6144 MB"
        in (serverless["members"]["MemorySizeInMB"]["documentation"])
    )
    assert (concurrency["min"], concurrency["max"]) == endpoint_mode.SERVERLESS_MAX_CONCURRENCY
    with pytest.raises(ValueError, match="MemorySizeInMB"):
        endpoint_mode.production_variant("m", "serverless", memory_mb=1536)
    instance = endpoint_mode.production_variant("m", "instance", instance_type="ml.m5.large")
    assert "ServerlessConfig" not in instance and instance["InitialInstanceCount"] == 1
    with pytest.raises(ValueError, match="endpoint_type"):
        endpoint_mode.production_variant("m", "async")


def test_a_change_of_mode_is_documented_in_the_deploy_guide():
    # The mode changes themselves: tests/unit/test_serverless.py.
    instance_config = {"ProductionVariants": [{"InstanceType": "ml.m5.large"}]}
    change = endpoint_mode.mode_change(instance_config, "serverless")
    assert not change.in_place and "created again" in change.reason
    assert endpoint_mode.SERVERLESS_DOCS in (REPO / "docs" / "deploy.md").read_text()


def test_a_failed_run_still_says_what_it_cost():
    # A failed training job bills too (its BillableTimeInSeconds); the RUN_FAILED email says so
    runs = InMemoryRunProgress({RUN_KEY: start_run_record()})
    notifier = RecordingNotifier()
    service = TrackProgress(runs, notifier, prices=_fixture_prices, **slot_fakes(runs))
    assert service.handle(load_event("sagemaker_training_failed"))["outcome"] == "announced"
    (email,) = notifier.published
    assert email.kind == contracts.KIND_RUN_FAILED
    cost = email.message.split("\nCost:\n", 1)[1]
    assert "525 s billable x 1 ml.m5.large (training): $0.0168" in cost
    assert "Endpoint:" not in cost  # no endpoint was made
