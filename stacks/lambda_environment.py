"""The Lambdas' environments, built from the settings: one definition for the CDK stack and the
local stack. No CDK imports here, so the local stack can use it without loading the CDK.
"""

from __future__ import annotations

from stacks import names
from stacks.settings import Settings


def kfp_environment(settings: Settings, *, kfp_url: str, token_secret_arn: str) -> dict[str, str]:
    """start-run's KFP connection variables (empty strings for the other mode's)."""
    return {
        "KFP_MODE": settings.kfp_mode,
        "EKS_CLUSTER_NAME": settings.eks_cluster_name,
        "KFP_NAMESPACE": settings.kfp_namespace,
        "KFP_URL": "" if settings.uses_cluster_api else kfp_url,
        "KFP_TOKEN_SECRET_ARN": token_secret_arn,
    }


def start_run_environment(
    settings: Settings,
    *,
    kfp_environment: dict[str, str],
    table_name: str,
    topic_arn: str,
    bucket_name: str,
    sagemaker_role_arn: str,
) -> dict[str, str]:
    """The start-run Lambda's configuration: exactly the names its settings model reads."""
    return {
        "RUNS_TABLE_NAME": table_name,
        "NOTIFICATION_TOPIC_ARN": topic_arn,
        "DATA_BUCKET_NAME": bucket_name,
        **kfp_environment,
        "KFP_UI_URL": settings.kfp_ui_url,
        "KFP_EXPERIMENT_NAME": settings.kfp_experiment_name,
        "PIPELINE_SPEC_PATH": names.PIPELINE_SPEC_FILE,
        "SAGEMAKER_ROLE_ARN": sagemaker_role_arn,
        "TRAIN_INSTANCE_TYPE": settings.train_instance_type,
        "TRAIN_INSTANCE_COUNT": str(settings.train_instance_count),
        "TRANSFORM_INSTANCE_TYPE": settings.transform_instance_type,
        "TRANSFORM_INSTANCE_COUNT": str(settings.transform_instance_count),
        "ENDPOINT_INSTANCE_TYPE": settings.endpoint_instance_type,
        "ENDPOINT_INSTANCE_COUNT": str(settings.endpoint_instance_count),
        "ENDPOINT_NAME": settings.endpoint_name,
        "POWERTOOLS_SERVICE_NAME": names.POWERTOOLS_SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": names.POWERTOOLS_METRICS_NAMESPACE,
    }


def track_progress_environment(
    settings: Settings, *, table_name: str, topic_arn: str
) -> dict[str, str]:
    """The track-progress Lambda's configuration: exactly the names its settings model reads."""
    return {
        "RUNS_TABLE_NAME": table_name,
        "NOTIFICATION_TOPIC_ARN": topic_arn,
        "KFP_UI_URL": settings.kfp_ui_url,  # "" when not configured: no KFP links in emails
        "POWERTOOLS_SERVICE_NAME": names.TRACK_PROGRESS_SERVICE_NAME,
        "POWERTOOLS_METRICS_NAMESPACE": names.POWERTOOLS_METRICS_NAMESPACE,
    }
