"""The stuck-run watchdog: a scheduled function with what a pass needs, and nothing more."""

from __future__ import annotations

from core import contracts
from core.settings import function_parameters
from stacks.watchdog_schedule import WATCHDOG_EVERY_MINUTES
from tests.infra.cfn_text import actions_of, role_statements


def _function(synth) -> dict:
    return synth.resources[synth.logical_id(synth.stack.watchdog.function)]["Properties"]


def test_the_watchdog_runs_on_a_schedule(default_synth):
    function_id = default_synth.logical_id(default_synth.stack.watchdog.function)
    (rule,) = [
        r["Properties"]
        for r in default_synth.of_type("AWS::Events::Rule").values()
        if "ScheduleExpression" in r["Properties"]
    ]
    assert rule["ScheduleExpression"] == f"rate({WATCHDOG_EVERY_MINUTES} minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
    assert target["RetryPolicy"]["MaximumRetryAttempts"] == 0


def test_the_watchdog_gets_exactly_the_configuration_its_settings_read(default_synth):
    function = _function(default_synth)
    assert function["Handler"] == contracts.HANDLERS[contracts.WATCHDOG]
    wanted = {p.env_name for p in function_parameters(contracts.WATCHDOG) if p.source != "lambda"}
    variables = function["Environment"]["Variables"]
    assert set(variables) == wanted
    assert variables["WATCHDOG_NO_PROGRESS_MINUTES"] == "60"
    assert variables["KFP_MODE"] == "cluster"


def test_the_watchdog_may_read_and_update_runs_publish_and_reach_kfp_only(default_synth):
    role_id = default_synth.logical_id(default_synth.stack.watchdog.function.role)
    actions = actions_of(role_statements(default_synth.resources, role_id))
    assert {"dynamodb:Scan", "dynamodb:UpdateItem", "sns:Publish", "eks:DescribeCluster"} <= (
        actions
    )
    assert not {a for a in actions if a.startswith(("sagemaker:", "s3:", "iam:"))}
    assert "dynamodb:PutItem" not in actions and "dynamodb:DeleteItem" not in actions
