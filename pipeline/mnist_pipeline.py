"""The MNIST classification pipeline: the workshop's, rebuilt for KFP v2.

preprocess -> train -> create model -> batch transform -> deploy, every SageMaker resource
named from and tagged with the run key; an exit handler reports the run's final state.
(No `from __future__ import annotations`: KFP reads the annotations.)
"""

import functools

from kfp import dsl

from pipeline.components import components

PIPELINE_NAME = "mnist-classification"
# Small, cheap defaults (the seed used ml.c4.8xlarge x 2).
DEFAULT_INSTANCE_TYPE = "ml.m5.large"
DEFAULT_MAX_RUNTIME_SECONDS = 3600
# Steps that only create or wait on named SageMaker resources are safe to retry.
SAGEMAKER_STEP_RETRIES = 2


@functools.cache
def build_pipeline():
    """The pipeline as a KFP graph component (built on first use, not at import)."""
    steps = components()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Train k-means on MNIST with SageMaker, batch-score the test split, deploy.",
    )
    def mnist_classification(
        dataset_uri: str,
        run_key: str,
        region: str,
        role_arn: str,
        training_image: str = "",
        train_instance_type: str = DEFAULT_INSTANCE_TYPE,
        train_instance_count: int = 1,
        transform_instance_type: str = DEFAULT_INSTANCE_TYPE,
        transform_instance_count: int = 1,
        endpoint_instance_type: str = DEFAULT_INSTANCE_TYPE,
        endpoint_instance_count: int = 1,
        endpoint_name: str = "",
        k: int = 10,
        feature_dim: int = 784,
        mini_batch_size: int = 500,
        max_runtime_seconds: int = DEFAULT_MAX_RUNTIME_SECONDS,
        event_bus_name: str = "default",
    ):
        run = {"dataset_uri": dataset_uri, "run_key": run_key, "region": region}
        final_state = steps["report_final_state"](
            **run, endpoint_name=endpoint_name, event_bus_name=event_bus_name
        )
        with dsl.ExitHandler(final_state, name="run"):
            prep = steps["preprocess"](**run)
            training = steps["train"](
                **run,
                role_arn=role_arn,
                training_image=training_image,
                train_uri=prep.outputs["train_uri"],
                run_uri=prep.outputs["run_uri"],
                instance_type=train_instance_type,
                instance_count=train_instance_count,
                k=k,
                feature_dim=feature_dim,
                mini_batch_size=mini_batch_size,
                max_runtime_seconds=max_runtime_seconds,
            )
            model = steps["create_model"](
                **run,
                role_arn=role_arn,
                image=training.outputs["image"],
                model_artifacts_uri=training.outputs["model_artifacts_uri"],
            )
            transform = steps["batch_transform"](
                **run,
                model_name=model.output,
                test_uri=prep.outputs["test_uri"],
                run_uri=prep.outputs["run_uri"],
                instance_type=transform_instance_type,
                instance_count=transform_instance_count,
            )
            endpoint = steps["deploy"](
                **run,
                model_name=model.output,
                endpoint_name=endpoint_name,
                instance_type=endpoint_instance_type,
                instance_count=endpoint_instance_count,
            ).after(transform)
        # A dataset is one run: KFP's cache would skip the steps of a deliberate rerun.
        for task in (final_state, prep, training, model, transform, endpoint):
            task.set_caching_options(False)
        for task in (training, model, transform, endpoint):
            task.set_retry(num_retries=SAGEMAKER_STEP_RETRIES)

    return mnist_classification
