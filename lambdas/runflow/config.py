"""The Lambdas' environment configuration (start-run, track-progress), validated at cold start.

A dataclass rather than a pydantic model: pydantic adds ~60 ms to the import and ~5 MB to the
package (see benchmarks/RESULTS.md); the checks here are few and explicit.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from runflow import contracts

KFP_MODE_CLUSTER, KFP_MODE_URL, KFP_MODES = (
    contracts.KFP_MODE_CLUSTER,
    contracts.KFP_MODE_URL,
    contracts.KFP_MODES,
)

_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
_SECRET_ARN = contracts.SECRET_ARN_PATTERN
_TOPIC_ARN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}$")
_INSTANCE_TYPE = contracts.INSTANCE_TYPE_PATTERN
# SageMaker endpoint names: 63 characters at most, alphanumerics and hyphens.
_ENDPOINT_NAME = re.compile(rf"^{contracts.PRODUCT_PREFIX}-[a-zA-Z0-9-]{{1,58}}$")
_K8S_NAME = contracts.K8S_NAME_PATTERN
_EKS_CLUSTER_NAME = contracts.EKS_CLUSTER_NAME_PATTERN
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_TABLE_NAME = re.compile(r"^[a-zA-Z0-9_.-]{3,255}$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")


class ConfigError(ValueError):
    """A missing or malformed environment variable; the message names it."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"environment variable {variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class StartRunConfig:
    region: str
    runs_table_name: str
    notification_topic_arn: str
    data_bucket_name: str
    kfp_mode: str
    eks_cluster_name: str  # cluster mode only, else ""
    kfp_namespace: str  # cluster mode: KFP's own namespace; url mode: optional profile namespace
    kfp_url: str  # url mode only, else ""
    kfp_token_secret_arn: str  # url mode only, else ""
    kfp_ui_url: str  # "" when not configured
    kfp_experiment_name: str
    pipeline_spec_path: Path
    sagemaker_role_arn: str
    train_instance_type: str
    train_instance_count: int
    transform_instance_type: str
    transform_instance_count: int
    endpoint_instance_type: str
    endpoint_instance_count: int
    endpoint_name: str  # "" = the pipeline names the endpoint per run
    max_dataset_bytes: int
    service_name: str
    metrics_namespace: str


class _Reader:
    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def required(self, name: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        value = self._environ.get(name, "").strip()
        if not value:
            raise ConfigError(name, "is missing or empty")
        return self._matching(name, value, pattern, hint)

    def optional(self, name: str, pattern: re.Pattern[str] | None = None, hint: str = "") -> str:
        value = self._environ.get(name, "").strip()
        return self._matching(name, value, pattern, hint) if value else ""

    def count(self, name: str) -> int:
        return self.positive_int(name, self.required(name))

    @staticmethod
    def positive_int(name: str, raw: str) -> int:
        if not raw.isdigit() or int(raw) < 1:
            raise ConfigError(name, f"must be a positive whole number, got {raw!r}")
        return int(raw)

    def http_url(self, name: str, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(name, f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @staticmethod
    def _matching(name: str, value: str, pattern: re.Pattern[str] | None, hint: str) -> str:
        if pattern is not None and not pattern.match(value):
            raise ConfigError(
                name, f"malformed value {value!r}{f' (expected {hint})' if hint else ''}"
            )
        return value


def load_start_run_config(environ: Mapping[str, str]) -> StartRunConfig:
    """Validates the environment; raises ConfigError naming the first bad variable."""
    env = _Reader(environ)
    region = env.required("AWS_REGION", _REGION, "an AWS region such as eu-west-1")
    kfp_mode = env.required("KFP_MODE")
    if kfp_mode not in KFP_MODES:
        raise ConfigError("KFP_MODE", f"must be one of {', '.join(KFP_MODES)}, got {kfp_mode!r}")

    eks_cluster_name = kfp_url = kfp_token_secret_arn = ""
    if kfp_mode == KFP_MODE_CLUSTER:
        eks_cluster_name = env.required(
            "EKS_CLUSTER_NAME", _EKS_CLUSTER_NAME, "an EKS cluster name"
        )
        kfp_namespace = env.required("KFP_NAMESPACE", _K8S_NAME, "a Kubernetes namespace")
    else:
        kfp_url = env.http_url("KFP_URL", env.required("KFP_URL"))
        kfp_token_secret_arn = env.required(
            "KFP_TOKEN_SECRET_ARN", _SECRET_ARN, "a Secrets Manager secret ARN"
        )
        kfp_namespace = env.optional("KFP_NAMESPACE", _K8S_NAME, "a Kubernetes namespace")

    kfp_ui_url = env.optional("KFP_UI_URL")
    if kfp_ui_url:
        kfp_ui_url = env.http_url("KFP_UI_URL", kfp_ui_url)

    spec_raw = env.required("PIPELINE_SPEC_PATH")
    # Relative paths resolve against the working directory: /var/task in Lambda.
    pipeline_spec_path = Path(spec_raw).resolve()
    if not pipeline_spec_path.is_file():
        raise ConfigError("PIPELINE_SPEC_PATH", f"no file at {str(pipeline_spec_path)!r}")

    max_raw = env.optional("MAX_DATASET_BYTES")
    max_dataset_bytes = (
        env.positive_int("MAX_DATASET_BYTES", max_raw) if max_raw else contracts.MAX_DATASET_BYTES
    )

    return StartRunConfig(
        region=region,
        runs_table_name=env.required("RUNS_TABLE_NAME", _TABLE_NAME, "a DynamoDB table name"),
        notification_topic_arn=env.required(
            "NOTIFICATION_TOPIC_ARN", _TOPIC_ARN, "an SNS topic ARN"
        ),
        data_bucket_name=env.required("DATA_BUCKET_NAME", _BUCKET_NAME, "an S3 bucket name"),
        kfp_mode=kfp_mode,
        eks_cluster_name=eks_cluster_name,
        kfp_namespace=kfp_namespace,
        kfp_url=kfp_url,
        kfp_token_secret_arn=kfp_token_secret_arn,
        kfp_ui_url=kfp_ui_url,
        kfp_experiment_name=env.required("KFP_EXPERIMENT_NAME"),
        pipeline_spec_path=pipeline_spec_path,
        sagemaker_role_arn=env.required("SAGEMAKER_ROLE_ARN", _ROLE_ARN, "an IAM role ARN"),
        train_instance_type=env.required(
            "TRAIN_INSTANCE_TYPE", _INSTANCE_TYPE, "ml.<family>.<size>"
        ),
        train_instance_count=env.count("TRAIN_INSTANCE_COUNT"),
        transform_instance_type=env.required(
            "TRANSFORM_INSTANCE_TYPE", _INSTANCE_TYPE, "ml.<family>.<size>"
        ),
        transform_instance_count=env.count("TRANSFORM_INSTANCE_COUNT"),
        endpoint_instance_type=env.required(
            "ENDPOINT_INSTANCE_TYPE", _INSTANCE_TYPE, "ml.<family>.<size>"
        ),
        endpoint_instance_count=env.count("ENDPOINT_INSTANCE_COUNT"),
        endpoint_name=env.optional(
            "ENDPOINT_NAME",
            _ENDPOINT_NAME,
            f"empty, or a SageMaker endpoint name starting with {contracts.PRODUCT_PREFIX}-",
        ),
        max_dataset_bytes=max_dataset_bytes,
        service_name=env.required("POWERTOOLS_SERVICE_NAME"),
        metrics_namespace=env.required("POWERTOOLS_METRICS_NAMESPACE"),
    )


@lru_cache(maxsize=1)
def get_config() -> StartRunConfig:
    """The container's configuration, read from os.environ on first use."""
    return load_start_run_config(os.environ)


def reset_config() -> None:
    """For tests: forget the cached configuration."""
    get_config.cache_clear()


@dataclass(frozen=True)
class TrackProgressConfig:
    region: str
    runs_table_name: str
    notification_topic_arn: str
    kfp_ui_url: str  # "" when not configured: emails then carry the record's own KFP link only
    service_name: str
    metrics_namespace: str


def load_track_progress_config(environ: Mapping[str, str]) -> TrackProgressConfig:
    """Validates the track-progress environment; raises ConfigError naming the bad variable."""
    env = _Reader(environ)
    region = env.required("AWS_REGION", _REGION, "an AWS region such as eu-west-1")
    kfp_ui_url = env.optional("KFP_UI_URL")
    return TrackProgressConfig(
        region=region,
        runs_table_name=env.required("RUNS_TABLE_NAME", _TABLE_NAME, "a DynamoDB table name"),
        notification_topic_arn=env.required(
            "NOTIFICATION_TOPIC_ARN", _TOPIC_ARN, "an SNS topic ARN"
        ),
        kfp_ui_url=env.http_url("KFP_UI_URL", kfp_ui_url) if kfp_ui_url else "",
        service_name=env.required("POWERTOOLS_SERVICE_NAME"),
        metrics_namespace=env.required("POWERTOOLS_METRICS_NAMESPACE"),
    )


@lru_cache(maxsize=1)
def get_track_progress_config() -> TrackProgressConfig:
    """The track-progress container's configuration, read from os.environ on first use."""
    return load_track_progress_config(os.environ)


def reset_track_progress_config() -> None:
    """For tests: forget the cached track-progress configuration."""
    get_track_progress_config.cache_clear()
