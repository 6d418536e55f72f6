"""One agreement across the three places a run parameter lives: the context the deployer sets,
start-run's synthesized environment, and the compiled pipeline start-run submits."""

from __future__ import annotations

import yaml

from core import contracts
from core.settings import PARAMETERS, function_parameters, pipeline_parameters


def _start_run_variables(synth) -> dict:
    function = synth.resources[synth.logical_id(synth.stack.start_run.function)]
    return function["Properties"]["Environment"]["Variables"]


def _consumed(spec: dict) -> set[str]:
    """The pipeline inputs some task reads (directly, or through the exit handler's group)."""
    names = set()

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "componentInputParameter":
                    names.add(value.removeprefix("pipelinechannel--"))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec["root"]["dag"])
    walk(spec["components"])
    return names


def test_context_environment_and_compiled_pipeline_agree(default_synth, lambda_asset):
    # Given what the stack gives start-run and the pipeline it ships
    variables = _start_run_variables(default_synth)
    spec = yaml.safe_load((lambda_asset / contracts.PIPELINE_SPEC_FILE).read_text())
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    # Then the compiled pipeline declares exactly the schema's pipeline parameters
    assert set(inputs) == {p.key for p in pipeline_parameters()}
    # And every one of them is read by a step: none compiles into an input nobody reads
    assert set(inputs) <= _consumed(spec)
    # And start-run can submit each: from its environment, or computed for the run
    for parameter in pipeline_parameters():
        if parameter.source == "run":
            continue
        assert parameter.env_name in variables, parameter.key
    # And start-run's environment holds exactly what its settings read
    lambda_set = {p.env_name for p in function_parameters(contracts.START_RUN)}
    assert set(variables) == {
        name for name in lambda_set if name != "AWS_REGION"
    }  # the runtime sets the region


def test_every_context_key_reaches_a_function_the_pipeline_or_the_stack():
    # A context key with no function and no pipeline use must be the stack's own
    stack_only = {
        p.key for p in PARAMETERS if p.source == "context" and not p.functions and not p.pipeline
    }
    assert stack_only == {
        "notification_emails",
        "operations_emails",
        "kfp_token_secret_name",
        "vpc_id",
        "subnet_ids",
        "step_image",
        "reserved_concurrency",
        "runs_retention_days",
        "access_logs_retention_days",
        "log_retention_days",
    }
