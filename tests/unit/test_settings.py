"""The settings schema: one declaration per setting, and every reader of it agrees.

The CDK context, a function's environment (written by the stack, read at cold start), the
pipeline's signature and the runtime parameters start-run submits all come from
core.settings.PARAMETERS; these tests hold them to each other.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import contracts
from core.settings import (
    BY_KEY,
    CONTEXT_KEYS,
    PARAMETERS,
    REQUIRED,
    SettingError,
    cdk_json_context,
    function_parameters,
    pipeline_parameters,
    read_context,
    read_environment,
    run_parameters,
)
from tests.fakes.settings import CLUSTER_CONTEXT, STACK_VALUES
from tests.fakes.settings import function_environ as _environ

REPO = Path(__file__).resolve().parents[2]


# -- one declaration, every reader --------------------------------------------------------


def test_every_parameter_has_a_doc_line_and_a_unique_key_and_variable():
    keys = [p.key for p in PARAMETERS]
    variables = [p.env_name for p in PARAMETERS if p.functions]
    assert len(keys) == len(set(keys))
    assert len(variables) == len(set(variables))
    for parameter in PARAMETERS:
        assert parameter.doc.strip(), parameter.key
        assert parameter.source in ("context", "stack", "lambda", "run"), parameter.key


def test_lambda_variable_names_are_ones_cloudformation_accepts():
    # CloudFormation's AWS::Lambda::Function schema: Environment.Variables keys match
    # [a-zA-Z]([a-zA-Z0-9_])+ (two characters at least); `k` would be refused.
    for parameter in PARAMETERS:
        if parameter.functions:
            assert re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]+", parameter.env_name), parameter.key


def test_a_context_key_a_function_reads_reaches_it_under_its_variable():
    # Given every function's environment built from a context that changes every default
    for function in contracts.FUNCTIONS:
        environ = _environ(function, train_instance_count=3, kfp_ui_url="https://kfp.example.com")
        # When the function reads it back
        settings = read_environment(function, environ)
        # Then every parameter of the function came through, with the context's values
        assert set(settings) == {p.key for p in function_parameters(function)}
        assert settings.kfp_ui_url == "https://kfp.example.com"
        if function == contracts.START_RUN:
            assert settings.train_instance_count == 3
            assert isinstance(settings.train_instance_count, int)


def test_start_run_passes_every_pipeline_parameter_from_its_configuration():
    # Given start-run's configuration, when one run's parameters are made
    settings = read_environment(contracts.START_RUN, _environ(contracts.START_RUN, k=32))
    parameters = run_parameters(
        settings,
        dataset_uri="s3://b/incoming/x.npz",
        dataset_version="v1",
        run_key="mnist-0123456789ab",
        region="r",
    )
    # Then they are exactly the pipeline's parameters, the configured ones from the settings
    assert set(parameters) == {p.key for p in pipeline_parameters()}
    assert parameters["k"] == 32
    assert parameters["sagemaker_role_arn"] == STACK_VALUES["sagemaker_role_arn"]


def test_cdk_json_holds_only_declared_keys_and_cdk_feature_flags():
    for key in cdk_json_context():
        assert key in CONTEXT_KEYS or key.startswith("@aws-cdk/"), key


def test_the_deploy_guide_documents_every_context_key_with_its_default():
    # Given the context table of docs/deploy.md
    guide = (REPO / "docs" / "deploy.md").read_text()
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]*) \|", guide, flags=re.MULTILINE))
    # Then each context key has its line, and the line gives the schema's default
    for key in CONTEXT_KEYS:
        assert key in rows, f"docs/deploy.md has no line for {key}"
        default = BY_KEY[key].default
        shown = "" if default in ("", (), None) else str(default)
        if isinstance(default, bool):  # as cdk.json spells it
            shown = str(default).lower()
        if shown:
            assert shown in rows[key], (key, rows[key])


# -- the context ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "key", "problem"),
    [
        ({"kfp_mode": "proxy"}, "kfp_mode", "must be one of cluster, url"),
        ({"eks_cluster_name": ""}, "eks_cluster_name", "required when kfp_mode is 'cluster'"),
        ({"train_instance_count": "two"}, "train_instance_count", "whole number"),
        ({"train_instance_count": 11}, "train_instance_count", "must be 1 to 10"),
        ({"k": 1}, "k", "must be 2 to 256"),
        ({"endpoint_name": "prod-endpoint"}, "endpoint_name", "starting with 'mnist-'"),
        ({"kfp_mode": "url", "kfp_url": ""}, "kfp_url", "required when kfp_mode is 'url'"),
        ({"vpc_id": "vpc-0123456789abcdef0"}, "subnet_ids", "go together"),
        ({"notification_emails": "a@example.com,a@example.com"}, "notification_emails", "twice"),
        # An empty value would pass every check: only leaving the key out gives the default
        ({"kfp_namespace": ""}, "kfp_namespace", "must not be empty (leave it out"),
        ({"train_instance_type": " "}, "train_instance_type", "must not be empty"),
        ({"kfp_experiment_name": ""}, "kfp_experiment_name", "must not be empty"),
        # A run's own SageMaker calls would be denied by the InstanceTypes condition
        (
            {"allowed_instance_types": ["ml.m5.large"], "endpoint_instance_type": "ml.t2.medium"},
            "endpoint_instance_type",
            "is not in allowed_instance_types",
        ),
        # Step images must be pinned: a moving tag changes what a run runs under it
        ({"step_image": "registry.example.com/ml/steps"}, "step_image", "is not pinned"),
        ({"step_image": "registry.example.com/ml/steps:latest"}, "step_image", "not pinned"),
        ({"step_image": "Registry.example.com/ML/Steps:1"}, "step_image", "malformed value"),
    ],
)
def test_a_bad_context_value_names_the_key(context, key, problem):
    with pytest.raises(SettingError) as raised:
        read_context({**CLUSTER_CONTEXT, **context})
    assert raised.value.key == key
    assert str(raised.value).startswith(f"CDK context '{key}': ")
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    ("key", "closest"),
    [
        ("kfp_mod", "kfp_mode"),
        ("train_instance_cont", "train_instance_count"),
        ("kk", "k"),
        # Spelled the way a CLI flag or an environment variable is
        ("kfp-mode", "kfp_mode"),
        ("KFP_MODE", "kfp_mode"),
        ("Train-Instance-Type", "train_instance_type"),
    ],
)
def test_an_unknown_context_key_names_the_closest_known_key(key, closest):
    with pytest.raises(SettingError) as raised:
        read_context({**CLUSTER_CONTEXT, key: "x"})
    assert str(raised.value) == (
        f"CDK context '{key}': unknown context key; did you mean '{closest}'?"
    )


def test_an_unknown_key_with_nothing_close_says_so():
    with pytest.raises(SettingError, match="^CDK context 'zzzzzz': unknown context key$"):
        read_context({**CLUSTER_CONTEXT, "zzzzzz": 1})


def test_cdk_own_keys_are_not_this_apps_to_judge():
    # Feature flags, the CLI's keys and cached lookups never look like this app's keys
    settings = read_context(
        {
            **CLUSTER_CONTEXT,
            "@aws-cdk/core:enablePartitionLiterals": True,
            "aws:cdk:enable-path-metadata": True,
            "availability-zones:account=123456789012:region=eu-west-1": ["eu-west-1a"],
            "acknowledged-issue-numbers": [],
        }
    )
    assert settings.eks_cluster_name == "mnist-cluster"


@pytest.mark.parametrize(
    "image",
    [
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mnist-steps:2026-11-29",
        "registry.example.com:5000/ml/mnist-steps@sha256:" + "ab" * 32,
        "ghcr.io/team/mnist_steps:v1.2",
        "mnist-steps:latest@sha256:" + "0" * 64,  # a digest pins even the latest tag
    ],
)
def test_a_pinned_step_image_is_taken_as_given(image):
    assert read_context({**CLUSTER_CONTEXT, "step_image": image}).step_image == image


def test_the_allowed_instance_types_may_widen_the_configured_ones():
    settings = read_context(
        {**CLUSTER_CONTEXT, "allowed_instance_types": ["ml.m5.large", "ml.c5.xlarge"]}
    )
    assert settings.allowed_instance_types == ("ml.m5.large", "ml.c5.xlarge")


def test_cli_strings_are_accepted_for_lists_and_numbers():
    settings = read_context(
        {**CLUSTER_CONTEXT, "notification_emails": "a@example.com, b@example.com", "k": "16"}
    )
    assert settings.notification_emails == ("a@example.com", "b@example.com")
    assert settings.k == 16


def test_operations_emails_default_to_the_notification_addresses_and_may_be_emptied():
    assert read_context(
        {**CLUSTER_CONTEXT, "notification_emails": ["a@example.com"]}
    ).operations_emails == ("a@example.com",)
    assert (
        read_context(
            {**CLUSTER_CONTEXT, "notification_emails": ["a@example.com"], "operations_emails": ""}
        ).operations_emails
        == ()
    )


def test_defaults_are_cheap():
    settings = read_context(CLUSTER_CONTEXT)
    assert {settings.train_instance_type, settings.endpoint_instance_type} == {"ml.m5.large"}
    assert settings.train_instance_count == settings.endpoint_instance_count == 1


# -- a function's environment ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("RUNS_TABLE_NAME", None, "is missing or empty"),
        ("NOTIFICATION_TOPIC_ARN", "not-an-arn", "malformed value"),
        ("DATA_BUCKET_NAME", "", "is missing or empty"),
        ("KFP_MODE", "direct", "must be one of cluster, url"),
        ("EKS_CLUSTER_NAME", "", "required when kfp_mode is 'cluster'"),
        ("KFP_NAMESPACE", "Kube_Flow", "malformed value"),
        ("SAGEMAKER_ROLE_ARN", "arn:aws:iam::123:role/x", "malformed value"),
        ("TRAIN_INSTANCE_TYPE", "m5.xlarge", "malformed value"),
        ("TRAIN_INSTANCE_COUNT", "one", "whole number"),
        ("TRANSFORM_INSTANCE_COUNT", "0", "must be 1 to 10"),
        ("KMEANS_K", "1", "must be 2 to 256"),
        ("ENDPOINT_NAME", "prod-endpoint", "starting with 'mnist-'"),
        ("MAX_DATASET_BYTES", "2GB", "whole number"),
        ("KFP_UI_URL", "kfp.example.com", "malformed value"),
        ("AWS_REGION", "Ireland", "malformed value"),
        ("POWERTOOLS_METRICS_NAMESPACE", None, "is missing or empty"),
    ],
)
def test_a_bad_variable_is_named(variable, value, problem):
    environ = _environ(contracts.START_RUN)
    if value is None:
        environ.pop(variable)
    else:
        environ[variable] = value
    with pytest.raises(SettingError) as raised:
        read_environment(contracts.START_RUN, environ)
    assert str(raised.value).startswith(f"environment variable {variable}: ")
    assert problem in str(raised.value)


def test_url_mode_needs_the_url_and_the_secret():
    environ = _environ(
        contracts.START_RUN,
        kfp_mode="url",
        kfp_url="https://kfp.example.com",
        kfp_token_secret_name="kfp/token",
    )
    environ["KFP_TOKEN_SECRET_ARN"] = ""
    with pytest.raises(SettingError, match="KFP_TOKEN_SECRET_ARN: required when kfp_mode"):
        read_environment(contracts.START_RUN, environ)


def test_each_function_reads_only_its_own_variables():
    # track-progress knows nothing of KFP connections or instance types
    track = {p.env_name for p in function_parameters(contracts.TRACK_PROGRESS)}
    assert "KFP_MODE" not in track and "TRAIN_INSTANCE_TYPE" not in track
    assert {"RUNS_TABLE_NAME", "NOTIFICATION_TOPIC_ARN", "KFP_UI_URL"} <= track


def test_stack_values_have_no_defaults_but_where_a_mode_leaves_them_empty():
    for parameter in PARAMETERS:
        if parameter.source == "stack" and parameter.key != "kfp_token_secret_arn":
            assert parameter.default is REQUIRED, parameter.key


def test_the_lambda_init_fails_naming_the_variable():
    # Given the handler's environment without TRAIN_INSTANCE_COUNT
    environ = _environ(contracts.START_RUN)
    environ.pop("TRAIN_INSTANCE_COUNT")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KFP_", "EKS_"))}
    env.update(environ)
    # When Lambda's init phase imports the handler module
    result = subprocess.run(
        [sys.executable, "-c", "import lambdas.handlers.start_run"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Then the import fails and the error names the variable
    assert result.returncode != 0
    assert "SettingError: environment variable TRAIN_INSTANCE_COUNT: is missing or empty" in (
        result.stderr
    )


def test_the_placeholder_cluster_name_of_cdk_json_is_refused_naming_the_key():
    with pytest.raises(SettingError) as raised:
        read_context(cdk_json_context())
    assert raised.value.key == "eks_cluster_name"
    assert "still cdk.json's placeholder 'REPLACE-WITH-YOUR-EKS-CLUSTER'" in str(raised.value)
    assert "-c <key>=<value>" in str(raised.value)


def test_reserved_concurrency_is_unset_unless_given():
    assert read_context(CLUSTER_CONTEXT).reserved_concurrency is None
    assert read_context({**CLUSTER_CONTEXT, "reserved_concurrency": "5"}).reserved_concurrency == 5
    with pytest.raises(SettingError, match="reserved_concurrency"):
        read_context({**CLUSTER_CONTEXT, "reserved_concurrency": 0})
