"""The stuck-run watchdog: a scheduled function with what a pass needs, and nothing more."""

from __future__ import annotations

from core import contracts
from core.contracts import RUN_KEY_TAG, SERVING_MODELS_PREFIX
from core.settings import function_parameters
from stacks.retire_policy import DELETE_ACTIONS, LIST_ACTIONS, READ_ACTIONS
from stacks.watchdog_schedule import WATCHDOG_EVERY_MINUTES
from tests.infra.cfn_text import actions_of, as_list, resources_of, role_statements


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


def test_the_watchdog_may_read_and_update_runs_publish_reach_kfp_and_retire_endpoints_only(
    default_synth,
):
    role_id = default_synth.logical_id(default_synth.stack.watchdog.function.role)
    statements = role_statements(default_synth.resources, role_id)
    actions = actions_of(statements)
    assert {"dynamodb:Scan", "dynamodb:UpdateItem", "sns:Publish", "eks:DescribeCluster"} <= (
        actions
    )
    # SageMaker and S3: what retiring per-run endpoints needs (stacks/retire_policy.py), no more
    retiring = {*LIST_ACTIONS, *READ_ACTIONS, *DELETE_ACTIONS}
    retiring |= {"s3:ListBucket", "s3:GetObjectTagging", "s3:DeleteObject"}
    assert {a for a in actions if a.startswith(("sagemaker:", "s3:", "iam:"))} == retiring
    assert "dynamodb:PutItem" not in actions and "dynamodb:DeleteItem" not in actions


def test_retiring_deletes_only_the_products_names_that_carry_its_run_key_tag(default_synth):
    for role in (
        default_synth.stack.watchdog.function.role,
        default_synth.stack.pipeline_pods.role,
    ):
        statements = role_statements(default_synth.resources, default_synth.logical_id(role))
        [deletes] = [
            s for s in statements if s.get("Sid") == "DeleteTaggedProductSageMakerResources"
        ]
        assert sorted(as_list(deletes["Action"])) == sorted(DELETE_ACTIONS)
        assert deletes["Condition"] == {"Null": {f"aws:ResourceTag/{RUN_KEY_TAG}": "false"}}
        assert sorted(resources_of(deletes)) == sorted(
            f"arn:${{AWS::Partition}}:sagemaker:${{AWS::Region}}:${{AWS::AccountId}}:{kind}/mnist-*"
            for kind in ("endpoint", "endpoint-config", "model")
        )
        [listing] = [s for s in statements if s.get("Sid") == "ListSageMakerResources"]
        assert listing["Resource"] == "*" and sorted(as_list(listing["Action"])) == sorted(
            LIST_ACTIONS
        )
        [prune] = [s for s in statements if s.get("Sid") == "PrunePromotedModels"]
        assert resources_of(prune)[0].endswith(f"/{SERVING_MODELS_PREFIX}*")
