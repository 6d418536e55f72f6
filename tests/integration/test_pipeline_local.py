"""The compiled pipeline, run by KFP's local runner against the AWS emulator on 127.0.0.1."""

import gzip
import json
import pickle

import numpy as np
import pytest

from core.contracts import COST_TAGS, RUN_KEY_TAG
from mnistflow.local.emulator import AwsEmulator
from tests.conftest import SAMPLE_DIR
from tests.integration.pipeline_harness import LOCAL_DATA_BUCKET, run_dataset

pytestmark = pytest.mark.integration


@pytest.fixture
def emulator():
    with AwsEmulator() as emu:
        yield emu


def _tags(emulator, arn):
    return {
        t["Key"]: t["Value"]
        for t in emulator.client("sagemaker").list_tags(ResourceArn=arn)["Tags"]
    }


def test_the_sample_dataset_goes_all_the_way_to_an_endpoint(emulator, tmp_path):
    # Given the classic mnist.pkl.gz sample
    # When the compiled pipeline runs on it
    run = run_dataset(emulator, SAMPLE_DIR / "mnist-sample.pkl.gz", tmp_path)
    # Then every step succeeded
    assert run.result.succeeded, run.result.error
    stock = run.inventory
    prefix = f"runs/{run.run_key}/"
    # and the run's inputs are in the bucket next to the upload
    assert {
        f"{prefix}train/train-001-of-001.recordio",
        f"{prefix}transform-input/test.csv",
        f"{prefix}labels/train.csv",
        f"{prefix}labels/validation.csv",
        f"{prefix}labels/test.csv",
    } <= set(stock["objects"])
    s3 = emulator.client("s3")
    test_csv = s3.get_object(Bucket=LOCAL_DATA_BUCKET, Key=f"{prefix}transform-input/test.csv")
    lines = test_csv["Body"].read().decode().splitlines()
    assert len(lines) == 1000 and all(len(line.split(",")) == 784 for line in lines)
    # and the training job has the seed's hyperparameters (k raised to the default 32), small
    # instances and the run-key tag
    job = stock["training_job"]
    assert job["TrainingJobName"] == f"{run.run_key}-train"
    assert job["HyperParameters"] == {"k": "32", "feature_dim": "784", "mini_batch_size": "500"}
    assert job["ResourceConfig"]["InstanceType"] == "ml.m5.large"
    assert job["AlgorithmSpecification"]["TrainingImage"].endswith(
        "dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
    )
    channel = job["InputDataConfig"][0]
    assert channel["ContentType"] == "application/x-recordio-protobuf"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"].endswith(f"{prefix}train/")
    assert _tags(emulator, job["TrainingJobArn"]) == {RUN_KEY_TAG: run.run_key, **COST_TAGS}
    # on demand by default: no spot, and SageMaker's two figures are equal
    assert "EnableManagedSpotTraining" not in job
    assert job["BillableTimeInSeconds"] == job["TrainingTimeInSeconds"]
    # and the model was made from the job's artifact, promoted out of runs/ (which expires) to
    # models/<run key>/, the same bytes, tagged with the run key
    model = stock["model"]
    promoted = f"s3://{LOCAL_DATA_BUCKET}/models/{run.run_key}/model.tar.gz"
    assert model["PrimaryContainer"]["ModelDataUrl"] == promoted
    trained = job["ModelArtifacts"]["S3ModelArtifacts"].removeprefix(f"s3://{LOCAL_DATA_BUCKET}/")
    copy = s3.get_object(Bucket=LOCAL_DATA_BUCKET, Key=f"models/{run.run_key}/model.tar.gz")
    assert (
        copy["Body"].read() == s3.get_object(Bucket=LOCAL_DATA_BUCKET, Key=trained)["Body"].read()
    )
    tagging = s3.get_object_tagging(
        Bucket=LOCAL_DATA_BUCKET, Key=f"models/{run.run_key}/model.tar.gz"
    )
    assert tagging["TagSet"] == [{"Key": RUN_KEY_TAG, "Value": run.run_key}]
    assert model["RunKeyTag"] == run.run_key
    # and the batch transform scored the unlabelled test split line by line
    transform = stock["transform_job"]
    assert transform["TransformInput"]["ContentType"] == "text/csv"
    assert transform["TransformInput"]["SplitType"] == "Line"
    assert transform["TransformOutput"]["S3OutputPath"].endswith(f"{prefix}transform-output/")
    assert transform["RunKeyTag"] == run.run_key
    # and the endpoint is in service under the run's name
    endpoint = stock["endpoint"]
    assert endpoint["EndpointName"] == f"{run.run_key}-endpoint"
    assert endpoint["EndpointStatus"] == "InService"
    assert endpoint["RunKeyTag"] == run.run_key
    # and evaluate scored the model and said so, before the deploy
    [evaluated] = [e for e in run.final_events if e["detail-type"] == "MNIST Model Evaluated"]
    assert evaluated["detail"]["passed"] is True
    assert evaluated["detail"]["accuracy"] >= evaluated["detail"]["min_accuracy"]
    assert f"runs/{run.run_key}/evaluation.json" in run.inventory["objects"]
    # and the deployed model's evaluation (its clusters' digits) is kept next to its artifact
    kept = s3.get_object(Bucket=LOCAL_DATA_BUCKET, Key=f"models/{run.run_key}/evaluation.json")
    assert json.loads(kept["Body"].read())["run_key"] == run.run_key
    # and the exit handler put exactly one final-state event on EventBridge
    [event] = [e for e in run.final_events if e["detail-type"] == "MNIST Pipeline Run State Change"]
    assert event["source"] == "mnistflow.pipeline"
    assert event["detail"] == {
        "run_key": run.run_key,
        "state": "SUCCEEDED",
        "failed_step": "",
        "error": "",
        "dataset_uri": run.dataset_uri,
        "endpoint_name": f"{run.run_key}-endpoint",
        "kfp_run": event["detail"]["kfp_run"],
        "model_rejected": False,
    }


def test_the_keras_npz_layout_runs_too_here_with_managed_spot_training(emulator, tmp_path):
    run = run_dataset(
        emulator,
        SAMPLE_DIR / "mnist-sample.npz",
        tmp_path,
        endpoint_name="mnist-demo",
        spot_training=True,
        spot_max_wait_seconds=7200,
    )
    assert run.result.succeeded, run.result.error
    assert run.inventory["endpoint"]["EndpointName"] == "mnist-demo"
    # the pipeline's spot parameters reached the training job (KFP's boolean parameter too)
    job = run.inventory["training_job"]
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    # (its validation split is the last sixth of train)
    assert f"runs/{run.run_key}/labels/validation.csv" in run.inventory["objects"]


def test_a_second_run_on_the_stable_endpoint_retires_the_first_beyond_the_kept_n(
    emulator, tmp_path
):
    # Given two runs deployed in turn to one stable endpoint, keeping one config; the second
    # goes serverless (the endpoint is deleted and created again under its name: endpoint_mode)
    first = run_dataset(
        emulator,
        SAMPLE_DIR / "mnist-sample.pkl.gz",
        tmp_path / "1",
        endpoint_name="mnist-demo",
        kept_endpoint_configs=1,
    )
    second = run_dataset(
        emulator,
        SAMPLE_DIR / "mnist-sample.npz",
        tmp_path / "2",
        endpoint_name="mnist-demo",
        kept_endpoint_configs=1,
        # (this is about retiring: the second model deploys whatever it scores against the first)
        deploy_tolerance=1.0,
        resources=first.resources,
        endpoint_type="serverless",
        serverless_memory_mb=1024,
        serverless_max_concurrency=3,
    )
    assert first.result.succeeded and second.result.succeeded, second.result.error
    # Then the endpoint serves the second run, serverless, and the first run's config and model
    # are gone (nothing orphaned by the change of mode)
    sm = emulator.client("sagemaker")
    assert second.inventory["endpoint"]["EndpointConfigName"] == f"{second.run_key}-epc"
    [variant] = sm.describe_endpoint(EndpointName="mnist-demo")["ProductionVariants"]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 3}
    configs = {c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]}
    models = {m["ModelName"] for m in sm.list_models()["Models"]}
    assert configs == {f"{second.run_key}-epc"}
    assert models == {f"{second.run_key}-model"}
    # while the first run's files (its evaluation) stay
    evaluation = f"runs/{first.run_key}/evaluation.json"
    assert emulator.client("s3").head_object(Bucket=LOCAL_DATA_BUCKET, Key=evaluation)


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def _assert_failed_at_preprocess_and_nothing_deployed(run):
    assert not run.result.succeeded
    assert run.result.failed_task == "preprocess"
    assert run.result.error.startswith("DatasetError: s3://mnistflow-local-data/incoming/")
    stock = run.inventory
    # the only thing written for the run is the failure the step left for the exit handler
    assert list(stock["objects"]) == [f"runs/{run.run_key}/status/preprocess.json"]
    assert (stock["training_job"], stock["model"], stock["endpoint"]) == (None, None, None)
    [event] = run.final_events
    assert event["detail"]["state"] == "FAILED"
    assert event["detail"]["failed_step"] == "preprocess"
    assert event["detail"]["error"] == run.result.error


def test_an_empty_upload_fails_at_preprocess_and_deploys_nothing(emulator, tmp_path):
    data = tmp_path / "empty.npz"
    data.write_bytes(b"")
    run = run_dataset(emulator, data, tmp_path / "work")
    _assert_failed_at_preprocess_and_nothing_deployed(run)
    assert "empty.npz: the file is empty" in run.result.error


def test_a_pickle_that_runs_code_is_refused_without_running_it(emulator, tmp_path, monkeypatch):
    # Given a .pkl.gz whose pickle would write a file if it were ever loaded
    data = tmp_path / "evil.pkl.gz"
    data.write_bytes(gzip.compress(pickle.dumps(_RunsCode())))
    monkeypatch.chdir(tmp_path)
    # When it goes through the pipeline
    run = run_dataset(emulator, data, tmp_path / "work")
    # Then preprocess refuses it, names the file, and the code never ran
    _assert_failed_at_preprocess_and_nothing_deployed(run)
    assert "evil.pkl.gz" in run.result.error
    assert not (tmp_path / "PWNED").exists()


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def _keras_arrays(n_train=200, n_test=20):
    rng = np.random.default_rng(7)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def _bad_file(folder, case):
    arrays = _keras_arrays()
    if case == "truncated.pkl.gz":
        sample = (SAMPLE_DIR / "mnist-sample.pkl.gz").read_bytes()
        (folder / case).write_bytes(sample[: len(sample) // 2])
        return folder / case
    if case == "shape.npz":
        arrays["x_train"] = arrays["x_train"].reshape(200, 784)[:, :700]
    elif case == "labels.npz":
        arrays["y_test"][3] = 11
    elif case == "few.npz":
        arrays = _keras_arrays(n_train=5)
    elif case == "missing.npz":
        del arrays["y_train"]
    return _npz(folder / case, **arrays)


@pytest.mark.parametrize(
    "name", ["truncated.pkl.gz", "shape.npz", "labels.npz", "few.npz", "missing.npz"]
)
def test_each_kind_of_bad_file_fails_at_preprocess_naming_the_file(emulator, tmp_path, name):
    # Given a truncated gzip, a wrong shape, a label of 11, too few images, or a missing array
    data = _bad_file(tmp_path, name)
    # When it goes through the compiled pipeline
    run = run_dataset(emulator, data, tmp_path / "work")
    # Then preprocess refuses it with an error naming the file, and nothing is deployed
    assert run.result.failed_task == "preprocess", run.result.error
    assert f"incoming/{name}: " in run.result.error, run.result.error
    assert (run.inventory["training_job"], run.inventory["endpoint"]) == (None, None)
    [event] = run.final_events
    assert (event["detail"]["state"], event["detail"]["failed_step"]) == ("FAILED", "preprocess")


def _noise_labels(tmp_path):
    """The sample with its labels shuffled: images and digits no longer match."""
    import gzip
    import pickle

    import numpy as np

    with gzip.open(SAMPLE_DIR / "mnist-sample.pkl.gz", "rb") as source:
        splits = pickle.load(source, encoding="latin1")  # noqa: S301 (our own shipped sample)
    rng = np.random.default_rng(5)
    noisy = tuple((x, rng.permutation(y)) for x, y in splits)
    path = tmp_path / "noise.pkl.gz"
    with gzip.open(path, "wb") as out:
        pickle.dump(noisy, out, protocol=2)
    return path


def test_labels_that_are_noise_end_model_rejected_and_nothing_is_deployed(emulator, tmp_path):
    # Given a dataset whose labels are noise (the images say nothing about them)
    run = run_dataset(emulator, _noise_labels(tmp_path), tmp_path / "work")
    # Then the run fails at evaluate, under the gate, and no endpoint is created
    assert run.result.failed_task == "evaluate", run.result.error
    assert run.inventory["endpoint"] is None
    [evaluated] = [e for e in run.final_events if e["detail-type"] == "MNIST Model Evaluated"]
    assert evaluated["detail"]["passed"] is False and evaluated["detail"]["accuracy"] < 0.3
    [final] = [e for e in run.final_events if e["detail-type"] == "MNIST Pipeline Run State Change"]
    assert final["detail"]["failed_step"] == "evaluate" and final["detail"]["model_rejected"]
    assert "model rejected: accuracy" in final["detail"]["error"]
    # and the exit handler deleted the model the run created, keeping its evaluation
    assert run.inventory["model"] is None
    assert f"runs/{run.run_key}/evaluation.json" in run.inventory["objects"]
