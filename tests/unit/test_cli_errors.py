"""What a user sees when the CLI meets an AWS problem they can fix: one line, exit 1, no
traceback (--debug shows it)."""

from __future__ import annotations

import pytest
from botocore.exceptions import NoCredentialsError, NoRegionError

from mnistflow.cli import main

AWS_VARIABLES = (
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
)


@pytest.fixture(autouse=True)
def no_aws_configuration(monkeypatch, tmp_path):
    """A machine where nobody configured AWS (and no instance metadata to fall back on)."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "mnist-0123456789ab"],
        ["predict", "--endpoint", "mnist-0123456789ab-endpoint"],
        ["rerun", "mnist-0123456789ab"],
    ],
)
def test_no_region_is_one_line_saying_what_to_do(argv, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(
        f"{argv[0]}: no AWS region configured: pass --region or set AWS_DEFAULT_REGION"
    )
    assert "./dev demo --keep-running" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["status", "--region", "eu-west-1"],
        ["predict", "--endpoint", "mnist-0123456789ab-endpoint", "--region", "eu-west-1"],
        ["rerun", "mnist-0123456789ab", "--region", "eu-west-1"],
    ],
)
def test_no_credentials_is_one_line_saying_what_to_do(argv, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"{argv[0]}: no AWS credentials found: configure a profile")


def test_debug_shows_the_traceback():
    with pytest.raises(NoRegionError):
        main(["--debug", "status"])
    with pytest.raises(NoCredentialsError):
        main(["--debug", "status", "--region", "eu-west-1"])


def test_a_profile_that_does_not_exist_is_one_line(monkeypatch, capsys):
    monkeypatch.setenv("AWS_PROFILE", "prodd")
    assert main(["status", "--region", "eu-west-1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "prodd" in err and "check AWS_PROFILE" in err
