"""Test-wide rules: unit tests have no network, others reach 127.0.0.1 only; AWS is fake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import pytest_socket

TESTS_DIR = Path(__file__).parent
EVENTS_DIR = TESTS_DIR / "events"
DATA_DIR = TESTS_DIR / "data"
SAMPLE_DIR = TESTS_DIR.parent / "mnistflow" / "data"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1"]


def load_event(name: str) -> dict:
    """A canonical event payload from tests/events/<name>.json."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text())


@pytest.fixture(autouse=True)
def _network_policy(request):
    if (TESTS_DIR / "unit") in Path(request.node.path).parents:
        pytest_socket.disable_socket(allow_unix_socket=True)
    else:
        pytest_socket.socket_allow_hosts(LOOPBACK_HOSTS, allow_unix_socket=True)
    yield
    pytest_socket.enable_socket()


@pytest.fixture(autouse=True, scope="session")
def _quiet_jsii():
    """jsii (the CDK's Node runtime) prints a banner on Node 20, which is past its end of life;
    `./dev` sets these too. The variables are jsii's documented way to silence it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
        patch.setenv("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
        yield


@pytest.fixture(autouse=True)
def _fake_aws_environment(monkeypatch):
    """No test may find real credentials or a real endpoint."""
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SAGEMAKER",
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # boto3's default session keeps the credentials it first resolved: a test that ran with the
    # local stack's environment would hand them to every later test's boto3.client().
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
