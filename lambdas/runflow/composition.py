"""Builds the start-run service from the configuration: the one place adapters meet logic.

Built on first use and cached per container, so clients and caches (EKS endpoint and CA,
the KFP token, the parsed pipeline spec) survive between invocations; reset for tests.
"""

from __future__ import annotations

import ssl
import threading
from functools import lru_cache, partial

from runflow.config import KFP_MODE_CLUSTER, StartRunConfig, get_config
from runflow.dal.aws_clients import aws_client
from runflow.dal.eks_token import ClusterAccess, EksTokenSource, describe_cluster
from runflow.dal.kfp_api import KfpHttpApi, eks_proxy_base_url
from runflow.dal.pipeline_spec import PipelineSpecFile
from runflow.dal.runs_table import DynamoRunsRepository
from runflow.dal.secrets import SecretBearerToken
from runflow.dal.topic import SnsNotifier
from runflow.logic.ports import KfpCallFailed, PipelineSettings
from runflow.logic.start_run import StartRun
from runflow.observability import configure_observability


class ClusterDirectory:
    """eks:DescribeCluster once per container; a failed lookup is tried again next call."""

    def __init__(self, config: StartRunConfig):
        self._config = config
        self._access: ClusterAccess | None = None
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def access(self) -> ClusterAccess:
        with self._lock:
            if self._access is None:
                eks = aws_client("eks", self._config.region)
                self._access = describe_cluster(eks, self._config.eks_cluster_name)
            return self._access

    def base_url(self) -> str:
        return eks_proxy_base_url(self.access().endpoint, self._config.kfp_namespace)

    def ssl_context(self) -> ssl.SSLContext:
        access = self.access()
        with self._lock:
            if self._ssl is None:
                try:
                    context = ssl.create_default_context(cadata=access.ca_pem or None)
                except (ssl.SSLError, ValueError) as error:
                    raise KfpCallFailed(
                        KfpCallFailed.PERMANENT,
                        f"the cluster's CA certificate is unusable: {error}",
                    ) from error
                self._ssl = context
            return self._ssl


def what_to_check(config: StartRunConfig) -> str:
    if config.kfp_mode == KFP_MODE_CLUSTER:
        return (
            f"that EKS cluster {config.eks_cluster_name} exists and its API endpoint is reachable"
            f" from the function; that the function's role has an EKS access entry for"
            f" namespace {config.kfp_namespace}; that KFP's ml-pipeline service runs in"
            f" {config.kfp_namespace}."
        )
    return (
        f"that {config.kfp_url} answers KFP's v2beta1 API; that the token in"
        f" {config.kfp_token_secret_arn} is valid (audience pipelines.kubeflow.org)"
        + (f" and may use namespace {config.kfp_namespace}" if config.kfp_namespace else "")
        + "."
    )


def kfp_api(config: StartRunConfig) -> KfpHttpApi:
    if config.kfp_mode == KFP_MODE_CLUSTER:
        cluster = ClusterDirectory(config)
        tokens = EksTokenSource(config.eks_cluster_name, partial(aws_client, "sts", config.region))
        # Standalone KFP behind the cluster API: experiments and runs carry no namespace.
        return KfpHttpApi(cluster.base_url, tokens, ssl_context=cluster.ssl_context)
    secret = SecretBearerToken(
        config.kfp_token_secret_arn, partial(aws_client, "secretsmanager", config.region)
    )
    return KfpHttpApi(lambda: config.kfp_url, secret, namespace=config.kfp_namespace)


@lru_cache(maxsize=1)
def start_run_service() -> StartRun:
    config = get_config()
    configure_observability(config.service_name, config.metrics_namespace)
    settings = PipelineSettings(
        experiment_name=config.kfp_experiment_name,
        region=config.region,
        role_arn=config.sagemaker_role_arn,
        train_instance_type=config.train_instance_type,
        train_instance_count=config.train_instance_count,
        transform_instance_type=config.transform_instance_type,
        transform_instance_count=config.transform_instance_count,
        endpoint_instance_type=config.endpoint_instance_type,
        endpoint_instance_count=config.endpoint_instance_count,
        endpoint_name=config.endpoint_name,
        data_bucket=config.data_bucket_name,
        max_dataset_bytes=config.max_dataset_bytes,
        ui_url=config.kfp_ui_url,
        connection_hint=what_to_check(config),
    )
    return StartRun(
        runs=DynamoRunsRepository(
            config.runs_table_name, partial(aws_client, "dynamodb", config.region)
        ),
        notifier=SnsNotifier(
            config.notification_topic_arn, partial(aws_client, "sns", config.region)
        ),
        kfp=kfp_api(config),
        pipeline_spec=PipelineSpecFile(config.pipeline_spec_path),
        settings=settings,
    )


def reset_start_run_service() -> None:
    """For tests: forget the service and everything it cached."""
    start_run_service.cache_clear()
