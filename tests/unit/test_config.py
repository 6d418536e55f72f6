"""The start-run configuration: validated at cold start, failing with the variable's name."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from runflow import contracts
from runflow.config import ConfigError, load_start_run_config

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def environ(tmp_path) -> dict[str, str]:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text("pipelineInfo: {name: x}\nroot: {}\n")
    return {
        "AWS_REGION": "eu-west-1",
        "RUNS_TABLE_NAME": "mnistflow-runs",
        "NOTIFICATION_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:mnistflow-notifications",
        "DATA_BUCKET_NAME": "mnistflow-data-123456789012",
        "KFP_MODE": "cluster",
        "EKS_CLUSTER_NAME": "mnist-cluster",
        "KFP_NAMESPACE": "kubeflow",
        "KFP_EXPERIMENT_NAME": "mnist-uploads",
        "PIPELINE_SPEC_PATH": str(spec),
        "SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/mnistflow-sagemaker",
        "TRAIN_INSTANCE_TYPE": "ml.m5.xlarge",
        "TRAIN_INSTANCE_COUNT": "1",
        "TRANSFORM_INSTANCE_TYPE": "ml.m5.large",
        "TRANSFORM_INSTANCE_COUNT": "1",
        "ENDPOINT_INSTANCE_TYPE": "ml.t2.medium",
        "ENDPOINT_INSTANCE_COUNT": "1",
        "ENDPOINT_NAME": "",
        "POWERTOOLS_SERVICE_NAME": "start-run",
        "POWERTOOLS_METRICS_NAMESPACE": "MnistFlow",
    }


def test_cluster_mode_configuration_is_read(environ):
    # Given the variables the CDK stack sets for cluster mode
    # When the configuration is loaded
    config = load_start_run_config(environ)

    # Then the values come through typed, with the documented defaults
    assert config.kfp_mode == "cluster" and config.eks_cluster_name == "mnist-cluster"
    assert config.train_instance_count == 1 and isinstance(config.train_instance_count, int)
    assert config.max_dataset_bytes == contracts.MAX_DATASET_BYTES
    assert config.kfp_ui_url == "" and config.endpoint_name == ""


def test_url_mode_needs_url_and_secret_but_not_the_cluster(environ):
    # Given url mode with a URL (trailing slash) and a token secret, no cluster
    for name in ("EKS_CLUSTER_NAME", "KFP_NAMESPACE"):
        environ.pop(name)
    environ.update(
        KFP_MODE="url",
        KFP_URL="https://kfp.internal.example.com/pipeline/",
        KFP_TOKEN_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:123456789012:secret:kfp-AbCdEf",
    )

    # When it is loaded, Then the URL is normalised and the namespace optional
    config = load_start_run_config(environ)
    assert config.kfp_url == "https://kfp.internal.example.com/pipeline"
    assert config.kfp_namespace == ""


def test_relative_spec_path_resolves_against_the_working_directory(environ, monkeypatch):
    # Given a relative path, as in the Lambda package (/var/task is the working directory)
    spec = Path(environ["PIPELINE_SPEC_PATH"])
    monkeypatch.chdir(spec.parent)
    environ["PIPELINE_SPEC_PATH"] = spec.name

    # When loaded, Then it points at the file in the working directory
    assert load_start_run_config(environ).pipeline_spec_path == spec.resolve()


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("RUNS_TABLE_NAME", None, "is missing or empty"),
        ("NOTIFICATION_TOPIC_ARN", "not-an-arn", "malformed value"),
        ("DATA_BUCKET_NAME", "", "is missing or empty"),
        ("KFP_MODE", "direct", "must be one of cluster, url"),
        ("EKS_CLUSTER_NAME", None, "is missing or empty"),
        ("KFP_NAMESPACE", "Kube_Flow", "malformed value"),
        ("KFP_EXPERIMENT_NAME", None, "is missing or empty"),
        ("PIPELINE_SPEC_PATH", "/nowhere/pipeline.yaml", "no file at"),
        ("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123:role/x", "malformed value"),
        ("TRAIN_INSTANCE_TYPE", "m5.xlarge", "malformed value"),
        ("TRAIN_INSTANCE_COUNT", "one", "positive whole number"),
        ("TRANSFORM_INSTANCE_COUNT", "0", "positive whole number"),
        ("ENDPOINT_INSTANCE_COUNT", "-1", "positive whole number"),
        ("ENDPOINT_NAME", "prod-endpoint", "starting with mnist-"),
        ("MAX_DATASET_BYTES", "2GB", "positive whole number"),
        ("KFP_UI_URL", "kfp.example.com", "must be an http(s) URL"),
        ("AWS_REGION", "Ireland", "malformed value"),
        ("POWERTOOLS_METRICS_NAMESPACE", None, "is missing or empty"),
    ],
)
def test_bad_variable_is_named(environ, variable, value, problem):
    # Given one missing or malformed variable
    if value is None:
        environ.pop(variable)
    else:
        environ[variable] = value

    # When the configuration is loaded, Then the error names the variable and the problem
    with pytest.raises(
        ConfigError, match=f"^environment variable {variable}: .*{re.escape(problem)}"
    ):
        load_start_run_config(environ)


@pytest.mark.parametrize("missing", ["KFP_URL", "KFP_TOKEN_SECRET_ARN"])
def test_url_mode_without_its_variables_is_named(environ, missing):
    environ.update(
        KFP_MODE="url",
        KFP_URL="https://kfp.example.com",
        KFP_TOKEN_SECRET_ARN="arn:aws:secretsmanager:eu-west-1:123456789012:secret:kfp-AbCdEf",
    )
    environ.pop(missing)
    with pytest.raises(ConfigError) as raised:
        load_start_run_config(environ)
    assert raised.value.variable == missing


def test_the_lambda_init_fails_naming_the_variable(environ):
    # Given the handler's environment without TRAIN_INSTANCE_COUNT
    environ.pop("TRAIN_INSTANCE_COUNT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "EKS_"))}
    env.update(environ, PYTHONPATH=str(REPO / "lambdas"))

    # When Lambda's init phase imports the handler module
    result = subprocess.run(
        [sys.executable, "-c", "import runflow.handlers.start_run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # Then the import fails and the error names the variable
    assert result.returncode != 0
    assert "ConfigError: environment variable TRAIN_INSTANCE_COUNT: is missing or empty" in (
        result.stderr
    )
