"""The steps around the libraries: size checks before reading, S3 layout, final-state reports."""

import json

import boto3
import pytest
from moto import mock_aws

from pipeline.steps import steps
from pipeline.steps.dataset import DatasetError
from tests.conftest import SAMPLE_DIR

BUCKET = "data-bucket-for-tests"


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


class _CountingS3:
    """Passes calls through to moto, and counts downloads."""

    def __init__(self, s3):
        self._s3 = s3
        self.downloads = 0

    def __getattr__(self, name):
        return getattr(self._s3, name)

    def download_file(self, *args, **kwargs):
        self.downloads += 1
        return self._s3.download_file(*args, **kwargs)


def test_a_file_over_the_limit_is_refused_before_it_is_downloaded(s3):
    # Given an upload bigger than the limit
    s3.put_object(Bucket=BUCKET, Key="incoming/big.npz", Body=b"x" * 2048)
    counting = _CountingS3(s3)
    # When preprocess looks at it
    with pytest.raises(DatasetError, match=r"big\.npz: 2048 bytes is over the limit of 1024 bytes"):
        steps.preprocess(
            counting,
            dataset_uri=f"s3://{BUCKET}/incoming/big.npz",
            dataset_version="",
            run_key="mnist-0",
            max_bytes=1024,
        )
    # Then it never read it, and wrote nothing
    assert counting.downloads == 0
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/")


def test_an_empty_object_is_refused_by_name(s3):
    s3.put_object(Bucket=BUCKET, Key="incoming/folder/empty.pkl.gz", Body=b"")
    with pytest.raises(DatasetError, match=r"incoming/folder/empty\.pkl\.gz: the file is empty"):
        steps.preprocess(
            s3,
            dataset_uri=f"s3://{BUCKET}/incoming/folder/empty.pkl.gz",
            dataset_version="",
            run_key="k",
        )


def test_the_runs_inputs_land_under_its_prefix_and_the_step_says_where(s3):
    s3.upload_file(str(SAMPLE_DIR / "mnist-sample.npz"), BUCKET, "incoming/a b/mnist.npz")
    out = steps.preprocess(
        s3,
        dataset_uri=f"s3://{BUCKET}/incoming/a b/mnist.npz",
        dataset_version="",
        run_key="mnist-0123456789ab",
    )
    base = f"s3://{BUCKET}/runs/mnist-0123456789ab/"
    assert out == {
        "run_uri": base,
        "train_uri": f"{base}train/",
        "transform_input_uri": f"{base}transform-input/",
        "labels_uri": f"{base}labels/",
        "n_train": 2500,  # the last sixth of the Keras train split is kept for validation
        "n_test": 1000,
    }
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/")["Contents"]}
    assert "runs/mnist-0123456789ab/train/train-001-of-001.recordio" in keys


@pytest.mark.parametrize("uri", ["https://x/y.npz", "s3://bucket-only", "s3:///key.npz"])
def test_a_dataset_uri_that_is_not_s3_is_refused(s3, uri):
    with pytest.raises(ValueError, match="is not an s3://bucket/key URI"):
        steps.preprocess(s3, dataset_uri=uri, dataset_version="", run_key="k")


@pytest.mark.parametrize(
    "key", ["incoming/a#b.npz", "incoming/what?.npz", "incoming/100%.npz", "incoming/a+b c é.npz"]
)
def test_an_s3_uri_keeps_every_character_of_its_key(key):
    # S3 keys may hold any UTF-8 character; a URL parser would cut `#` and `?` or decode `%`
    assert steps.split_s3_uri(f"s3://{BUCKET}/{key}") == (BUCKET, key)


@pytest.fixture
def versioned(s3):
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return s3


def test_the_run_reads_the_version_that_started_it_not_the_newest(versioned, tmp_path):
    # Given two quick uploads of the same key: the sample npz, then a file that is no dataset
    key = "incoming/mnist.npz"
    first = versioned.put_object(
        Bucket=BUCKET, Key=key, Body=(SAMPLE_DIR / "mnist-sample.npz").read_bytes()
    )["VersionId"]
    versioned.put_object(Bucket=BUCKET, Key=key, Body=b"not a dataset at all")
    # When the first upload's run preprocesses it
    out = steps.preprocess(
        versioned, dataset_uri=f"s3://{BUCKET}/{key}", dataset_version=first, run_key="mnist-1"
    )
    # Then it read the first version, not the newest (which is not a dataset)
    assert (out["n_train"], out["n_test"]) == (2500, 1000)  # 500 of train kept for validation


@pytest.mark.parametrize("instances", [2, 3])
def test_training_data_is_sharded_one_object_per_training_instance(s3, instances):
    # Given the sample and a training job on several instances (ShardedByS3Key)
    s3.upload_file(str(SAMPLE_DIR / "mnist-sample.npz"), BUCKET, "incoming/mnist.npz")
    # When preprocess writes the training data
    steps.preprocess(
        s3,
        dataset_uri=f"s3://{BUCKET}/incoming/mnist.npz",
        dataset_version="",
        run_key="mnist-2",
        train_shards=instances,
    )
    # Then there are as many objects as instances, each holding a non-empty part of the rows
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="runs/mnist-2/train/")["Contents"]
    assert len(listing) == instances
    sizes = [obj["Size"] for obj in listing]
    assert min(sizes) > 0 and max(sizes) - min(sizes) < max(sizes) * 0.01


DATASET_URI = f"s3://{BUCKET}/incoming/mnist.npz"


class _FakeEvents:
    def __init__(self, failed: int = 0):
        self.entries: list[dict] = []
        self.failed = failed

    def put_events(self, Entries):
        self.entries.extend(Entries)
        return {"FailedEntryCount": self.failed, "Entries": [{"ErrorCode": "x"}] * self.failed}


def _fail(s3, step, message):
    with pytest.raises(RuntimeError, match=message):
        with steps.failure_marker(s3, dataset_uri=DATASET_URI, run_key="mnist-0", step=step):
            raise RuntimeError(message)


def test_a_failing_step_leaves_its_error_and_still_fails(s3):
    # Given a step that fails
    _fail(s3, "training", "training job mnist-0-train ended Failed: bad data")
    # Then its error waits for the exit handler under the run's prefix
    failure = steps.first_failure(s3, dataset_uri=DATASET_URI, run_key="mnist-0")
    assert failure["step"] == "training"
    assert failure["error"] == "RuntimeError: training job mnist-0-train ended Failed: bad data"


def test_the_final_state_event_names_the_first_step_that_failed(s3):
    # Given two steps failed, one after the other
    _fail(s3, "transform", "first")
    _fail(s3, "endpoint", "second")
    events = _FakeEvents()
    # When the exit handler reports a failed run
    detail = steps.report_final_state(
        s3,
        events,
        dataset_uri=DATASET_URI,
        run_key="mnist-0",
        state="FAILED",
        endpoint_name="",
        kfp_run="runs/abc",
        event_bus_name="default",
    )
    # Then one event goes out, naming the first failure and the run's endpoint name
    [entry] = events.entries
    assert entry["Source"] == "mnistflow.pipeline"
    assert json.loads(entry["Detail"]) == detail
    assert (detail["failed_step"], detail["error"]) == ("transform", "RuntimeError: first")
    assert detail["endpoint_name"] == "mnist-0-endpoint"


def _report(s3, state: str, endpoint_name: str = "") -> dict:
    return steps.report_final_state(
        s3,
        _FakeEvents(),
        dataset_uri=DATASET_URI,
        run_key="mnist-0",
        state=state,
        endpoint_name=endpoint_name,
        kfp_run="runs/abc",
        event_bus_name="default",
    )


@pytest.mark.parametrize("state", ["COMPLETE", "SUCCEEDED"])
def test_a_run_that_succeeded_after_a_retried_failure_reports_no_failure(s3, state):
    # Given a step whose first attempt failed (its marker was not taken back)
    _fail(s3, "training", "transient")
    # When the run ends as a current backend (COMPLETE) or kfp.local (SUCCEEDED) says success
    detail = _report(s3, state, endpoint_name="mnist-shared")
    # Then the event reports no failure
    assert (detail["failed_step"], detail["error"], detail["endpoint_name"]) == (
        "",
        "",
        "mnist-shared",
    )


def test_a_retried_step_that_succeeds_takes_its_marker_back(s3):
    # Given the training step failed once, then its retry succeeded, then transform failed
    _fail(s3, "training", "throttled")
    with steps.failure_marker(s3, dataset_uri=DATASET_URI, run_key="mnist-0", step="training"):
        pass
    _fail(s3, "transform", "bad payload")
    # When the run ends failed
    detail = _report(s3, "FAILED")
    # Then the event names the step that really failed, not the retried one
    assert (detail["failed_step"], detail["error"]) == ("transform", "RuntimeError: bad payload")


def test_an_event_eventbridge_refuses_fails_the_exit_handler(s3):
    with pytest.raises(RuntimeError, match="EventBridge refused the MNIST Pipeline Run State"):
        steps.report_final_state(
            s3,
            _FakeEvents(failed=1),
            dataset_uri=DATASET_URI,
            run_key="mnist-0",
            state="FAILED",
            endpoint_name="",
            kfp_run="",
            event_bus_name="default",
        )


def test_promoted_artifacts_are_listed_newest_first_with_their_run_keys():
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="mnistflow-data")
        s3.put_object(Bucket="mnistflow-data", Key="runs/mnist-0123456789ab/m.tar.gz", Body=b"m")
        for key in ("mnist-0123456789ab", "mnist-fedcba987654"):
            steps.promote_artifact(
                s3,
                run_key=key,
                model_artifacts_uri="s3://mnistflow-data/runs/mnist-0123456789ab/m.tar.gz",
            )
        # an evaluation kept next to a model, and what is not a run's, are not artifacts
        s3.put_object(Bucket="mnistflow-data", Key="models/mnist-0123456789ab/evaluation.json")
        s3.put_object(Bucket="mnistflow-data", Key="models/other/model.tar.gz")
        listed = steps.promoted_artifacts(s3, bucket="mnistflow-data")
        assert sorted(item["run_key"] for item in listed) == [
            "mnist-0123456789ab",
            "mnist-fedcba987654",
        ]
        times = [item["last_modified"] for item in listed]
        assert times == sorted(times, reverse=True)  # newest first (S3 times are to the second)
        uris = {item["run_key"]: item["uri"] for item in listed}
        assert uris["mnist-0123456789ab"] == (
            "s3://mnistflow-data/models/mnist-0123456789ab/model.tar.gz"
        )
        tags = s3.get_object_tagging(
            Bucket="mnistflow-data", Key="models/mnist-fedcba987654/model.tar.gz"
        )
        assert tags["TagSet"] == [{"Key": "mnistflow:run-key", "Value": "mnist-fedcba987654"}]
