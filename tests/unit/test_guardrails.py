"""The stable endpoint's guardrails, alarms and autoscaling requests, held to their sources:

- botocore's service models, as installed: sagemaker 2017-07-24 (DeploymentConfig,
  BlueGreenUpdatePolicy, TrafficRoutingConfig, AutoRollbackConfig, EndpointStatus),
  application-autoscaling 2016-02-06 (ServiceNamespace, ScalableDimension, MetricType,
  PolicyType), monitoring 2010-08-01 (PutMetricAlarm);
- the SageMaker developer guide: "Deployment guardrails" (blue/green, all at once, auto-rollback
  configuration and monitoring, exclusions), "Define a scaling policy" (target 70 on
  SageMakerVariantInvocationsPerInstance), "Update endpoints that use auto scaling".
  Read at github.com/awsdocs/amazon-sagemaker-developer-guide, doc_source/:
  deployment-guardrails-blue-green.md, deployment-guardrails-blue-green-all-at-once.md,
  deployment-guardrails-configuration.md, deployment-guardrails-exclusions.md,
  endpoint-auto-scaling-add-code-define.md, endpoint-auto-scaling-prerequisites.md,
  automating-sagemaker-with-eventbridge.md; and docs.aws.amazon.com/sagemaker/latest/dg/
  endpoint-scaling-update.html.
"""

from __future__ import annotations

import botocore.session
import pytest
from botocore.validate import ParamValidator

from core import endpoint_alarms
from core.settings import BY_KEY
from pipeline.steps import guardrails, steps

SESSION = botocore.session.get_session()
SAGEMAKER = SESSION.get_service_model("sagemaker")
AUTOSCALING = SESSION.get_service_model("application-autoscaling")
CLOUDWATCH = SESSION.get_service_model("cloudwatch")


def _valid(model, operation: str, request: dict) -> None:
    report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def _bounds(shape: str) -> tuple[int, int]:
    metadata = SAGEMAKER.shape_for(shape).metadata
    return metadata["min"], metadata["max"]


def test_the_deployment_config_is_an_update_endpoint_request_botocore_accepts():
    config = guardrails.deployment_config(
        bake_seconds=300, alarms=["mnist-classifier-errors", "mnist-classifier-latency"]
    )
    _valid(
        SAGEMAKER,
        "UpdateEndpoint",
        {"EndpointName": "mnist-classifier", "EndpointConfigName": "c", "DeploymentConfig": config},
    )
    policy = config["BlueGreenUpdatePolicy"]
    assert (
        policy["TrafficRoutingConfiguration"]["Type"]
        in SAGEMAKER.shape_for("TrafficRoutingConfigType").enum
    )
    assert policy["TerminationWaitInSeconds"] == 300  # the baking period
    low, high = _bounds("MaximumExecutionTimeoutInSeconds")
    assert low <= policy["MaximumExecutionTimeoutInSeconds"] <= high
    assert policy["MaximumExecutionTimeoutInSeconds"] > policy["TerminationWaitInSeconds"]
    assert [a["AlarmName"] for a in config["AutoRollbackConfiguration"]["Alarms"]] == [
        "mnist-classifier-errors",
        "mnist-classifier-latency",
    ]


def test_the_baking_period_setting_spans_what_termination_wait_allows():
    low, high = _bounds("TerminationWaitInSeconds")  # 0 to 3600
    kind = BY_KEY["deploy_bake_minutes"].kind
    assert (kind.minimum * 60, kind.maximum * 60) == (low, high)
    for minutes in (kind.minimum, kind.maximum):
        config = guardrails.deployment_config(bake_seconds=minutes * 60, alarms=["a"])
        timeout = config["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"]
        assert _bounds("MaximumExecutionTimeoutInSeconds")[0] <= timeout
        assert timeout <= _bounds("MaximumExecutionTimeoutInSeconds")[1]
    with pytest.raises(ValueError, match="0 to 3600"):
        guardrails.deployment_config(bake_seconds=3601, alarms=[])


def test_alarm_names_come_from_the_stack_parameter_within_the_models_limit():
    assert guardrails.alarm_names(" a , b,") == ["a", "b"]
    assert guardrails.MAX_ALARMS == SAGEMAKER.shape_for("AlarmList").metadata["max"]
    with pytest.raises(ValueError, match="at most 10"):
        guardrails.alarm_names(",".join(f"a{i}" for i in range(11)))
    # None named: no AutoRollbackConfiguration at all (its list has at least one alarm)
    assert "AutoRollbackConfiguration" not in guardrails.deployment_config(
        bake_seconds=0, alarms=[]
    )


def test_the_rollback_alarms_are_put_metric_alarm_requests_cloudwatch_accepts():
    for alarm in endpoint_alarms.ALARMS:
        _valid(CLOUDWATCH, "PutMetricAlarm", endpoint_alarms.put_metric_alarm_request(alarm, "e"))
    # The guide's metrics (AWS/SageMaker, per endpoint and variant): 5xx errors and latency
    assert {a.metric for a in endpoint_alarms.ALARMS} == {"Invocation5XXErrors", "ModelLatency"}
    request = endpoint_alarms.put_metric_alarm_request(endpoint_alarms.LATENCY, "e")
    assert request["Namespace"] == "AWS/SageMaker"
    assert request["Dimensions"] == [
        {"Name": "EndpointName", "Value": "e"},
        {"Name": "VariantName", "Value": "AllTraffic"},
    ]
    assert request["Threshold"] == 100_000  # the guide's example: microseconds, 100 ms
    assert request["TreatMissingData"] == "notBreaching"
    # Each alarm can reach ALARM within the default baking period
    reach = endpoint_alarms.PERIOD_SECONDS * endpoint_alarms.EVALUATION_PERIODS
    assert reach <= BY_KEY["deploy_bake_minutes"].default * 60
    assert endpoint_alarms.alarm_names("mnist-classifier") == (
        "mnistflow-mnist-classifier-errors,mnistflow-mnist-classifier-latency"
    )


def test_autoscaling_requests_use_the_models_names():
    assert guardrails.SERVICE_NAMESPACE in AUTOSCALING.shape_for("ServiceNamespace").enum
    assert guardrails.SCALABLE_DIMENSION in AUTOSCALING.shape_for("ScalableDimension").enum
    assert guardrails.PREDEFINED_METRIC in AUTOSCALING.shape_for("MetricType").enum
    assert guardrails.POLICY_TYPE in AUTOSCALING.shape_for("PolicyType").enum
    assert guardrails.resource_id("mnist-classifier") == (
        "endpoint/mnist-classifier/variant/AllTraffic"
    )
    # The guide's typical target (invocations per instance per minute)
    assert BY_KEY["endpoint_target_invocations"].default == 70


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda **request: self.calls.append((name, request)) or {}


def test_register_is_target_tracking_botocore_accepts_and_refuses_inverted_bounds():
    autoscaling = Recorder()
    guardrails.register(autoscaling, "e", min_instances=1, max_instances=2, target=70)
    [(first, target), (second, policy)] = autoscaling.calls
    assert (first, second) == ("register_scalable_target", "put_scaling_policy")
    _valid(AUTOSCALING, "RegisterScalableTarget", target)
    _valid(AUTOSCALING, "PutScalingPolicy", policy)
    with pytest.raises(ValueError, match="min instances 3 is over max instances 2"):
        guardrails.register(autoscaling, "e", min_instances=3, max_instances=2, target=70)


def test_a_run_deploys_to_the_stable_endpoint_unless_per_run_endpoints_is_set():
    key = "mnist-0123456789ab"
    assert steps.endpoint_for(key, endpoint_name="mnist-classifier", per_run_endpoints=False) == (
        "mnist-classifier"
    )
    assert steps.endpoint_for(key, endpoint_name="mnist-classifier", per_run_endpoints=True) == (
        f"{key}-endpoint"
    )


def test_every_endpoint_status_is_either_awaited_or_ends_the_deploy():
    from pipeline.steps import sagemaker_jobs as jobs

    statuses = set(SAGEMAKER.shape_for("EndpointStatus").enum)
    assert statuses == jobs._TRANSIENT | jobs._ENDED | {"InService"}
    assert "UpdateRollbackFailed" in jobs._ENDED and "RollingBack" in jobs._TRANSIENT
