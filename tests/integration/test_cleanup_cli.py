"""`mnistflow cleanup` and `mnistflow rollback` against the local stack's emulator (moto and the
local SageMaker on 127.0.0.1), as a user runs them with --endpoint-url."""

from __future__ import annotations

import socket

import pytest

from core.contracts import RUN_KEY_TAG, STATUS_RUN_STARTED, data_bucket_name
from mnistflow.cli import main
from mnistflow.local.emulator import EMULATOR_CREDENTIALS, AwsEmulator
from mnistflow.local.provision import LocalNames, provision
from pipeline.steps import sagemaker_jobs as jobs
from tests.integration.test_retire import _config, _deploy, _key, _model

pytestmark = pytest.mark.integration

STABLE = "mnist-classifier"


@pytest.fixture
def stack(monkeypatch):
    with AwsEmulator(sagemaker_delay_seconds=0.1) as emu:
        account = emu.client("sts").get_caller_identity()["Account"]
        names = LocalNames(data_bucket=data_bucket_name(account, emu.region))
        provision(emu.client, names, kfp_token="unused")
        for name, value in EMULATOR_CREDENTIALS.items():
            monkeypatch.setenv(name, value)
        emu.bucket = names.data_bucket
        yield emu


def _cli(stack, *argv: str) -> int:
    return main([*argv, "--region", stack.region, "--endpoint-url", stack.endpoint_url])


def _names(sm) -> tuple[set[str], set[str]]:
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    return configs, {m["ModelName"] for m in sm.list_models()["Models"]}


def test_cleanup_dry_run_then_cleanup_never_touching_foreign_or_in_flight(stack, capsys):
    sm, s3 = stack.client("sagemaker"), stack.client("s3")
    # Given three runs deployed in turn to the stable endpoint, the leftovers of a failed run,
    # a run in flight (its model made, no config yet), and an mnist- model without the tag
    for n in (1, 2, 3):
        _deploy(sm, s3, _key(n), bucket=stack.bucket)
    _model(sm, s3, _key(4), bucket=stack.bucket)  # a run that is over and left its model
    _model(sm, s3, _key(5), bucket=stack.bucket)  # a run in flight
    stack.client("dynamodb").put_item(
        TableName="mnistflow-runs",
        Item={"run_key": {"S": _key(5)}, "status": {"S": STATUS_RUN_STARTED}},
    )
    _model(sm, s3, _key(9), tagged=False, name="mnist-foreign-model", bucket=stack.bucket)
    before = _names(sm)
    # When the user asks for a dry run with N = 2
    assert _cli(stack, "cleanup", "--dry-run", "--endpoint", STABLE, "--keep", "2") == 0
    out = capsys.readouterr().out
    # Then it says what would go and what stays, and deletes nothing
    assert _names(sm) == before
    assert f"would delete  endpoint-config  {_key(1)}-epc" in out
    assert f"would delete  model            {_key(4)}-model" in out
    assert (
        f"kept          model            {_key(5)}-model  ({_key(5)}: its run is in flight)" in out
    )
    assert f"mnist-foreign-model  (-: no {RUN_KEY_TAG} tag: not the product's)" in out
    assert "(dry run: nothing was deleted)" in out
    # When it runs for real
    assert _cli(stack, "cleanup", "--endpoint", STABLE, "--keep", "2") == 0
    # Then run 1 and the finished run's leftovers are gone; the rest stays
    configs, models = _names(sm)
    assert configs == {f"{_key(2)}-epc", f"{_key(3)}-epc"}
    assert models == {f"{_key(n)}-model" for n in (2, 3, 5)} | {"mnist-foreign-model"}
    # And a second cleanup has nothing left to delete
    assert _cli(stack, "cleanup", "--endpoint", STABLE, "--keep", "2") == 0
    assert "deleted 0," in capsys.readouterr().out.splitlines()[-1]


def test_rollback_moves_the_stable_endpoint_back_and_says_which_run_serves(stack, capsys):
    sm, s3 = stack.client("sagemaker"), stack.client("s3")
    _deploy(sm, s3, _key(1), bucket=stack.bucket)
    _deploy(sm, s3, _key(2), bucket=stack.bucket)
    # When the user rolls back
    assert _cli(stack, "rollback", "--endpoint", STABLE) == 0
    out = capsys.readouterr().out
    # Then the endpoint serves run 1's config again, tagged with run 1, and it says so
    described = sm.describe_endpoint(EndpointName=STABLE)
    assert described["EndpointConfigName"] == f"{_key(1)}-epc"
    tags = sm.list_tags(ResourceArn=described["EndpointArn"])["Tags"]
    assert {"Key": RUN_KEY_TAG, "Value": _key(1)} in tags
    assert f"endpoint {STABLE} is InService: run {_key(1)} now serves" in out
    # And a second rollback has nothing older to go to: one line, exit 1
    assert _cli(stack, "rollback", "--endpoint", STABLE) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"rollback: no earlier endpoint config is kept for {STABLE}")


def test_rollback_refuses_while_the_endpoint_is_updating(stack, capsys):
    sm, s3 = stack.client("sagemaker"), stack.client("s3")
    _deploy(sm, s3, _key(1), bucket=stack.bucket)
    _deploy(sm, s3, _key(2), bucket=stack.bucket)
    sm.create_endpoint_config(**_config(sm, _key(3), _model(sm, s3, _key(3), bucket=stack.bucket)))
    sm.update_endpoint(EndpointName=STABLE, EndpointConfigName=f"{_key(3)}-epc")
    assert _cli(stack, "rollback", "--endpoint", STABLE) == 1
    err = capsys.readouterr().err
    assert err == f"rollback: endpoint {STABLE} is Updating: roll back once it is InService\n"
    jobs.wait_for(
        lambda: sm.describe_endpoint(EndpointName=STABLE),
        "EndpointStatus",
        done=frozenset({"InService"}),
        failed=frozenset({"Failed"}),
        what="endpoint",
        timeout_seconds=10,
        poll_seconds=0.05,
    )


def test_cleanup_against_a_local_stack_that_is_not_running_is_one_line(capsys, monkeypatch):
    for name, value in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    assert main(["cleanup", "--region", "us-east-1", "--endpoint-url", url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"cleanup: cannot reach {url}/: if it is the local stack"), err
