"""Bad context fails at synth with an error that names the key."""

from __future__ import annotations

import pytest

from stacks.app_factory import SettingsError, cdk_json_context, create_app
from stacks.settings import Settings


def _settings(**overrides) -> Settings:
    return Settings.from_context({**cdk_json_context(), **overrides})


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"eks_cluster_name": ""}, "eks_cluster_name"),
        ({"kfp_mode": "proxy"}, "kfp_mode"),
        ({"notification_emails": ["ops@example.com", "not-an-address"]}, "notification_emails"),
        ({"notification_emails": "ops@example.com,@example.com"}, "notification_emails"),
        ({"operations_emails": ["oncall@example"]}, "operations_emails"),
        ({"operations_emails": "a@example.com,a@example.com"}, "operations_emails"),
        ({"kfp_mode": "url", "kfp_url": ""}, "kfp_url"),
        ({"kfp_mode": "url", "kfp_url": "kfp.example.com"}, "kfp_url"),
        ({"kfp_mode": "url", "kfp_url": "https://kfp.example.com"}, "kfp_token_secret_name"),
        ({"endpoint_name": "prod-endpoint"}, "endpoint_name"),
        ({"train_instance_type": "m5.large"}, "train_instance_type"),
        ({"train_instance_count": "two"}, "train_instance_count"),
        ({"endpoint_instance_count": 0}, "endpoint_instance_count"),
        ({"kfp_namespace": "Kube_Flow"}, "kfp_namespace"),
        ({"vpc_id": "vpc-0123456789abcdef0"}, "subnet_ids"),
        ({"runs_retention_days": -1}, "runs_retention_days"),
    ],
)
def test_bad_context_names_the_key(overrides, key):
    with pytest.raises(SettingsError) as error:
        _settings(**overrides)
    assert error.value.key == key
    assert f"'{key}'" in str(error.value)


def test_the_app_refuses_bad_context_before_building_anything(tmp_path):
    # Given an unknown KFP mode, when the app is created, then it fails naming the key
    with pytest.raises(SettingsError, match="'kfp_mode'"):
        create_app({"kfp_mode": "ssh"}, outdir=str(tmp_path))


def test_cdk_json_defaults_are_valid_and_cheap():
    settings = _settings()
    assert settings.kfp_mode == "cluster"
    assert settings.kfp_namespace == "kubeflow"
    assert settings.kfp_service_account == "pipeline-runner"
    assert settings.notification_emails == ()
    assert {settings.train_instance_type, settings.endpoint_instance_type} == {"ml.m5.large"}
    assert settings.train_instance_count == settings.endpoint_instance_count == 1


def test_cli_strings_are_accepted_for_lists_and_numbers():
    # Given values as `cdk deploy -c key=value` passes them (strings)
    settings = _settings(
        notification_emails="a@example.com, b@example.com", train_instance_count="2"
    )
    assert settings.notification_emails == ("a@example.com", "b@example.com")
    assert settings.train_instance_count == 2


def test_url_mode_needs_no_cluster_name():
    settings = _settings(
        kfp_mode="url",
        eks_cluster_name="",
        kfp_url="https://kfp.example.com/",
        kfp_token_secret_name="kfp/token",
    )
    assert settings.kfp_url == "https://kfp.example.com"
    assert not settings.uses_cluster_api


def test_operations_emails_default_to_the_notification_addresses():
    # Given notification addresses and no operations_emails key, then operators are the same people
    settings = _settings(notification_emails=["a@example.com", "b@example.com"])
    assert settings.operations_emails == ("a@example.com", "b@example.com")


def test_operations_emails_replace_the_default_when_given_even_empty():
    # Given operations addresses of their own, then only they get the alarms
    settings = _settings(notification_emails=["a@example.com"], operations_emails="ops@example.com")
    assert settings.operations_emails == ("ops@example.com",)
    # And an explicit empty value (`-c operations_emails=`) means nobody is subscribed
    settings = _settings(notification_emails=["a@example.com"], operations_emails="")
    assert settings.operations_emails == ()
