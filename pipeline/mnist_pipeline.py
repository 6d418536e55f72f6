"""The MNIST classification pipeline: the workshop's, rebuilt for KFP v2.

preprocess -> train -> create model -> batch transform -> deploy, every SageMaker resource
named from and tagged with the run key; an exit handler reports the run's final state.

The pipeline's parameters are not written here: its signature is generated from the settings
schema (`core.settings.pipeline_parameters`), with each parameter's type, default and doc line.
(No `from __future__ import annotations`: KFP reads the annotations.)
"""

import functools
import inspect

from kfp import dsl

from core.settings import pipeline_parameters
from pipeline.components import components

PIPELINE_NAME = "mnist-classification"
PIPELINE_DESCRIPTION = "Train k-means on MNIST with SageMaker, batch-score the test split, deploy."
# Steps that only create or wait on named SageMaker resources are safe to retry.
SAGEMAKER_STEP_RETRIES = 2
# Memory of the pods of the steps that only call AWS (SageMaker, EventBridge): the interpreter
# with kfp and boto3 is ~150 MB, KFP's launcher in the same container some 50 MB more.
# Preprocess gets the `preprocess_memory` parameter as its request and limit: the same value
# its load stays under (pipeline/steps/dataset.py, MemoryBudget).
AWS_STEP_MEMORY_REQUEST = "256Mi"
AWS_STEP_MEMORY_LIMIT = "512Mi"


def signature() -> inspect.Signature:
    """The pipeline function's signature, from the schema (required parameters first)."""
    return inspect.Signature(
        [
            inspect.Parameter(
                parameter.key,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                annotation=parameter.kind.python_type,
                **({} if parameter.required else {"default": parameter.default}),
            )
            for parameter in pipeline_parameters()
        ]
    )


def _docstring() -> str:
    lines = [PIPELINE_DESCRIPTION, "", "Args:"]
    lines += [f"    {p.key}: {p.doc}" for p in pipeline_parameters()]
    return "\n".join(lines)


def _build_graph(p: dict) -> None:
    """The steps, given the pipeline's parameters as channels, by name."""
    steps = components()
    run = {"dataset_uri": p["dataset_uri"], "run_key": p["run_key"], "region": p["region"]}
    final_state = steps["report_final_state"](
        **run,
        endpoint_name=p["endpoint_name"],
        per_run_endpoints=p["per_run_endpoints"],
        event_bus_name=p["event_bus_name"],
    )
    with dsl.ExitHandler(final_state, name="run"):
        prep = steps["preprocess"](
            **run,
            dataset_version=p["dataset_version"],
            max_bytes=p["max_dataset_bytes"],
            train_instance_count=p["train_instance_count"],
            memory=p["preprocess_memory"],
        )
        # A string parameter: KFP puts its value into the pod's resources as it is ("4608Mi").
        prep.set_memory_request(p["preprocess_memory"]).set_memory_limit(p["preprocess_memory"])
        training = steps["train"](
            **run,
            role_arn=p["sagemaker_role_arn"],
            training_image=p["training_image"],
            train_uri=prep.outputs["train_uri"],
            run_uri=prep.outputs["run_uri"],
            instance_type=p["train_instance_type"],
            instance_count=p["train_instance_count"],
            k=p["k"],
            mini_batch_size=p["mini_batch_size"],
            max_runtime_seconds=p["max_runtime_seconds"],
            spot_training=p["spot_training"],
            spot_max_wait_seconds=p["spot_max_wait_seconds"],
        )
        model = steps["create_model"](
            **run,
            role_arn=p["sagemaker_role_arn"],
            image=training.outputs["image"],
            model_artifacts_uri=training.outputs["model_artifacts_uri"],
        )
        transform = steps["batch_transform"](
            **run,
            model_name=model.output,
            transform_input_uri=prep.outputs["transform_input_uri"],
            run_uri=prep.outputs["run_uri"],
            instance_type=p["transform_instance_type"],
            instance_count=p["transform_instance_count"],
        )
        evaluation = steps["evaluate"](
            **run,
            run_uri=prep.outputs["run_uri"],
            transform_output_uri=transform.output,
            model_artifacts_uri=training.outputs["model_artifacts_uri"],
            k=p["k"],
            min_accuracy=p["min_accuracy"],
            event_bus_name=p["event_bus_name"],
            endpoint_name=p["endpoint_name"],
            per_run_endpoints=p["per_run_endpoints"],
            deploy_tolerance=p["deploy_tolerance"],
            model_registry=p["model_registry"],
            image=training.outputs["image"],
        )
        # The quality gate: evaluate fails the run below min_accuracy, or not better than the
        # serving model, so nothing is deployed.
        endpoint = steps["deploy"](
            **run,
            model_name=model.output,
            endpoint_name=p["endpoint_name"],
            instance_type=p["endpoint_instance_type"],
            instance_count=p["endpoint_instance_count"],
            per_run_endpoints=p["per_run_endpoints"],
            bake_minutes=p["deploy_bake_minutes"],
            alarm_names=p["endpoint_alarm_names"],
            min_instances=p["endpoint_min_instances"],
            max_instances=p["endpoint_max_instances"],
            target_invocations=p["endpoint_target_invocations"],
            run_uri=prep.outputs["run_uri"],
            deploy_tolerance=p["deploy_tolerance"],
            endpoint_type=p["endpoint_type"],
            serverless_memory_mb=p["serverless_memory_mb"],
            serverless_max_concurrency=p["serverless_max_concurrency"],
        ).after(evaluation)
        # Then the configs, models and artifacts the stable endpoint no longer needs, but the
        # last kept_endpoint_configs for rollback (pipeline/steps/retire.py).
        retirement = steps["retire_superseded"](
            **run, endpoint_name=endpoint.output, kept_endpoint_configs=p["kept_endpoint_configs"]
        )
    # A dataset is one run: KFP's cache would skip the steps of a deliberate rerun.
    for task in (final_state, prep, training, model, transform, evaluation, endpoint, retirement):
        task.set_caching_options(False)
    for task in (training, model, transform, endpoint):
        task.set_retry(num_retries=SAGEMAKER_STEP_RETRIES)
    for task in (final_state, training, model, transform, evaluation, endpoint, retirement):
        task.set_memory_request(AWS_STEP_MEMORY_REQUEST).set_memory_limit(AWS_STEP_MEMORY_LIMIT)


@functools.cache
def build_pipeline():
    """The pipeline as a KFP graph component (built on first use, not at import)."""
    names = list(signature().parameters)

    def mnist_classification(*channels):
        _build_graph(dict(zip(names, channels, strict=True)))

    mnist_classification.__signature__ = signature()
    mnist_classification.__doc__ = _docstring()
    return dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION)(mnist_classification)
