"""Instance or serverless endpoints: the production variant of each mode, and how the deploy step
moves an endpoint from one mode to the other (pipeline/steps/steps.py, deploy).

SageMaker supports serverless inference for this image: "For your endpoint container, you can
choose either a SageMaker-provided container or bring your own. SageMaker provides containers
for its built-in algorithms" (Amazon SageMaker Developer Guide, "Serverless Inference",
Container support: https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html),
and the built-in k-means image is one of them. The same page's Feature exclusions name none
that this product uses on its serverless variant (GPUs, Marketplace model packages, private
Docker registries, multi-model endpoints, KMS keys, VPC configuration, network isolation, data
capture, multiple production variants, Model Monitor, inference pipelines), and say: "You
cannot convert your instance-based, real-time endpoint to a serverless endpoint. If you try to
update your real-time endpoint to serverless, you receive a ValidationError message. You can
convert a serverless endpoint to real-time, but once you make the update, you cannot roll it
back to serverless." (pinned in tests/unit/test_serverless.py.)

So (`mode_change`):

- same mode: UpdateEndpoint in place, with the deployment guardrails (blue/green is not
  excluded for serverless endpoints: the guardrails' Exclusions page excludes them from rolling
  deployments only);
- serverless -> instance: UpdateEndpoint in place (allowed), but without the guardrails'
  automatic rollback: a rollback would have to go back to serverless, which SageMaker says it
  cannot do. SageMaker keeps the serverless variant serving until the instances are in service;
- instance -> serverless: not in place. The endpoint is deleted and created again under the
  same name on the serverless config (a gap in service while it is created: the name is what
  `mnistflow predict`, the email and the stack's rollback alarms know). Should the new one
  fail, the deploy step creates it again on the instance config that served before.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contracts import (
    ENDPOINT_TYPE_INSTANCE,
    ENDPOINT_TYPE_SERVERLESS,
    ENDPOINT_TYPES,
    ENDPOINT_VARIANT,
    SERVERLESS_MAX_CONCURRENCY,
    SERVERLESS_MEMORY_MB,
)

SERVERLESS_DOCS = "https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html"
GUARDRAILS_EXCLUSIONS_DOCS = (
    "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html"
)
VARIANT_NAME = ENDPOINT_VARIANT
__all__ = ["ENDPOINT_TYPES", "ENDPOINT_TYPE_INSTANCE", "ENDPOINT_TYPE_SERVERLESS"]


def production_variant(
    model_name: str,
    endpoint_type: str,
    *,
    instance_type: str = "",
    instance_count: int = 1,
    memory_mb: int = 2048,
    max_concurrency: int = 5,
) -> dict:
    """The endpoint config's one ProductionVariant (botocore's sagemaker model): instances, or
    a ServerlessConfig with MemorySizeInMB and MaxConcurrency (and no instance fields)."""
    if endpoint_type == ENDPOINT_TYPE_INSTANCE:
        return {
            "VariantName": VARIANT_NAME,
            "ModelName": model_name,
            "InitialInstanceCount": instance_count,
            "InstanceType": instance_type,
            "InitialVariantWeight": 1.0,
        }
    if endpoint_type == ENDPOINT_TYPE_SERVERLESS:
        low, high = SERVERLESS_MAX_CONCURRENCY
        if memory_mb not in SERVERLESS_MEMORY_MB or not low <= max_concurrency <= high:
            raise ValueError(
                f"serverless takes MemorySizeInMB in {SERVERLESS_MEMORY_MB} and MaxConcurrency"
                f" {low} to {high} (got {memory_mb}, {max_concurrency})"
            )
        return {
            "VariantName": VARIANT_NAME,
            "ModelName": model_name,
            "ServerlessConfig": {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency},
        }
    raise ValueError(f"endpoint_type must be one of {', '.join(ENDPOINT_TYPES)}")


def mode_of(endpoint_config: dict) -> str:
    """An endpoint config's mode (DescribeEndpointConfig's answer)."""
    variants = endpoint_config.get("ProductionVariants") or [{}]
    return ENDPOINT_TYPE_SERVERLESS if "ServerlessConfig" in variants[0] else ENDPOINT_TYPE_INSTANCE


@dataclass(frozen=True)
class ModeChange:
    """What deploy does with an existing endpoint whose config is in `current` mode."""

    current: str
    wanted: str

    @property
    def in_place(self) -> bool:
        """True: UpdateEndpoint. False: delete the endpoint and create it again."""
        return not (
            self.current == ENDPOINT_TYPE_INSTANCE and self.wanted == ENDPOINT_TYPE_SERVERLESS
        )

    @property
    def guarded(self) -> bool:
        """Whether the update may carry the guardrails (blue/green with auto-rollback)."""
        return self.current == self.wanted

    @property
    def reason(self) -> str:
        if self.current == self.wanted:
            return f"same mode ({self.wanted}): updated in place with the deployment guardrails"
        if self.in_place:
            return (
                f"{self.current} -> {self.wanted}: updated in place without automatic rollback"
                f" (SageMaker cannot roll an endpoint back to serverless: {SERVERLESS_DOCS})"
            )
        return (
            f"{self.current} -> {self.wanted}: SageMaker cannot update an instance endpoint to"
            f" serverless ({SERVERLESS_DOCS}, Feature exclusions), so the endpoint is deleted and"
            " created again under the same name on the serverless config"
        )


def mode_change(current_config: dict, wanted: str) -> ModeChange:
    return ModeChange(mode_of(current_config), wanted)
