"""The registry's requests, held to botocore's sagemaker service model (botocore/data/sagemaker/
2017-07-24/service-2.json): the shapes the real service checks."""

from __future__ import annotations

import botocore.session
from botocore.validate import ParamValidator

from core.contracts import MODEL_PACKAGE_GROUP, PRODUCT_TAG, RUN_KEY_TAG
from mnistflow.local.sagemaker import check_request
from pipeline.steps import registry

MODEL = botocore.session.get_session().get_service_model("sagemaker")


class RecordingSageMaker:
    """Answers ListModelPackages with an empty group and keeps each request it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict]] = []

    def get_paginator(self, name):
        owner = self

        class Pages:
            def paginate(self, **request):
                owner.sent.append(("ListModelPackages", request))
                return iter([{"ModelPackageSummaryList": []}])

        return Pages()

    def create_model_package(self, **request):
        self.sent.append(("CreateModelPackage", request))
        arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{MODEL_PACKAGE_GROUP}/1"
        return {"ModelPackageArn": arn}


def _valid(operation: str, request: dict) -> None:
    shape = MODEL.operation_model(operation).input_shape
    if operation == "ListModelPackages":
        request = {k: v for k, v in request.items() if k != "PaginationConfig"}
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()
    check_request(operation, request)  # patterns, lengths, enums: what the service checks


def test_the_approval_statuses_are_the_service_models():
    assert set(registry.APPROVAL_STATUSES) == set(MODEL.shape_for("ModelApprovalStatus").enum)
    assert registry.PENDING == "PendingManualApproval"


def test_model_quality_statistics_are_content_type_and_s3_uri():
    statistics = MODEL.shape_for("ModelQuality").members["Statistics"]
    assert set(statistics.required_members) == {"ContentType", "S3Uri"}


def test_the_registration_request_is_one_the_service_accepts():
    sm = RecordingSageMaker()
    registry.register_model(
        sm,
        run_key="mnist-0123456789ab",
        image="382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1",
        model_data_url="s3://bucket/runs/mnist-0123456789ab/model/x/output/model.tar.gz",
        evaluation_uri="s3://bucket/runs/mnist-0123456789ab/evaluation.json",
        accuracy=0.7421,
        min_accuracy=0.6,
        k=32,
        champion_accuracy=0.7012,
    )
    (list_op, listing), (create_op, created) = sm.sent
    _valid(list_op, listing)
    _valid(create_op, created)
    assert created["ModelMetrics"] == {
        "ModelQuality": {
            "Statistics": {
                "ContentType": "application/json",
                "S3Uri": "s3://bucket/runs/mnist-0123456789ab/evaluation.json",
            }
        }
    }
    assert created["ModelApprovalStatus"] == "PendingManualApproval"
    assert created["CustomerMetadataProperties"] == {
        "run_key": "mnist-0123456789ab",
        "accuracy": "0.7421",
        "min_accuracy": "0.6000",
        "k": "32",
        "champion_accuracy": "0.7012",
    }
    assert created["ClientToken"] == "mnist-0123456789ab"
    assert created["Tags"] == [
        {"Key": RUN_KEY_TAG, "Value": "mnist-0123456789ab"},
        {"Key": PRODUCT_TAG, "Value": "mnist"},
    ]
    assert created["ModelPackageDescription"].startswith("mnist-0123456789ab: ")
