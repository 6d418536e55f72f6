"""The operations dashboard: the product's own metrics as the functions emit them, the failure
queues, the functions, and every endpoint the runs deploy."""

from __future__ import annotations

import json

import pytest

from core import contracts
from stacks.dashboard import DASHBOARD_NAME_PREFIX
from tests.infra.cfn_text import render

# Which function emits each of the product's metrics (core.contracts), as its `service`.
EMITTED_BY = {
    contracts.METRIC_RUNS_STARTED: contracts.START_RUN,
    contracts.METRIC_START_FAILURES: contracts.START_RUN,
    contracts.METRIC_DATASETS_REJECTED: contracts.START_RUN,
    contracts.METRIC_RUNS_QUEUED: contracts.START_RUN,
    contracts.METRIC_ENDPOINTS_READY: contracts.TRACK_PROGRESS,
    contracts.METRIC_RUNS_FAILED: contracts.TRACK_PROGRESS,
    contracts.METRIC_MODELS_REJECTED: contracts.TRACK_PROGRESS,
    contracts.METRIC_UPLOAD_TO_ENDPOINT: contracts.TRACK_PROGRESS,
    contracts.METRIC_STEP_SECONDS: contracts.TRACK_PROGRESS,
    contracts.METRIC_STUCK_RUNS_CLOSED: contracts.WATCHDOG,
}
SAGEMAKER_SCHEMA = "{AWS/SageMaker,EndpointName,VariantName}"


def _dashboard(synth) -> dict:
    (dashboard,) = synth.of_type("AWS::CloudWatch::Dashboard").values()
    return dashboard["Properties"]


def _graphs(synth) -> list[dict]:
    """The dashboard's widgets, their intrinsics rendered (`${LogicalId}`, `${AWS::Region}`)."""
    return json.loads(render(_dashboard(synth)["DashboardBody"]))["widgets"]


def _metric_lines(synth) -> list[list]:
    """Every line of every graph: [namespace, name, dimension, value, ..., {options}], or
    [{"expression": ...}]."""
    return [line for graph in _graphs(synth) for line in graph["properties"]["metrics"]]


def _named(line: list) -> tuple[str, str, dict[str, str], dict]:
    namespace, name, *pairs, options = line
    return namespace, name, dict(zip(pairs[::2], pairs[1::2], strict=True)), options


def _lines_of(synth, namespace: str, name: str) -> list[tuple[dict[str, str], dict]]:
    return [
        (dimensions, options)
        for line in _metric_lines(synth)
        if isinstance(line[0], str)
        for space, metric, dimensions, options in [_named(line)]
        if (space, metric) == (namespace, name)
    ]


def test_the_dashboard_carries_the_product_prefix_and_the_region(default_synth):
    # Dashboards are global to the account: one per region the stack is deployed in
    assert DASHBOARD_NAME_PREFIX == f"{contracts.PRODUCT_PREFIX}flow-"
    name = render(_dashboard(default_synth)["DashboardName"])
    assert name == DASHBOARD_NAME_PREFIX + "${AWS::Region}"
    # And every graph shows the stack's own region
    assert {graph["properties"]["region"] for graph in _graphs(default_synth)} == {"${AWS::Region}"}


def test_every_product_metric_is_drawn():
    # Given every metric core.contracts declares, then this test knows who emits each
    declared = {
        value
        for key, value in vars(contracts).items()
        if key.startswith("METRIC_") and key != "METRIC_STEP_DIMENSION"
    }
    assert declared == set(EMITTED_BY)


@pytest.mark.parametrize("metric", sorted(EMITTED_BY))
def test_a_product_metric_is_read_as_its_function_emits_it(default_synth, metric):
    # Given the lines of this metric in the product's namespace
    lines = _lines_of(default_synth, contracts.METRICS_NAMESPACE, metric)
    assert lines, metric
    # Then each selects the emitting function's service (and, for steps, one step)
    extra = {contracts.METRIC_STEP_DIMENSION} if metric == contracts.METRIC_STEP_SECONDS else set()
    for dimensions, _ in lines:
        assert dimensions.pop("service") == EMITTED_BY[metric]
        assert set(dimensions) == extra


@pytest.mark.parametrize(
    "metric",
    [
        contracts.METRIC_RUNS_STARTED,
        contracts.METRIC_ENDPOINTS_READY,
        contracts.METRIC_RUNS_FAILED,
        contracts.METRIC_MODELS_REJECTED,
        contracts.METRIC_DATASETS_REJECTED,
        contracts.METRIC_START_FAILURES,
        contracts.METRIC_STUCK_RUNS_CLOSED,
    ],
)
def test_counts_are_summed_per_five_minutes(default_synth, metric):
    ((_, options),) = _lines_of(default_synth, contracts.METRICS_NAMESPACE, metric)
    assert options["stat"] == "Sum"
    assert options.get("period", 300) == 300  # 300 s is the widget's default, left out


def test_upload_to_endpoint_shows_p50_and_p95(default_synth):
    lines = _lines_of(
        default_synth, contracts.METRICS_NAMESPACE, contracts.METRIC_UPLOAD_TO_ENDPOINT
    )
    assert sorted(options["stat"] for _, options in lines) == ["p50", "p95"]


def test_each_step_has_its_duration(default_synth):
    lines = _lines_of(default_synth, contracts.METRICS_NAMESPACE, contracts.METRIC_STEP_SECONDS)
    steps = [dimensions[contracts.METRIC_STEP_DIMENSION] for dimensions, _ in lines]
    assert sorted(steps) == sorted(contracts.STEPS)
    assert {options["stat"] for _, options in lines} == {"p50"}


def test_both_failure_queues_show_their_depth(default_synth):
    lines = _lines_of(default_synth, "AWS/SQS", "ApproximateNumberOfMessagesVisible")
    stack = default_synth.stack
    queues = {
        "${" + default_synth.logical_id(product.failed_events) + ".QueueName}"
        for product in (stack.start_run, stack.track_progress)
    }
    assert {dimensions["QueueName"] for dimensions, _ in lines} == queues
    assert {options["stat"] for _, options in lines} == {"Maximum"}


@pytest.mark.parametrize(("metric", "stats"), [("Errors", ["Sum"]), ("Duration", ["p50", "p95"])])
def test_both_functions_show_errors_and_duration(default_synth, metric, stats):
    stack = default_synth.stack
    lines = _lines_of(default_synth, "AWS/Lambda", metric)
    for product in (stack.start_run, stack.track_progress):
        function = "${" + default_synth.logical_id(product.function) + "}"
        drawn = [options["stat"] for dims, options in lines if dims["FunctionName"] == function]
        assert sorted(drawn) == stats, product.name


def test_endpoints_are_found_by_search_over_the_product_names(default_synth):
    # Given the graphs' expressions (SageMaker endpoints are one per run, never named in advance)
    expressions = {
        line[0]["expression"] for line in _metric_lines(default_synth) if isinstance(line[0], dict)
    }
    # Then invocations and model latency are searched on every mnist endpoint and variant
    name_token = contracts.SAGEMAKER_NAME_PREFIX.strip("-")
    assert expressions == {
        f"SEARCH('{SAGEMAKER_SCHEMA} MetricName=\"{metric}\" EndpointName={name_token}', '{stat}')"
        for metric, stat in [
            ("Invocations", "Sum"),
            ("ModelLatency", "Average"),
            ("ModelLatency", "Maximum"),
        ]
    }


def test_model_latency_is_labelled_in_microseconds(default_synth):
    # SageMaker reports ModelLatency in microseconds, not the milliseconds one might assume
    (graph,) = [
        g
        for g in _graphs(default_synth)
        if "ModelLatency" in json.dumps(g["properties"]["metrics"])
    ]
    assert graph["properties"]["yAxis"]["left"]["label"] == "microseconds"
