"""How the stable endpoint is updated safely: SageMaker's deployment guardrails and the
variant's target-tracking autoscaling.

Facts from botocore's sagemaker and application-autoscaling service models (2017-07-24,
2016-02-06) and the SageMaker developer guide (pinned in tests/unit/test_guardrails.py):

- DeploymentConfig.BlueGreenUpdatePolicy: TrafficRoutingConfiguration (Type ALL_AT_ONCE |
  CANARY | LINEAR, WaitIntervalInSeconds 0..3600, both required), TerminationWaitInSeconds
  0..3600 (the baking period), MaximumExecutionTimeoutInSeconds 600..28800;
  AutoRollbackConfiguration.Alarms: 1 to 10 {AlarmName}.
- ALL_AT_ONCE: the endpoint has one variant on one or a few instances, so a canary of one
  instance would be the whole fleet; all of the traffic moves to the new fleet, which bakes for
  TerminationWaitInSeconds while the alarms watch it ("All At Once Traffic Shifting").
- Autoscaling: ServiceNamespace `sagemaker`, ResourceId `endpoint/<name>/variant/<variant>`,
  ScalableDimension `sagemaker:variant:DesiredInstanceCount`, a TargetTrackingScaling policy on
  the predefined SageMakerVariantInvocationsPerInstance ("Define a scaling policy").
- An endpoint with autoscaling: UpdateEndpoint fails when it would change the instance type of
  a variant that is a scalable target; changing the model is allowed ("Update endpoints that use
  auto scaling"). So the deploy deregisters the variant first only when the instance type
  changes, and registers it again once the endpoint is InService.
"""

from __future__ import annotations

from core.contracts import ENDPOINT_VARIANT

TRAFFIC_ROUTING = "ALL_AT_ONCE"
# Beyond the baking period, how long SageMaker may take to launch the new fleet and shift the
# traffic before it abandons the deployment (and rolls back).
DEPLOYMENT_MARGIN_SECONDS = 1800
MIN_EXECUTION_TIMEOUT_SECONDS = 600
MAX_EXECUTION_TIMEOUT_SECONDS = 28800
MAX_ALARMS = 10
SERVICE_NAMESPACE = "sagemaker"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
PREDEFINED_METRIC = "SageMakerVariantInvocationsPerInstance"
POLICY_TYPE = "TargetTrackingScaling"


def alarm_names(joined: str) -> list[str]:
    """The stack's alarm names, as the pipeline parameter carries them (comma-separated)."""
    names = [name.strip() for name in joined.split(",") if name.strip()]
    if len(names) > MAX_ALARMS:
        raise ValueError(f"at most {MAX_ALARMS} rollback alarms (got {len(names)})")
    return names


def deployment_config(*, bake_seconds: int, alarms: list[str]) -> dict:
    """UpdateEndpoint's DeploymentConfig: blue/green, all at once, baking `bake_seconds` while
    `alarms` watch; any of them in ALARM rolls the update back."""
    if not 0 <= bake_seconds <= 3600:
        raise ValueError(f"the baking period is 0 to 3600 seconds (got {bake_seconds})")
    timeout = min(
        max(bake_seconds + DEPLOYMENT_MARGIN_SECONDS, MIN_EXECUTION_TIMEOUT_SECONDS),
        MAX_EXECUTION_TIMEOUT_SECONDS,
    )
    config: dict = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": TRAFFIC_ROUTING, "WaitIntervalInSeconds": 0},
            "TerminationWaitInSeconds": bake_seconds,
            "MaximumExecutionTimeoutInSeconds": timeout,
        }
    }
    if alarms:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarms]}
    return config


def resource_id(endpoint_name: str, variant: str = ENDPOINT_VARIANT) -> str:
    return f"endpoint/{endpoint_name}/variant/{variant}"


def policy_name(endpoint_name: str) -> str:
    return f"{endpoint_name}-invocations"


def is_scalable_target(autoscaling, endpoint_name: str) -> bool:
    answer = autoscaling.describe_scalable_targets(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceIds=[resource_id(endpoint_name)],
        ScalableDimension=SCALABLE_DIMENSION,
    )
    return bool(answer.get("ScalableTargets"))


def deregister(autoscaling, endpoint_name: str) -> None:
    """Deletes the policy, then deregisters the variant (the order the guide gives)."""
    policies = autoscaling.describe_scaling_policies(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=SCALABLE_DIMENSION,
    ).get("ScalingPolicies", [])
    for policy in policies:
        autoscaling.delete_scaling_policy(
            PolicyName=policy["PolicyName"],
            ServiceNamespace=SERVICE_NAMESPACE,
            ResourceId=resource_id(endpoint_name),
            ScalableDimension=SCALABLE_DIMENSION,
        )
    autoscaling.deregister_scalable_target(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=SCALABLE_DIMENSION,
    )


def register(
    autoscaling, endpoint_name: str, *, min_instances: int, max_instances: int, target: int
) -> None:
    """Target tracking on the variant's invocations per instance; both calls are idempotent
    (registering again updates the bounds, putting the policy again replaces it)."""
    if min_instances > max_instances:
        raise ValueError(
            f"autoscaling: min instances {min_instances} is over max instances {max_instances}"
        )
    autoscaling.register_scalable_target(
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=SCALABLE_DIMENSION,
        MinCapacity=min_instances,
        MaxCapacity=max_instances,
    )
    autoscaling.put_scaling_policy(
        PolicyName=policy_name(endpoint_name),
        ServiceNamespace=SERVICE_NAMESPACE,
        ResourceId=resource_id(endpoint_name),
        ScalableDimension=SCALABLE_DIMENSION,
        PolicyType=POLICY_TYPE,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": float(target),
            "PredefinedMetricSpecification": {"PredefinedMetricType": PREDEFINED_METRIC},
        },
    )
