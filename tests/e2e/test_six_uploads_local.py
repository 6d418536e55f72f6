"""Issue 12's "must show" on the whole local stack: after 6 uploads (3 good datasets, 1 worse
than the serving model, 1 below the gate, 1 that fails in training) exactly one endpoint serves
the best model, no more than the kept N endpoint configs and models remain, the registry holds
5 versions with the right approval statuses, and nothing SageMaker serves with is left from the
failed or rejected runs, while their records, evaluations and registry entries stay.

Every outcome is the product's own, on real data: the shipped sample (real MNIST digits) with
the run's k set by the upload's S3 metadata, and the local SageMaker's seeded k-means, so each
accuracy is the same on every run. Measured once (test accuracy; the stack's defaults, set
here so that a change of cdk.json does not move the outcomes: gate min_accuracy 0.6,
deploy_tolerance 0.01, kept_endpoint_configs 2):

  upload      data                 k     accuracy   expected outcome
  good-1      sample (2,500 train) 16    0.677      deploys (first model: nothing to beat)
  gate        sample               2     0.179      MODEL_REJECTED: under the gate
  good-2      sample               24    0.722      deploys (>= 0.677 - 0.01)
  worse       sample               20    0.682      MODEL_REJECTED: not better than the serving
                                                    model (0.722 on the same split, - 0.01)
  fails       240 images           256   -          FAILED at train (RUN_FAILED email): k-means
                                                    needs at least k training records
  good-3      sample               48    0.751      deploys (>= 0.722 - 0.01): the best

The uploads go one after another (each once the previous has its outcome email and its KFP
run is over): the champion comparison depends on what serves when a run is evaluated, so this
order makes each outcome a fact of the data alone, whatever the scheduling. The local KFP
executes one run at a time anyway, so this costs no time against uploading all six at once
(measured: the same ~90 s; the queue has its own test, test_concurrency_local.py).
They are interleaved, good and bad, so that the failed and rejected runs clean up while a model
serves (and never touch it), a good run after them still deploys, and the last good run's
retirement meets the leftovers of every kind of run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from core import contracts, kfp
from core.contracts import (
    EVALUATION_FILE,
    KIND_RUN_STARTED,
    MODEL_PACKAGE_GROUP,
    SERVING_MODELS_PREFIX,
    resource_name,
    run_key,
    run_prefix,
)
from core.settings import BY_KEY
from mnistflow.predict import digit_mapping, predict
from mnistflow.status import describe_runs
from pipeline.steps import registry
from pipeline.steps.dataset import load_dataset
from pipeline.steps.kmeans_model import MODEL_ARCHIVE, closest_clusters, read_centroids
from pipeline.steps.steps import promoted_artifact_uri
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.e2e
RUN_DEADLINE_SECONDS = 120  # one run, ~10 s here, on 2 shared cores
# The settings the outcomes depend on, at the schema's defaults.
SETTINGS = {
    key: BY_KEY[key].default
    for key in ("min_accuracy", "deploy_tolerance", "kept_endpoint_configs", "endpoint_name")
}
KEPT = SETTINGS["kept_endpoint_configs"]
SAMPLE = SAMPLE_DIR / "mnist-sample.npz"
PROMOTED_FILES = (MODEL_ARCHIVE, EVALUATION_FILE)  # under models/<run key>/ while it is kept
# A dataset that preprocess accepts (at least 100 training images, 10 for validation and test)
# and k-means cannot train on: 240 images give 200 for training (the last sixth validates),
# fewer than k=256 clusters (the local SageMaker fails the job as the image does, "k-means needs
# at least k records").
SMALL_TRAIN_IMAGES, SMALL_TEST_IMAGES = 240, 50
SERVED_IMAGES = 100  # test images sent to the endpoint (mnistflow predict's most)


@dataclass(frozen=True)
class Upload:
    name: str
    k: int
    outcome: str  # the run record's outcome
    small: bool = False


UPLOADS = (
    Upload("good-1", 16, contracts.STATUS_SUCCEEDED),
    Upload("gate", 2, contracts.STATUS_MODEL_REJECTED),
    Upload("good-2", 24, contracts.STATUS_SUCCEEDED),
    Upload("worse", 20, contracts.STATUS_MODEL_REJECTED),
    Upload("fails", 256, contracts.STATUS_FAILED, small=True),
    Upload("good-3", 48, contracts.STATUS_SUCCEEDED),
)
BEST = "good-3"


def small_dataset(path: Path) -> Path:
    """The first images of the sample, in its own (Keras npz) layout."""
    with np.load(SAMPLE) as sample:
        np.savez(
            path,
            x_train=sample["x_train"][:SMALL_TRAIN_IMAGES],
            y_train=sample["y_train"][:SMALL_TRAIN_IMAGES],
            x_test=sample["x_test"][:SMALL_TEST_IMAGES],
            y_test=sample["y_test"][:SMALL_TEST_IMAGES],
        )
    return path


def listed(sm, operation: str, field: str) -> list[str]:
    """Every name SageMaker lists (all pages)."""
    names = []
    for page in sm.get_paginator(operation).paginate():
        key = {"Endpoints": "EndpointName", "EndpointConfigs": "EndpointConfigName"}.get(
            field, "ModelName"
        )
        names += [summary[key] for summary in page[field]]
    return sorted(names)


def test_six_uploads_leave_one_endpoint_serving_the_best_model(tmp_path):
    from mnistflow.local.stack import LocalStack

    small = small_dataset(tmp_path / "small.npz")
    started = time.monotonic()
    with LocalStack(tmp_path / "stack", context=SETTINGS) as stack:
        bucket = stack.names.data_bucket
        sm = stack.emulator.client("sagemaker")
        s3 = stack.emulator.client("s3")
        endpoint = SETTINGS["endpoint_name"]
        keys: dict[str, str] = {}
        emails: dict[str, list] = {}
        seconds: dict[str, float] = {}

        # Given 6 uploads, one after another, each with its k in its S3 metadata
        for upload in UPLOADS:
            data = small if upload.small else SAMPLE
            key, version = stack.upload(
                data, f"incoming/{upload.name}.npz", metadata={"k": str(upload.k)}
            )
            this_run = keys[upload.name] = run_key(bucket, key, version)
            received = emails.setdefault(this_run, [])
            run_started = time.monotonic()

            def ended(this_run=this_run, received=received) -> bool:
                for email in stack.inbox():
                    emails.setdefault(email.run_key, []).append(email)
                kfp_runs = stack.kfp.runs_named(this_run)
                return any(e.kind != KIND_RUN_STARTED for e in received) and any(
                    r["state"] in kfp.FINISHED_RUNTIME_STATES for r in kfp_runs
                )

            # When the stack runs until the run has its outcome email and its pipeline is over
            # (a deploy's email goes out when the endpoint is InService; retiring what it
            # superseded and settling its registry version come after, in the same run)
            assert stack.run_until(ended, RUN_DEADLINE_SECONDS), (
                upload,
                describe_runs(stack.runs.scan()),
                [c.error for c in stack.invocations if c.error],
            )
            seconds[upload.name] = time.monotonic() - run_started
        by_key = {keys[u.name]: u for u in UPLOADS}
        records = {k: stack.runs.get(k) for k in by_key}
        evaluations = {}
        for this_run in by_key:
            found = s3.list_objects_v2(Bucket=bucket, Prefix=run_prefix(this_run) + EVALUATION_FILE)
            if found.get("KeyCount"):
                body = s3.get_object(Bucket=bucket, Key=run_prefix(this_run) + EVALUATION_FILE)
                evaluations[this_run] = json.loads(body["Body"].read())
        accuracy = {by_key[k].name: round(e["accuracy"], 4) for k, e in evaluations.items()}
        print(f"accuracy per upload: {accuracy}; seconds per run: {seconds}")

        # Then no function invocation failed for good, nothing waits on a failure queue
        assert [c.error for c in stack.invocations if c.error] == []
        assert all(stack.failed_events(f) == [] for f in contracts.REDRIVEN)
        # And each run ended as its data makes it, with exactly its emails: RUN_STARTED and its
        # outcome, once each
        for this_run, upload in by_key.items():
            assert records[this_run].outcome == upload.outcome, (upload, records[this_run])
            kinds = sorted(e.kind for e in emails[this_run])
            assert kinds == sorted([KIND_RUN_STARTED, contracts.KIND_FOR_OUTCOME[upload.outcome]])
            assert records[this_run].run_settings["k"] == upload.k
            [kfp_run] = stack.kfp.runs_named(this_run)
            succeeded = upload.outcome == contracts.STATUS_SUCCEEDED
            assert kfp_run["state"] == (kfp.SUCCEEDED if succeeded else kfp.FAILED), kfp_run
        # (the failed one in training, for want of records; the rejected ones for their reasons)
        [failed_email] = [e for e in emails[keys["fails"]] if e.kind != KIND_RUN_STARTED]
        assert "k is 256" in failed_email.message, failed_email.message
        gate, worse = evaluations[keys["gate"]], evaluations[keys["worse"]]
        assert gate["accuracy"] < gate["min_accuracy"] and gate["champion"]["compared"] is False
        assert worse["passed"] is True and worse["champion"]["beats_champion"] is False
        # (the worse one was scored against the model serving then, good-2's, on its own split:
        # the same images as good-2's, so the same figure)
        assert worse["champion"]["champion_model"] == resource_name(keys["good-2"], "model")
        assert worse["champion"]["champion_accuracy"] == pytest.approx(
            evaluations[keys["good-2"]]["accuracy"], abs=1e-12
        )
        # (their emails give the figures: under the gate; both models')
        subjects = {
            name: next(e.subject for e in emails[keys[name]] if e.kind != KIND_RUN_STARTED)
            for name in ("gate", "worse")
        }
        assert (
            f"{gate['accuracy']:.2%} under the {gate['min_accuracy']:.2%} gate"
            in (subjects["gate"])
        )
        assert (
            f"{worse['accuracy']:.2%} vs the serving model's"
            f" {worse['champion']['champion_accuracy']:.2%}" in subjects["worse"]
        ), subjects

        # And exactly one endpoint exists, serving the best model
        best = keys[BEST]
        assert listed(sm, "list_endpoints", "Endpoints") == [endpoint]
        serving = sm.describe_endpoint(EndpointName=endpoint)
        assert serving["EndpointStatus"] == "InService"
        assert serving["EndpointConfigName"] == resource_name(
            best, contracts.ENDPOINT_CONFIG_SUFFIX
        )
        [variant] = sm.describe_endpoint_config(EndpointConfigName=serving["EndpointConfigName"])[
            "ProductionVariants"
        ]
        assert variant["ModelName"] == resource_name(best, contracts.MODEL_SUFFIX)
        model = sm.describe_model(ModelName=variant["ModelName"])
        assert model["PrimaryContainer"]["ModelDataUrl"] == promoted_artifact_uri(bucket, best)
        # (its answers are the nearest of good-3's centroids, named with good-3's digits)
        test = load_dataset(SAMPLE, source=str(SAMPLE)).splits["test"]
        images, labels = test.x[:SERVED_IMAGES], test.y[:SERVED_IMAGES]
        mapping = digit_mapping(sm, s3, endpoint)
        assert mapping == evaluations[best]["mapping"] and len(mapping) == by_key[best].k
        served = predict(
            sm, stack.emulator.client("sagemaker-runtime"), endpoint, images, labels, mapping
        )
        artifact = s3.get_object(
            Bucket=bucket, Key=f"{SERVING_MODELS_PREFIX}{best}/{MODEL_ARCHIVE}"
        )
        centroids = read_centroids(artifact["Body"].read())
        assert [p.cluster for p in served] == closest_clusters(centroids, images)[0].tolist()
        others = {name: a for name, a in accuracy.items() if name != BEST}
        assert accuracy[BEST] > max(others.values()), accuracy

        # And endpoint configs and models are no more than the kept N: the last N deployed
        configs = listed(sm, "list_endpoint_configs", "EndpointConfigs")
        models = listed(sm, "list_models", "Models")
        kept = [keys["good-2"], best][-KEPT:]
        assert len(configs) <= KEPT and len(models) <= KEPT
        assert configs == sorted(resource_name(k, contracts.ENDPOINT_CONFIG_SUFFIX) for k in kept)
        assert models == sorted(resource_name(k, contracts.MODEL_SUFFIX) for k in kept)
        # (and so are the promoted artifacts: the kept runs' model and evaluation only)
        promoted = s3.list_objects_v2(Bucket=bucket, Prefix=SERVING_MODELS_PREFIX)["Contents"]
        assert sorted(o["Key"] for o in promoted) == sorted(
            f"{SERVING_MODELS_PREFIX}{k}/{name}" for k in kept for name in PROMOTED_FILES
        )

        # And the registry holds 5 versions: Approved for the runs that deployed (good-1 too:
        # it served until superseded), Rejected for the two the gate or the champion stopped;
        # the failed run has none
        versions = []
        for page in sm.get_paginator("list_model_packages").paginate(
            ModelPackageGroupName=MODEL_PACKAGE_GROUP, ModelPackageType="Versioned"
        ):
            versions += page["ModelPackageSummaryList"]
        assert len(versions) == 5, versions
        statuses = {
            by_key[v["ModelPackageDescription"].partition(":")[0]].name: v["ModelApprovalStatus"]
            for v in versions
        }
        assert statuses == {
            "good-1": registry.APPROVED,
            "gate": registry.REJECTED,
            "good-2": registry.APPROVED,
            "worse": registry.REJECTED,
            "good-3": registry.APPROVED,
        }
        assert registry.find_package(sm, run_key=keys["fails"]) is None

        # And nothing SageMaker serves with is left from the failed or rejected runs
        gone = [keys["gate"], keys["worse"], keys["fails"]]
        left = listed(sm, "list_endpoints", "Endpoints") + configs + models
        assert not [name for name in left if name.startswith(tuple(gone))], left
        # while their records, evaluations (of the two evaluated) and registry entries stay
        assert {records[k].outcome for k in gone} == {
            contracts.STATUS_MODEL_REJECTED,
            contracts.STATUS_FAILED,
        }
        assert all(records[k].dataset is not None for k in gone)
        assert keys["gate"] in evaluations and keys["worse"] in evaluations
        assert keys["fails"] not in evaluations
        assert all(registry.find_package(sm, run_key=keys[n]) for n in ("gate", "worse"))
    print(f"six uploads on the local stack: {time.monotonic() - started:.1f} s")
