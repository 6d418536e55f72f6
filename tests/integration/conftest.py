"""Integration fixtures: moto in process, provisioned as the local stack provisions its emulator;
the local KFP API; each function built by its own factory from its own environment mapping."""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core import contracts
from core.run_record import RunRecord
from lambdas.composition import start_run_handler, track_progress_handler
from lambdas.dal.runs_table import RunsTableReader
from mnistflow.local.kfp_api import LocalKfpApi
from mnistflow.local.provision import LocalNames, Provisioned, provision, read_inbox
from tests.fakes import FakeClock
from tests.fakes.settings import function_environ

REGION = "us-east-1"
BUCKET = "mnistflow-data-123456789012"
TABLE = contracts.RUNS_TABLE_NAME
SECRET_TOKEN = "kfp-sa-token-for-tests"
CLUSTER = "mnist-cluster"
KFP_TEST_TIMEOUT_SECONDS = 0.5


@pytest.fixture(scope="session")
def pipeline_spec_file(tmp_path_factory) -> Path:
    from pipeline.compile import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("spec") / contracts.PIPELINE_SPEC_FILE)


FAILURE_QUEUE = "failure queue"


@dataclass
class LambdaContext:
    function_name: str = contracts.START_RUN
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:start-run"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"
    millis_left: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.millis_left


@dataclass
class AwsWorld:
    resources: Provisioned
    _messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def topic_arn(self) -> str:
        return self.resources.topic_arn

    @property
    def secret_arn(self) -> str:
        return self.resources.kfp_token_secret_arn

    @property
    def role_arn(self) -> str:
        return self.resources.sagemaker_role_arn

    @property
    def run_slots_queue_url(self) -> str:
        return self.resources.queue_urls[self.resources.names.run_slots_queue]

    @property
    def reader(self) -> RunsTableReader:
        """The product's one reader of the runs table."""
        return RunsTableReader(TABLE, lambda: _client("dynamodb"))

    def item(self, run_key: str) -> dict[str, Any] | None:
        """The stored item, as plain values."""
        return self.reader.item(run_key)

    def record(self, run_key: str) -> RunRecord | None:
        return self.reader.get(run_key)

    def items(self) -> list[dict[str, Any]]:
        return self.reader.items()

    def messages(self) -> list[dict[str, Any]]:
        """Everything published so far, as SNS delivered it to the subscribed queue."""
        self._messages += [dataclasses.asdict(e) for e in read_inbox(_client, self.resources)]
        return list(self._messages)


def _client(service: str):
    return boto3.client(service, region_name=REGION)


@pytest.fixture
def aws() -> AwsWorld:
    with mock_aws():
        resources = provision(_client, LocalNames(data_bucket=BUCKET), kfp_token=SECRET_TOKEN)
        _client("eks").create_cluster(
            name=CLUSTER,
            roleArn="arn:aws:iam::123456789012:role/eks-cluster",
            resourcesVpcConfig={"subnetIds": []},
        )
        yield AwsWorld(resources)


@pytest.fixture(autouse=True)
def canned_uploads_exist(request, monkeypatch):
    """The canned S3 events (tests/events) name object versions nobody uploaded to moto: for
    those, start-run's HeadObject answers as for an upload with no metadata. Objects a test
    really uploads are read from moto as they are."""
    from lambdas.dal.uploads import S3UploadMetadata
    from lambdas.logic.ports import UploadGone

    if request.node.get_closest_marker("real_uploads"):
        return  # the test uploads what its events name
    real = S3UploadMetadata.metadata

    def metadata(self, dataset):
        try:
            return real(self, dataset)
        except UploadGone:
            return {}

    monkeypatch.setattr(S3UploadMetadata, "metadata", metadata)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lambda_env(aws, pipeline_spec_file) -> dict[str, str]:
    """start-run's environment as the stack sets it (url mode); change it before the first
    call of `start_run` and the function's container reads the change."""
    return function_environ(
        contracts.START_RUN,
        REGION,
        kfp_mode="url",
        kfp_url="http://127.0.0.1:9",  # the KFP fixture puts its own URL here
        kfp_token_secret_name="mnistflow/kfp-token",
        kfp_token_secret_arn=aws.secret_arn,
        kfp_ui_url="https://kfp.example.com",
        kfp_experiment_name="mnist-uploads",
        train_instance_type="ml.m5.xlarge",
        transform_instance_count=2,
        endpoint_instance_type="ml.t2.medium",
        runs_table_name=TABLE,
        notification_topic_arn=aws.topic_arn,
        run_slots_queue_url=aws.run_slots_queue_url,
        data_bucket_name=BUCKET,
        pipeline_spec_path=str(pipeline_spec_file),
        sagemaker_role_arn=aws.role_arn,
    )


class LambdaFunction:
    """One function's container: built on the first call from its environment, then kept;
    `new_container()` makes the next call start a fresh one (as after a cold start)."""

    def __init__(self, build: Callable[[], Callable]) -> None:
        self._build = build
        self._handler: Callable | None = None

    @property
    def handler(self) -> Callable:
        if self._handler is None:
            self._handler = self._build()
        return self._handler

    def __call__(self, event: dict[str, Any], context: Any = None) -> Any:
        return self.handler(event, context or LambdaContext())

    def new_container(self) -> None:
        self._handler = None

    def invoke_async(self, event: dict[str, Any], request_id: str = "") -> Any:
        """As Lambda runs an asynchronous event: up to LAMBDA_ASYNC_ATTEMPTS attempts with one
        request id; the result of the first that returns, else FAILURE_QUEUE (the destination
        keeps the event). No wait between attempts: the clock is the test's."""
        context = LambdaContext(aws_request_id=request_id or str(uuid.uuid4()))
        for _attempt in range(contracts.LAMBDA_ASYNC_ATTEMPTS):
            try:
                return self(event, context)
            except Exception:  # noqa: BLE001, S112 - a function error, as Lambda sees it
                continue
        return FAILURE_QUEUE


@pytest.fixture
def start_run(lambda_env, clock) -> LambdaFunction:
    """The start-run function: retries sleep on the fake clock, KFP calls give up quickly."""
    return LambdaFunction(
        lambda: start_run_handler(
            lambda_env,
            sleep=clock.sleep,
            rng=lambda: 1.0,
            kfp_timeout_seconds=KFP_TEST_TIMEOUT_SECONDS,
        )
    )


@pytest.fixture
def track_env(aws) -> dict[str, str]:
    return function_environ(
        contracts.TRACK_PROGRESS,
        REGION,
        kfp_ui_url="https://kfp.example.com",
        runs_table_name=TABLE,
        notification_topic_arn=aws.topic_arn,
        run_slots_queue_url=aws.run_slots_queue_url,
    )


@pytest.fixture
def track_progress(track_env) -> LambdaFunction:
    from lambdas.observability import metrics

    function = LambdaFunction(lambda: track_progress_handler(track_env))
    yield function
    metrics.clear_metrics()


@pytest.fixture
def kfp(lambda_env):
    """The local KFP API, accepting the secret's token; start-run is pointed at it."""
    with LocalKfpApi(accept_token=SECRET_TOKEN) as server:
        lambda_env["KFP_URL"] = server.url
        yield server


@dataclass
class TestCa:
    ca_pem: str
    server_context: ssl.SSLContext


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory) -> TestCa:
    """A throwaway CA and a server certificate for 127.0.0.1, as an EKS endpoint would have."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes-test-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    (folder / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM).decode()
    return TestCa(ca_pem=ca_pem, server_context=context)
