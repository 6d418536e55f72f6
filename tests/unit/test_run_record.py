"""The run record read from a stored item: what another version (or a hand) may have left."""

from __future__ import annotations

from dataclasses import fields

from core import kfp, sagemaker_events
from core.run_record import ORDER_FIELD, ProgressEntry, RunRecord, progress_attribute


def test_an_item_with_odd_or_missing_fields_still_reads():
    # Given an item whose dataset has a field this version does not know and lacks one it does,
    # a timeline entry without its detail, one that is not a map, and an odd progress entry
    item = {
        "run_key": "mnist-0123456789ab",
        "status": "RUN_STARTED",
        "dataset": {"bucket": "b", "key": "incoming/x.npz", "version": "v1", "checksum": "c"},
        "timeline": [{"at": "2026-11-29T00:00:00Z", "event": "ACCEPTED"}, "not a map"],
        progress_attribute("training", "COMPLETED"): {"status": "COMPLETED", "extra": 1},
    }
    # When it is read
    record = RunRecord.from_item(item)
    # Then every known field is there, missing ones empty, unknown ones left out
    assert record.dataset.uri == "s3://b/incoming/x.npz" and record.dataset.etag == ""
    assert [(e.event, e.detail) for e in record.timeline] == [("ACCEPTED", "")]
    (progress,) = record.progress
    assert progress.step == "training" and progress.entry.status == "COMPLETED"
    assert progress.entry.ord == ""


def test_the_order_field_is_the_progress_entrys():
    assert ORDER_FIELD in {f.name for f in fields(ProgressEntry)}


def test_a_runs_link_is_kfps_run_details_page():
    # frontend/src/components/Router.tsx (kubeflow/pipelines 2.14.0): /runs/details/:runId
    assert kfp.run_url("https://kfp.example.com", "r-1") == (
        "https://kfp.example.com/#/runs/details/r-1"
    )
    assert kfp.run_url("", "r-1") == "" and kfp.run_url("https://kfp.example.com", "") == ""


def test_where_sagemaker_writes_each_resources_logs():
    # SageMaker developer guide, "Log groups and streams that Amazon SageMaker AI sends to
    # Amazon CloudWatch Logs"
    assert sagemaker_events.TRAINING_JOB.where_logs("mnist-1-train") == (
        "log group /aws/sagemaker/TrainingJobs, streams starting mnist-1-train/"
    )
    assert sagemaker_events.TRANSFORM_JOB.where_logs("mnist-1-transform") == (
        "log group /aws/sagemaker/TransformJobs, streams starting mnist-1-transform/"
    )
    assert sagemaker_events.ENDPOINT.where_logs("mnist-1-endpoint") == (
        "log group /aws/sagemaker/Endpoints/mnist-1-endpoint"
    )
