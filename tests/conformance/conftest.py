"""Conformance fixtures: the local KFP API (with or without the executor that runs its runs),
and the real kfp.Client pointed at it, kept from the machine's own KFP settings."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import kfp
import pytest

from core import contracts, endpoint_alarms
from mnistflow.local.kfp_api import LocalKfpApi
from mnistflow.local.run_executor import LocalRunExecutor
from tests.conformance.tiny_pipeline import compile_tiny

TOKEN = "conformance-token"
POLL_SECONDS = 0.05
T = TypeVar("T")


@pytest.fixture(autouse=True)
def _sdk_of_its_own(tmp_path, monkeypatch):
    """No KFP context file, namespace file or KF_PIPELINES_* variable of this machine reaches
    the client (kfp/client/client.py reads all three)."""
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "kfp-context.json"))
    monkeypatch.setattr(kfp.Client, "_NAMESPACE_PATH", str(tmp_path / "no-namespace-file"))
    for name in (
        "KF_PIPELINES_ENDPOINT",
        "KF_PIPELINES_UI_ENDPOINT",
        "KF_PIPELINES_DEFAULT_EXPERIMENT_NAME",
        "KF_PIPELINES_OVERRIDE_EXPERIMENT_NAME",
    ):
        monkeypatch.delenv(name, raising=False)


def connect(api: LocalKfpApi, **kwargs: Any) -> kfp.Client:
    """kfp.Client as a notebook makes it: the API's URL and the bearer token it takes."""
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", FutureWarning
        )  # "only works with KFP v2.0.0-beta.2 and later"
        return kfp.Client(host=api.url, existing_token=TOKEN, **kwargs)


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Reads until `done` holds, or fails at the deadline with the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still {value!r} after {timeout} s")
        time.sleep(POLL_SECONDS)


@pytest.fixture
def api() -> Iterator[LocalKfpApi]:
    """No executor: runs stay as the API left them (PENDING, or CANCELING once terminated)."""
    with LocalKfpApi(accept_token=TOKEN) as server:
        yield server


@pytest.fixture
def client(api) -> kfp.Client:
    return connect(api)


@pytest.fixture
def running_api(tmp_path) -> Iterator[LocalKfpApi]:
    """With the local stack's executor: each run executes with kfp.local, in a process."""
    executor = LocalRunExecutor({}, tmp_path)
    with LocalKfpApi(accept_token=TOKEN, executor=executor) as server:
        yield server


@pytest.fixture(scope="session")
def product_spec(tmp_path_factory) -> Path:
    """The product's pipeline, compiled as start-run submits it."""
    from pipeline.compile import compile_pipeline

    return compile_pipeline(tmp_path_factory.mktemp("spec") / contracts.PIPELINE_SPEC_FILE)


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory) -> Path:
    return compile_tiny(tmp_path_factory.mktemp("tiny") / "tiny.yaml")


def product_arguments(**overrides: Any) -> dict[str, Any]:
    """The product pipeline's required parameters (the rest have defaults)."""
    return {
        "dataset_uri": "s3://mnistflow-conformance/incoming/mnist.pkl.gz",
        "dataset_version": "",
        "run_key": "mnist-0123456789ab",
        "region": "us-east-1",
        "sagemaker_role_arn": "arn:aws:iam::123456789012:role/mnistflow-sagemaker",
        "event_bus_name": contracts.PIPELINE_EVENT_BUS,
        "endpoint_alarm_names": endpoint_alarms.alarm_names("mnist-classifier"),
        **overrides,
    }
