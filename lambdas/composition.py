"""Where adapters meet logic: one factory per function, each from a configuration read once
from an environment mapping (the function's own: `os.environ` in Lambda, a mapping of its own
on the local stack and in tests, so two functions in one process never share settings).

A factory's imports are its own, inside it: track-progress's cold start never loads the EKS
token, KFP HTTP, Secrets Manager and pipeline-spec code that only start-run uses.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from core import contracts
from core.settings import BY_KEY, SettingError, Settings, read_environment
from lambdas.dal.aws_clients import AwsClients
from lambdas.observability import configure_observability, logger, metrics

Handler = Callable[[dict[str, Any], Any], Any]


def start_run_handler(environ: Mapping[str, str], **options: Any) -> Handler:
    """The start-run Lambda; `options` go to `start_run_service` (the tests' clock, timeouts)."""
    settings = read_environment(contracts.START_RUN, environ)
    clients = AwsClients(settings.aws_region, environ)
    service = start_run_service(settings, clients, **options)

    from lambdas.dal.run_slots_queue import is_slot_event

    def handle(event: dict[str, Any], context: Any) -> Any:
        if contracts.is_dry_run(event):  # mnistflow verify: reach KFP, start nothing
            return service.check_kfp()
        seconds_left = lambda: context.get_remaining_time_in_millis() / 1000  # noqa: E731
        if is_slot_event(event):  # "a slot is free", from the run-slots queue
            return service.handle_slot_free(event, seconds_left, context.aws_request_id)
        # Lambda keeps the request id across the retries of an asynchronous invocation.
        return service.handle_notification(event, seconds_left, context.aws_request_id)

    return _lambda_handler(settings, handle, service, clients)


def track_progress_handler(environ: Mapping[str, str]) -> Handler:
    """The track-progress Lambda."""
    settings = read_environment(contracts.TRACK_PROGRESS, environ)
    clients = AwsClients(settings.aws_region, environ)
    service = track_progress_service(settings, clients)
    return _lambda_handler(
        settings,
        lambda event, context: service.handle(event, context.aws_request_id),
        service,
        clients,
    )


def watchdog_handler(environ: Mapping[str, str], **options: Any) -> Handler:
    """The stuck-run watchdog, run on a schedule (the event itself carries nothing it needs);
    `options` go to `watchdog_service` (the tests' clock, KFP timeout)."""
    settings = read_environment(contracts.WATCHDOG, environ)
    clients = AwsClients(settings.aws_region, environ)
    service = watchdog_service(settings, clients, **options)
    return _lambda_handler(settings, lambda event, context: service.run(), service, clients)


def _lambda_handler(settings: Settings, handle: Handler, service: Any, clients: AwsClients):
    """Powertools' decorators, in one fixed order, around `handle`. The handler keeps its
    container's `service` and `clients` as attributes, for hosts that look inside (tests)."""

    @logger.inject_lambda_context(clear_state=True)
    @metrics.log_metrics
    def handler(event: dict[str, Any], context: Any) -> Any:
        configure_observability(
            settings.powertools_service_name, settings.powertools_metrics_namespace
        )
        return handle(event, context)

    handler.service = service
    handler.clients = clients
    return handler


def start_run_service(
    settings: Settings,
    clients: AwsClients,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] | None = None,
    kfp_timeout_seconds: float | None = None,
):
    from lambdas.dal.kfp_api import KFP_REQUEST_TIMEOUT_SECONDS
    from lambdas.dal.pipeline_spec import PipelineSpecFile
    from lambdas.dal.runs_table import DynamoRunsRepository
    from lambdas.dal.topic import SnsNotifier
    from lambdas.dal.uploads import S3UploadMetadata
    from lambdas.logic.start_run import StartRun

    # Relative paths resolve against the working directory: /var/task in Lambda.
    spec_path = Path(settings.pipeline_spec_path).resolve()
    if not spec_path.is_file():
        parameter = BY_KEY["pipeline_spec_path"]
        raise SettingError(
            parameter.key, f"no file at {str(spec_path)!r}", where=parameter.env_name
        )
    kfp = _kfp_api(settings, clients, kfp_timeout_seconds or KFP_REQUEST_TIMEOUT_SECONDS)
    return StartRun(
        runs=DynamoRunsRepository(settings.runs_table_name, clients.factory("dynamodb")),
        notifier=SnsNotifier(settings.notification_topic_arn, clients.factory("sns")),
        kfp=kfp,
        pipeline_spec=PipelineSpecFile(spec_path, settings.step_image_uri),
        settings=settings,
        uploads=S3UploadMetadata(clients.factory("s3")),
        **_slots(settings, clients),
        connection_hint=what_to_check(settings),
        sleep=sleep,
        **({"rng": rng} if rng else {}),
    )


def track_progress_service(settings: Settings, clients: AwsClients):
    from lambdas.dal.price_list import CLIENT_TIMEOUTS, PRICING_REGION, PriceList
    from lambdas.dal.runs_table import DynamoRunProgress
    from lambdas.dal.topic import SnsNotifier
    from lambdas.logic.track_progress import TrackProgress

    return TrackProgress(
        runs=DynamoRunProgress(settings.runs_table_name, clients.factory("dynamodb")),
        notifier=SnsNotifier(settings.notification_topic_arn, clients.factory("sns")),
        kfp_ui_url=settings.kfp_ui_url,
        emulator_url=clients.endpoint_url or "",
        prices=PriceList(clients.in_region(PRICING_REGION, **CLIENT_TIMEOUTS).factory("pricing")),
        **_slots(settings, clients),
    )


def _slots(settings: Settings, clients: AwsClients) -> dict[str, Any]:
    """The run slots in the runs table, and the queue that says one is free."""
    from lambdas.dal.run_slots_queue import SqsSlotSignal
    from lambdas.dal.runs_table import DynamoRunSlots

    return {
        "slots": DynamoRunSlots(settings.runs_table_name, clients.factory("dynamodb")),
        "slot_signal": SqsSlotSignal(settings.run_slots_queue_url, clients.factory("sqs")),
    }


def watchdog_service(
    settings: Settings,
    clients: AwsClients,
    *,
    clock: Callable[[], float] = time.time,
    kfp_timeout_seconds: float | None = None,
):
    from lambdas.dal.kfp_api import KFP_REQUEST_TIMEOUT_SECONDS
    from lambdas.dal.runs_table import DynamoRunProgress, DynamoRunsRepository, RunsTableReader
    from lambdas.dal.sagemaker_endpoints import SageMakerEndpoints
    from lambdas.dal.topic import SnsNotifier
    from lambdas.logic.watchdog import Watchdog, WatchdogPolicy

    ddb = clients.factory("dynamodb")
    return Watchdog(
        records=RunsTableReader(settings.runs_table_name, ddb).scan,
        runs=DynamoRunsRepository(settings.runs_table_name, ddb),
        progress=DynamoRunProgress(settings.runs_table_name, ddb),
        notifier=SnsNotifier(settings.notification_topic_arn, clients.factory("sns")),
        kfp=_kfp_api(settings, clients, kfp_timeout_seconds or KFP_REQUEST_TIMEOUT_SECONDS),
        settings=settings,
        policy=WatchdogPolicy.from_settings(settings),
        connection_hint=what_to_check(settings),
        clock=clock,
        endpoints=SageMakerEndpoints(
            clients.factory("sagemaker"), clients.factory("s3"), settings.data_bucket_name
        ),
        **_slots(settings, clients),
    )


class ClusterDirectory:
    """eks:DescribeCluster once per container; a failed lookup is tried again next call."""

    def __init__(self, settings: Settings, clients: AwsClients):
        self._settings = settings
        self._clients = clients
        self._access = None
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def access(self):
        from lambdas.dal.eks_token import describe_cluster

        with self._lock:
            if self._access is None:
                self._access = describe_cluster(
                    self._clients("eks"), self._settings.eks_cluster_name
                )
            return self._access

    def base_url(self) -> str:
        from lambdas.dal.kfp_api import eks_proxy_base_url

        return eks_proxy_base_url(
            self.access().endpoint, self._settings.kfp_namespace, self._settings.kfp_service_port
        )

    def ssl_context(self) -> ssl.SSLContext:
        from lambdas.logic.ports import KfpCallFailed

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


def what_to_check(settings: Settings) -> str:
    if settings.kfp_mode == contracts.KFP_MODE_CLUSTER:
        return (
            f"that EKS cluster {settings.eks_cluster_name} exists and its API endpoint is"
            f" reachable from the function; that the function's role has an EKS access entry for"
            f" namespace {settings.kfp_namespace}; that KFP's ml-pipeline service runs in"
            f" {settings.kfp_namespace}."
        )
    return (
        f"that {settings.kfp_url} answers KFP's v2beta1 API; that the token in"
        f" {settings.kfp_token_secret_arn} is valid (audience pipelines.kubeflow.org)"
        + (f" and may use namespace {settings.kfp_namespace}" if settings.kfp_namespace else "")
        + "."
    )


def _kfp_api(settings: Settings, clients: AwsClients, timeout_seconds: float):
    from lambdas.dal.kfp_api import KfpHttpApi

    if settings.kfp_mode == contracts.KFP_MODE_CLUSTER:
        from lambdas.dal.eks_token import EksTokenSource

        cluster = ClusterDirectory(settings, clients)
        tokens = EksTokenSource(settings.eks_cluster_name, clients.factory("sts"))
        # Standalone KFP behind the cluster API: experiments and runs carry no namespace.
        return KfpHttpApi(
            cluster.base_url,
            tokens,
            ssl_context=cluster.ssl_context,
            timeout_seconds=timeout_seconds,
        )
    from lambdas.dal.secrets import SecretBearerToken

    secret = SecretBearerToken(settings.kfp_token_secret_arn, clients.factory("secretsmanager"))
    return KfpHttpApi(
        partial(str, settings.kfp_url.rstrip("/")),
        secret,
        namespace=settings.kfp_namespace,
        timeout_seconds=timeout_seconds,
    )
