"""The CLI against AWS that is there but not as the user thinks: a stack not deployed in that
region, a local stack that is not running. One line each, exit 1, no traceback."""

from __future__ import annotations

import socket

import pytest
from moto import mock_aws

from mnistflow.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def credentials(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@mock_aws
def test_a_stack_not_deployed_in_the_region_says_so(capsys):
    assert main(["status", "--region", "eu-west-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "table mnistflow-runs, region eu-west-1" in err
    assert "is the stack deployed in this account and region?" in err


def test_a_local_stack_that_is_not_running_says_how_to_start_it(capsys):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["status", "--region", "us-east-1", "--endpoint-url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"status: cannot reach {url}/: if it is the local stack"), err
    assert "./dev demo --keep-running starts it" in err
