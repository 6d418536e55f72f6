"""Start-run integration fixtures: moto AWS, the fake KFP server, the compiled pipeline spec."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from tests.fakes import FakeClock

BUCKET = "mnistflow-data-123456789012"
TABLE = "mnistflow-runs"
SECRET_TOKEN = "kfp-sa-token-for-tests"
ROLE_ARN = "arn:aws:iam::123456789012:role/mnistflow-sagemaker-execution"
CLUSTER = "mnist-cluster"
KFP_TEST_TIMEOUT_SECONDS = 0.5
PIPELINE_SOURCE: dict[str, str] = {}


def _compile_hello_world(output: Path) -> Path:
    """Stand-in for pipeline.compile.compile_pipeline: the same parameter names, one step."""
    from kfp import compiler, dsl

    @dsl.component(base_image="python:3.12-slim")
    def say(dataset_uri: str, run_key: str) -> str:
        return f"{run_key}: {dataset_uri}"

    @dsl.pipeline(name="mnist-hello")
    def hello(
        dataset_uri: str,
        run_key: str,
        region: str,
        role_arn: str,
        training_image: str = "",
        train_instance_type: str = "ml.m5.xlarge",
        train_instance_count: int = 1,
        transform_instance_type: str = "ml.m5.xlarge",
        transform_instance_count: int = 1,
        endpoint_instance_type: str = "ml.m5.xlarge",
        endpoint_instance_count: int = 1,
        endpoint_name: str = "",
    ):
        say(dataset_uri=dataset_uri, run_key=run_key)

    compiler.Compiler().compile(hello, str(output))
    return output


@pytest.fixture(scope="session")
def pipeline_spec_file(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("spec") / "pipeline.yaml"
    try:
        from pipeline.compile import compile_pipeline
    except ImportError:
        PIPELINE_SOURCE["used"] = "hello-world stand-in"
        return _compile_hello_world(output)
    PIPELINE_SOURCE["used"] = "pipeline.compile.compile_pipeline"
    return compile_pipeline(output)


@dataclass
class LambdaContext:
    function_name: str = "mnistflow-start-run"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:mnistflow-start-run"
    aws_request_id: str = "52fdfc07-2182-154f-163f-5f0f9a621d72"
    millis_left: int = 60_000

    def get_remaining_time_in_millis(self) -> int:
        return self.millis_left


@dataclass
class AwsWorld:
    topic_arn: str
    queue_url: str
    secret_arn: str
    region: str = "us-east-1"
    _messages: list[dict[str, Any]] = field(default_factory=list)

    def item(self, run_key: str) -> dict[str, Any] | None:
        from runflow.dal.runs_table import _plain

        raw = boto3.client("dynamodb", region_name=self.region).get_item(
            TableName=TABLE, Key={"run_key": {"S": run_key}}, ConsistentRead=True
        )
        return _plain(raw["Item"]) if "Item" in raw else None

    def items(self) -> list[dict[str, Any]]:
        from runflow.dal.runs_table import _plain

        raw = boto3.client("dynamodb", region_name=self.region).scan(TableName=TABLE)
        return [_plain(i) for i in raw["Items"]]

    def messages(self) -> list[dict[str, Any]]:
        """Everything published so far, as SNS delivered it to the subscribed queue."""
        sqs = boto3.client("sqs", region_name=self.region)
        while True:
            got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            if not got.get("Messages"):
                break
            for message in got["Messages"]:
                envelope = json.loads(message["Body"])
                self._messages.append(
                    {
                        "subject": envelope.get("Subject"),
                        "message": envelope["Message"],
                        "kind": envelope["MessageAttributes"]["kind"]["Value"],
                        "run_key": envelope["MessageAttributes"]["run_key"]["Value"],
                    }
                )
                sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return list(self._messages)


@pytest.fixture
def aws(monkeypatch) -> AwsWorld:
    with mock_aws():
        region = "us-east-1"
        boto3.client("dynamodb", region_name=region).create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "run_key", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "run_key", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        sns = boto3.client("sns", region_name=region)
        topic_arn = sns.create_topic(Name="mnistflow-notifications")["TopicArn"]
        sqs = boto3.client("sqs", region_name=region)
        queue_url = sqs.create_queue(QueueName="notifications-probe")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
        secret_arn = boto3.client("secretsmanager", region_name=region).create_secret(
            Name="mnistflow/kfp-token", SecretString=SECRET_TOKEN
        )["ARN"]
        boto3.client("eks", region_name=region).create_cluster(
            name=CLUSTER,
            roleArn="arn:aws:iam::123456789012:role/eks-cluster",
            resourcesVpcConfig={"subnetIds": []},
        )
        yield AwsWorld(topic_arn=topic_arn, queue_url=queue_url, secret_arn=secret_arn)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def lambda_env(monkeypatch, aws, pipeline_spec_file, clock):
    """The environment the CDK stack sets (url mode by default), and fresh caches."""
    values = {
        "RUNS_TABLE_NAME": TABLE,
        "NOTIFICATION_TOPIC_ARN": aws.topic_arn,
        "DATA_BUCKET_NAME": BUCKET,
        "KFP_MODE": "url",
        "KFP_URL": "http://127.0.0.1:9",  # replaced by the fake server's URL in the tests
        "KFP_TOKEN_SECRET_ARN": aws.secret_arn,
        "KFP_UI_URL": "https://kfp.example.com",
        "KFP_EXPERIMENT_NAME": "mnist-uploads",
        "PIPELINE_SPEC_PATH": str(pipeline_spec_file),
        "SAGEMAKER_ROLE_ARN": ROLE_ARN,
        "TRAIN_INSTANCE_TYPE": "ml.m5.xlarge",
        "TRAIN_INSTANCE_COUNT": "1",
        "TRANSFORM_INSTANCE_TYPE": "ml.m5.large",
        "TRANSFORM_INSTANCE_COUNT": "2",
        "ENDPOINT_INSTANCE_TYPE": "ml.t2.medium",
        "ENDPOINT_INSTANCE_COUNT": "1",
        "ENDPOINT_NAME": "",
        "POWERTOOLS_SERVICE_NAME": "start-run",
        "POWERTOOLS_METRICS_NAMESPACE": "MnistFlow",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # Imported after the environment is set: Powertools reads its service name and metric
    # namespace when runflow.observability is first imported, as in Lambda's init phase.
    from runflow import composition
    from runflow.container import start_new_container
    from runflow.dal.kfp_api import KfpHttpApi
    from runflow.logic.start_run import StartRun

    # No real waiting: retries sleep on the fake clock; KFP calls give up quickly.
    monkeypatch.setattr(
        composition, "StartRun", partial(StartRun, sleep=clock.sleep, rng=lambda: 1.0)
    )
    monkeypatch.setattr(
        composition, "KfpHttpApi", partial(KfpHttpApi, timeout_seconds=KFP_TEST_TIMEOUT_SECONDS)
    )

    def reset() -> None:
        start_new_container()

    reset()
    yield monkeypatch
    reset()


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
