"""Instance or serverless endpoints: the production variant of each mode, and whether a change
of mode needs a new endpoint. For the deploy step to call (pipeline/steps/steps.py, deploy).

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
back to serverless." So a change of mode never updates in place: it creates a new endpoint
and retires the old one (`mode_change`).
"""

from __future__ import annotations

from dataclasses import dataclass

ENDPOINT_TYPE_INSTANCE = "instance"
ENDPOINT_TYPE_SERVERLESS = "serverless"
ENDPOINT_TYPES = (ENDPOINT_TYPE_INSTANCE, ENDPOINT_TYPE_SERVERLESS)
# botocore's sagemaker model, ProductionVariantServerlessConfig: MemorySizeInMB "1024 MB,
# 2048 MB, 3072 MB, 4096 MB, 5120 MB, or 6144 MB"; MaxConcurrency 1 to 200.
SERVERLESS_MEMORY_MB = tuple(1024 * n for n in range(1, 7))
SERVERLESS_MAX_CONCURRENCY = (1, 200)
SERVERLESS_DOCS = "https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html"
VARIANT_NAME = "AllTraffic"


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
            "InstanceType": instance_type,
            "InitialInstanceCount": instance_count,
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
        """True: UpdateEndpoint (same mode). False: create a new endpoint, retire the old."""
        return self.current == self.wanted

    @property
    def reason(self) -> str:
        if self.in_place:
            return f"same mode ({self.wanted}): updated in place"
        return (
            f"{self.current} -> {self.wanted}: SageMaker cannot update an endpoint between"
            f" instances and serverless ({SERVERLESS_DOCS}, Feature exclusions), so a new"
            " endpoint is created and the old one is deleted once the new one is in service"
        )


def mode_change(current_config: dict, wanted: str) -> ModeChange:
    return ModeChange(mode_of(current_config), wanted)
