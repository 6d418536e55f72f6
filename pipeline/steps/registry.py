"""The model registry: each evaluated model is a version in the stack's SageMaker model package
group (MODEL_PACKAGE_GROUP), with its metrics; Approved when it passed the gate and was
deployed, Rejected otherwise.

- Evaluate registers the model (`register_model`) PendingManualApproval, with the k-means image
  and the model data (InferenceSpecification), evaluation.json as its model-quality statistics
  (ModelMetrics.ModelQuality.Statistics), accuracy and run key as CustomerMetadataProperties,
  and the run-key tag. A retried evaluate finds its version by run key (the description starts
  with it) and creates nothing; ClientToken (the run key) guards a create whose answer was lost.
- The exit handler settles it (`settle_registration`): Approved when the run succeeded (it
  passed the gate and the endpoint serves it), Rejected otherwise. A run that failed before
  evaluate has no version, and nothing is settled.

ModelApprovalStatus values (botocore's sagemaker model, shape ModelApprovalStatus; SageMaker API
reference, UpdateModelPackage): Approved | Rejected | PendingManualApproval; UpdateModelPackage
moves a version to any of them. Throttling is retried by botocore's standard retry mode (the
step's client is made with it).

Standard library and botocore's errors only: the pipeline's steps embed this module.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from core.contracts import MODEL_PACKAGE_GROUP
from pipeline.steps import sagemaker_jobs as jobs

APPROVED = "Approved"
REJECTED = "Rejected"
PENDING = "PendingManualApproval"
APPROVAL_STATUSES = (APPROVED, REJECTED, PENDING)
# What the k-means image accepts and answers (SageMaker developer guide, "K-Means Algorithm":
# input/output interface for inference), for the version's InferenceSpecification.
KMEANS_CONTENT_TYPES = ["text/csv", "application/json", "application/x-recordio-protobuf"]
KMEANS_RESPONSE_TYPES = [
    "application/json",
    "application/jsonlines",
    "application/x-recordio-protobuf",
]
STATISTICS_CONTENT_TYPE = "application/json"
PAGE = 100  # ListModelPackages' MaxResults at most (botocore's model: MaxResults max 100)


def _description(run_key: str) -> str:
    return f"{run_key}: "


def find_package(sm, *, run_key: str, group: str = MODEL_PACKAGE_GROUP) -> dict | None:
    """The group's version of this run (its ListModelPackages summary), or None."""
    paginator = sm.get_paginator("list_model_packages")
    pages = paginator.paginate(
        ModelPackageGroupName=group,
        ModelPackageType="Versioned",
        SortBy="CreationTime",
        SortOrder="Descending",
        PaginationConfig={"PageSize": PAGE},
    )
    for page in pages:
        for summary in page.get("ModelPackageSummaryList", []):
            if summary.get("ModelPackageDescription", "").startswith(_description(run_key)):
                return summary
    return None


def register_model(
    sm,
    *,
    run_key: str,
    image: str,
    model_data_url: str,
    evaluation_uri: str,
    accuracy: float,
    min_accuracy: float,
    k: int,
    champion_accuracy: float | None = None,
    group: str = MODEL_PACKAGE_GROUP,
) -> str:
    """Registers the run's model (once: a retry finds it); returns the version's ARN."""
    found = find_package(sm, run_key=run_key, group=group)
    if found is not None:
        return found["ModelPackageArn"]
    metadata = {
        "run_key": run_key,
        "accuracy": f"{accuracy:.4f}",
        "min_accuracy": f"{min_accuracy:.4f}",
        "k": str(k),
    }
    if champion_accuracy is not None:
        metadata["champion_accuracy"] = f"{champion_accuracy:.4f}"
    answer = sm.create_model_package(
        ModelPackageGroupName=group,
        ModelPackageDescription=(
            f"{_description(run_key)}k-means, k={k}, test accuracy {accuracy:.4f}"
        ),
        InferenceSpecification={
            "Containers": [{"Image": image, "ModelDataUrl": model_data_url}],
            "SupportedContentTypes": KMEANS_CONTENT_TYPES,
            "SupportedResponseMIMETypes": KMEANS_RESPONSE_TYPES,
        },
        ModelMetrics={
            "ModelQuality": {
                "Statistics": {"ContentType": STATISTICS_CONTENT_TYPE, "S3Uri": evaluation_uri}
            }
        },
        ModelApprovalStatus=PENDING,
        CustomerMetadataProperties=metadata,
        ClientToken=run_key,
        Tags=jobs.run_tags(run_key),
    )
    return answer["ModelPackageArn"]


def settle_registration(
    sm, *, run_key: str, succeeded: bool, group: str = MODEL_PACKAGE_GROUP
) -> str | None:
    """The exit handler's last word on the run's version: Approved when the run succeeded
    (passed the gate, deployed), Rejected otherwise. Returns the status set, or None when the
    run has no version (failed before evaluate, or the registry is off).

    Never raises for SageMaker's errors, nor for SageMaker out of reach (a connection error, a
    read timeout: botocore's own errors): the run's final state must still be reported. A version
    it could not settle stays PendingManualApproval, and the step's log says why.
    """
    status = APPROVED if succeeded else REJECTED
    try:
        found = find_package(sm, run_key=run_key, group=group)
        if found is None:
            return None
        if found.get("ModelApprovalStatus") != status:
            sm.update_model_package(
                ModelPackageArn=found["ModelPackageArn"],
                ModelApprovalStatus=status,
                ApprovalDescription=(
                    "deployed: it passed the gate and the endpoint serves it"
                    if succeeded
                    else "not deployed: the run did not succeed"
                ),
            )
    except (ClientError, BotoCoreError) as error:
        print(f"model registry: {run_key}'s version left as it was: {error}")
        return None
    return status
