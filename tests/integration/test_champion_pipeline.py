"""Champion/challenger and the registry through the compiled pipeline (kfp.local, the emulator):
two runs on one stable endpoint; the worse model ends MODEL_REJECTED and the better one serves.
"""

from __future__ import annotations

import pytest

from core import contracts, endpoint_alarms
from core.contracts import MODEL_PACKAGE_GROUP, NOT_BETTER_THAN_SERVING, resource_name
from mnistflow.local.emulator import AwsEmulator
from mnistflow.local.pipeline_runner import run_compiled_pipeline
from pipeline.compile import compile_pipeline
from pipeline.steps import registry
from tests.conftest import SAMPLE_DIR
from tests.integration.pipeline_harness import (
    LOCAL_DATA_BUCKET,
    received_pipeline_events,
    run_dataset,
    upload_dataset,
)

pytestmark = pytest.mark.integration

ENDPOINT = "mnist-champion"


def test_a_worse_model_is_rejected_for_the_serving_one_and_the_registry_says_so(tmp_path):
    with AwsEmulator() as emulator:
        sm = emulator.client("sagemaker")
        # Given a first run that deploys the sample's model (k=32) to the stable endpoint
        first = run_dataset(
            emulator, SAMPLE_DIR / "mnist-sample.pkl.gz", tmp_path / "first", endpoint_name=ENDPOINT
        )
        assert first.result.succeeded, first.result.error
        [evaluated] = [
            e["detail"] for e in first.final_events if e["detail-type"] == "MNIST Model Evaluated"
        ]
        assert evaluated["champion_accuracy"] is None
        assert evaluated["champion_note"] == f"no endpoint {ENDPOINT} yet: this is its first model"
        # When a second upload trains a worse model (k=4) that still passes a low gate
        dataset_uri, version, key = upload_dataset(
            emulator, SAMPLE_DIR / "mnist-sample.pkl.gz", LOCAL_DATA_BUCKET
        )
        resources_role = first.inventory["model"]["ExecutionRoleArn"]
        second = run_compiled_pipeline(
            compile_pipeline(tmp_path / "mnist_pipeline.yaml"),
            {
                "dataset_uri": dataset_uri,
                "dataset_version": version,
                "run_key": key,
                "region": emulator.region,
                "sagemaker_role_arn": resources_role,
                "event_bus_name": contracts.PIPELINE_EVENT_BUS,
                "endpoint_name": ENDPOINT,
                "endpoint_alarm_names": endpoint_alarms.alarm_names(ENDPOINT),
                "k": 4,
                "min_accuracy": 0.2,
            },
            pipeline_root=tmp_path / "second-root",
            environment=emulator.environment(),
        )
        # Then it fails at evaluate, rejected for the serving model, with both figures
        assert second.failed_task == "evaluate", second.error
        events = [
            e
            for e in received_pipeline_events(emulator, first_resources(emulator))
            if e["detail"]["run_key"] == key
        ]
        [rejected] = [e["detail"] for e in events if e["detail-type"] == "MNIST Model Evaluated"]
        assert rejected["passed"] is True and rejected["beats_champion"] is False
        assert rejected["champion_model"] == resource_name(first.run_key, "model")
        # The serving model scored on the second run's own split: its figure is the first
        # run's accuracy (same images, same labels, same centroids)
        assert rejected["champion_accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-12)
        assert rejected["accuracy"] < rejected["champion_accuracy"] - rejected["deploy_tolerance"]
        [final] = [
            e["detail"] for e in events if e["detail-type"] == "MNIST Pipeline Run State Change"
        ]
        assert final["model_rejected"] is True and final["failed_step"] == "evaluate"
        assert NOT_BETTER_THAN_SERVING in final["error"]
        assert f"{rejected['champion_accuracy']:.4f}" in final["error"]
        # And the endpoint still serves the first run's model
        served = sm.describe_endpoint(EndpointName=ENDPOINT)["EndpointConfigName"]
        assert served == resource_name(first.run_key, "epc")
        # And the registry holds both: the deployed one Approved, the rejected one Rejected
        assert registry.find_package(sm, run_key=first.run_key)["ModelApprovalStatus"] == "Approved"
        assert registry.find_package(sm, run_key=key)["ModelApprovalStatus"] == "Rejected"
        listed = sm.list_model_packages(
            ModelPackageGroupName=MODEL_PACKAGE_GROUP, ModelPackageType="Versioned"
        )["ModelPackageSummaryList"]
        assert [p["ModelPackageVersion"] for p in listed] == [2, 1]


def first_resources(emulator):
    """The queues the first run's provisioning made (the harness names them the same)."""
    from mnistflow.local.provision import LocalNames, Provisioned

    names = LocalNames(data_bucket=LOCAL_DATA_BUCKET)
    sqs = emulator.client("sqs")
    url = sqs.get_queue_url(QueueName=names.pipeline_events_queue)["QueueUrl"]
    return Provisioned(
        names=names,
        topic_arn="",
        sagemaker_role_arn="",
        kfp_token_secret_arn="",
        queue_urls={names.pipeline_events_queue: url},
    )
