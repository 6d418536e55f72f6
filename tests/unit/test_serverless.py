"""Serverless inference: the facts the deploy step acts on, each held to its source.

Sources (read 2026-11-29):

- SageMaker developer guide, "Serverless Inference"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html; the same text at
  github.com/awsdocs/amazon-sagemaker-developer-guide, doc_source/serverless-endpoints.md):
  container support, feature exclusions, and which mode changes UpdateEndpoint allows.
- "Exclusions" of the deployment guardrails
  (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html):
  serverless endpoints are excluded from rolling deployments only.
- "Automatically scale Provisioned Concurrency for a serverless endpoint"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-autoscale.html):
  on-demand serverless endpoints scale themselves.
- "Alarms and logs for tracking metrics from serverless endpoints"
  (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-monitoring.html): the
  rollback alarms' metrics are published for serverless endpoints too.
- botocore's sagemaker and application-autoscaling models, as installed.
- The SageMaker Python SDK's defaults (aws/sagemaker-python-sdk,
  src/sagemaker/serverless/serverless_inference_config.py).
"""

from __future__ import annotations

import re

import botocore.session
import pytest
from botocore.validate import ParamValidator

from core import contracts, endpoint_alarms
from core.settings import BY_KEY, SettingError, read_context
from pipeline.steps import endpoint_mode, guardrails
from tests.fakes.settings import CLUSTER_CONTEXT

SESSION = botocore.session.get_session()
SAGEMAKER = SESSION.get_service_model("sagemaker")
AUTOSCALING = SESSION.get_service_model("application-autoscaling")

# "Serverless Inference", Container support.
CONTAINER_SUPPORT = (
    "For your endpoint container, you can choose either a SageMaker-provided container or bring"
    " your own. SageMaker provides containers for its built-in algorithms"
)
# "Serverless Inference", Feature exclusions (the product uses none of them on its endpoint).
FEATURE_EXCLUSIONS = (
    "GPUs, AWS marketplace model packages, private Docker registries, Multi-Model Endpoints,"
    " KMS keys, VPC configuration, network isolation, data capture, multiple production"
    " variants, Model Monitor, and inference pipelines"
)
MODE_CHANGE = (
    "You cannot convert your instance-based, real-time endpoint to a serverless endpoint. If you"
    " try to update your real-time endpoint to serverless, you receive a ValidationError"
    " message. You can convert a serverless endpoint to real-time, but once you make the"
    " update, you cannot roll it back to serverless."
)
# Deployment guardrails, "Exclusions".
GUARDRAILS_EXCLUSIONS = (
    "If you're doing a rolling deployment, there are additional feature-based exclusions:"
    " Serverless inference endpoints; Multi-variant inference endpoints"
)
# "Automatically scale Provisioned Concurrency for a serverless endpoint".
AUTOSCALE = (
    "Amazon SageMaker AI automatically scales in or out on-demand serverless endpoints. For"
    " serverless endpoints with Provisioned Concurrency you can use Application Auto Scaling"
)
# "Alarms and logs for tracking metrics from serverless endpoints", Common endpoint metrics.
MONITORING = (
    "Serverless endpoints also can use the Invocations4XXErrors, Invocations5XXErrors,"
    " Invocations, ModelLatency, ModelSetupTime, and MemoryUtilization metrics."
)


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def test_the_variant_of_each_mode_is_a_production_variant_botocore_accepts():
    for variant in (
        endpoint_mode.production_variant("m", "serverless", memory_mb=3072, max_concurrency=7),
        endpoint_mode.production_variant("m", "instance", instance_type="ml.m5.large"),
    ):
        report = ParamValidator().validate(
            {"EndpointConfigName": "c", "ProductionVariants": [variant]},
            SAGEMAKER.operation_model("CreateEndpointConfig").input_shape,
        )
        assert not report.has_errors(), report.generate_report()
    serverless = endpoint_mode.production_variant("m", "serverless")
    # "Specifies a serverless endpoint configuration instead of an instance-based endpoint
    # configuration" (botocore's ProductionVariant.ServerlessConfig)
    assert "instead of an instance-based" in _text(
        SAGEMAKER.shape_for("ProductionVariant").members["ServerlessConfig"].documentation
    )
    assert not {"InstanceType", "InitialInstanceCount"} & set(serverless)
    assert set(SAGEMAKER.shape_for("ProductionVariantServerlessConfig").required_members) == set(
        serverless["ServerlessConfig"]
    )


def test_the_context_keys_take_sagemakers_values_and_no_other():
    config = SAGEMAKER.shape_for("ProductionVariantServerlessConfig").members
    memory, concurrency = config["MemorySizeInMB"], config["MaxConcurrency"]
    assert "1024 MB, 2048 MB, 3072 MB, 4096 MB, 5120 MB, or 6144 MB" in _text(memory.documentation)
    assert (memory.metadata["min"], memory.metadata["max"]) == (1024, 6144)
    assert contracts.SERVERLESS_MEMORY_MB == (1024, 2048, 3072, 4096, 5120, 6144)
    assert (
        concurrency.metadata["min"],
        concurrency.metadata["max"],
    ) == contracts.SERVERLESS_MAX_CONCURRENCY
    # The SDK's defaults: memory_size_in_mb=2048, max_concurrency=5; instance stays the default.
    assert BY_KEY["serverless_memory_mb"].default == 2048
    assert BY_KEY["serverless_max_concurrency"].default == 5
    assert BY_KEY["endpoint_type"].default == "instance"
    for key in ("endpoint_type", "serverless_memory_mb", "serverless_max_concurrency"):
        assert BY_KEY[key].pipeline, key
    settings = read_context(
        {
            **CLUSTER_CONTEXT,
            "endpoint_type": "serverless",
            "serverless_memory_mb": 6144,
            "serverless_max_concurrency": 200,
        }
    )
    assert (settings.endpoint_type, settings.serverless_memory_mb) == ("serverless", 6144)


@pytest.mark.parametrize(
    ("context", "problem"),
    [
        ({"serverless_memory_mb": 1536}, "in steps of 1024"),
        ({"serverless_memory_mb": 7168}, "must be 1024 to 6144"),
        ({"serverless_max_concurrency": 0}, "must be 1 to 200"),
        ({"serverless_max_concurrency": 201}, "must be 1 to 200"),
        ({"endpoint_type": "async"}, "must be one of instance, serverless"),
    ],
)
def test_a_value_sagemaker_would_refuse_is_refused_at_synth(context, problem):
    with pytest.raises(SettingError, match=problem):
        read_context({**CLUSTER_CONTEXT, **context})


def test_the_built_in_image_is_supported_and_the_product_uses_no_excluded_feature():
    # Pinned: CONTAINER_SUPPORT and FEATURE_EXCLUSIONS above, quoted in endpoint_mode's doc.
    doc = " ".join((endpoint_mode.__doc__ or "").split())
    assert CONTAINER_SUPPORT in doc
    for excluded in ("multiple production variants", "data capture", "VPC configuration"):
        assert excluded in FEATURE_EXCLUSIONS and excluded in doc
    # One production variant, no data capture, no VPC: the serverless config the step makes.
    variant = endpoint_mode.production_variant("m", "serverless")
    assert set(variant) == {"VariantName", "ModelName", "ServerlessConfig"}


def test_a_change_of_mode_goes_as_the_serverless_page_says():
    doc = " ".join((endpoint_mode.__doc__ or "").split())
    assert MODE_CHANGE in doc
    instance = {"ProductionVariants": [{"InstanceType": "ml.m5.large"}]}
    serverless = {"ProductionVariants": [{"ServerlessConfig": {"MemorySizeInMB": 2048}}]}
    # "You cannot convert your instance-based, real-time endpoint to a serverless endpoint":
    # the endpoint is deleted and created again.
    to_serverless = endpoint_mode.mode_change(instance, "serverless")
    assert not to_serverless.in_place and "created again" in to_serverless.reason
    # "You can convert a serverless endpoint to real-time, but ... you cannot roll it back to
    # serverless": in place, without the guardrails' automatic rollback.
    to_instance = endpoint_mode.mode_change(serverless, "instance")
    assert to_instance.in_place and not to_instance.guarded
    # Same mode: in place with the guardrails.
    for config, mode in ((instance, "instance"), (serverless, "serverless")):
        same = endpoint_mode.mode_change(config, mode)
        assert same.in_place and same.guarded


def test_blue_green_guardrails_apply_to_serverless_updates_rolling_ones_would_not():
    # GUARDRAILS_EXCLUSIONS: serverless endpoints are excluded from rolling deployments only.
    assert "rolling deployment" in GUARDRAILS_EXCLUSIONS
    assert "Serverless inference endpoints" in GUARDRAILS_EXCLUSIONS
    config = guardrails.deployment_config(bake_seconds=60, alarms=["a"])
    assert "BlueGreenUpdatePolicy" in config and "RollingUpdatePolicy" not in config
    assert "RollingUpdatePolicy" in SAGEMAKER.shape_for("DeploymentConfig").members
    # The rollback alarms' metrics are among those serverless endpoints publish (MONITORING
    # spells the errors metric "Invocations5XXErrors"; the metrics page, "Invocation5XXErrors").
    published = {
        m.strip(" .") for m in MONITORING.split("use the ")[1].replace("and ", "").split(",")
    }
    for alarm in endpoint_alarms.ALARMS:
        assert alarm.metric.replace("Invocation5XX", "Invocations5XX") in published, alarm.metric


def test_serverless_endpoints_get_no_instance_autoscaling():
    # AUTOSCALE: on-demand serverless endpoints scale themselves; only Provisioned Concurrency
    # (which the product does not use) is an Application Auto Scaling dimension.
    assert "automatically scales in or out on-demand serverless endpoints" in AUTOSCALE
    dimensions = AUTOSCALING.shape_for("ScalableDimension").enum
    assert "sagemaker:variant:DesiredProvisionedConcurrency" in dimensions
    assert guardrails.SCALABLE_DIMENSION == "sagemaker:variant:DesiredInstanceCount"
    assert (
        "ProvisionedConcurrency"
        not in endpoint_mode.production_variant("m", "serverless")["ServerlessConfig"]
    )
