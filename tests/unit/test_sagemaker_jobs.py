"""SageMaker resources of a run: find-or-create, wait, fail with the reason, stop on cancel."""

import os
import signal
from datetime import datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from core.contracts import SERVED_AT_TAG
from pipeline.steps import sagemaker_jobs as jobs


def _not_found(what: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": "ValidationException", "Message": f"Could not find {what}."}},
        "Describe",
    )


class FakeSageMaker:
    """Records calls; each training/transform job walks through a scripted list of statuses."""

    def __init__(self, statuses=("InProgress", "Completed"), failure_reason=None, on_poll=None):
        self.calls: list[tuple[str, dict]] = []
        self.jobs: dict[str, list[str]] = {}
        self.statuses = list(statuses)
        self.failure_reason = failure_reason
        self.on_poll = on_poll
        self.endpoints: dict[str, dict] = {}
        self.configs: set[str] = set()
        self.tags: dict[str, list[dict]] = {}

    def _job(self, name, status_field):
        if name not in self.jobs:
            raise _not_found(name)
        if self.on_poll:
            self.on_poll(len(self.calls))
        history = self.jobs[name]
        status = history.pop(0) if len(history) > 1 else history[0]
        out = {status_field: status, "ModelArtifacts": {"S3ModelArtifacts": "s3://b/m.tar.gz"}}
        if self.failure_reason and status == "Failed":
            out["FailureReason"] = self.failure_reason
        return out

    def create_training_job(self, **request):
        self.calls.append(("create_training_job", request))
        self.jobs[request["TrainingJobName"]] = list(self.statuses)

    def describe_training_job(self, TrainingJobName):
        self.calls.append(("describe_training_job", {"TrainingJobName": TrainingJobName}))
        return self._job(TrainingJobName, "TrainingJobStatus")

    def stop_training_job(self, TrainingJobName):
        self.calls.append(("stop_training_job", {"TrainingJobName": TrainingJobName}))

    def describe_endpoint_config(self, EndpointConfigName):
        if EndpointConfigName not in self.configs:
            raise _not_found(EndpointConfigName)
        name = EndpointConfigName
        return {
            "EndpointConfigName": EndpointConfigName,
            "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:1:endpoint-config/{name}",
        }

    def list_tags(self, ResourceArn):
        return {"Tags": self.tags.get(ResourceArn, [])}

    def create_endpoint_config(self, **request):
        self.calls.append(("create_endpoint_config", request))
        self.configs.add(request["EndpointConfigName"])

    def describe_endpoint(self, EndpointName):
        if EndpointName not in self.endpoints:
            raise _not_found(EndpointName)
        return self.endpoints[EndpointName]

    def create_endpoint(self, EndpointName, EndpointConfigName, Tags):
        self.calls.append(("create_endpoint", {"EndpointName": EndpointName}))
        self.endpoints[EndpointName] = {
            "EndpointName": EndpointName,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:1:endpoint/{EndpointName}",
            "EndpointConfigName": EndpointConfigName,
            "EndpointStatus": "InService",
        }

    def update_endpoint(self, EndpointName, EndpointConfigName, **guardrails):
        self.calls.append(
            ("update_endpoint", {"EndpointConfigName": EndpointConfigName, **guardrails})
        )
        self.endpoints[EndpointName]["EndpointConfigName"] = EndpointConfigName

    def delete_endpoint(self, EndpointName):
        self.calls.append(("delete_endpoint", {"EndpointName": EndpointName}))
        self.endpoints[EndpointName]["EndpointStatus"] = "Deleting"

    def add_tags(self, ResourceArn, Tags):
        self.calls.append(("add_tags", {"ResourceArn": ResourceArn, "Tags": Tags}))
        self.tags.setdefault(ResourceArn, []).extend(Tags)


REQUEST = {"TrainingJobName": "mnist-0123456789ab-train"}
NO_WAIT = {"timeout_seconds": 600, "poll_seconds": 5}


def _names(fake):
    return [name for name, _ in fake.calls]


def test_missing_training_job_is_created_and_waited_for_without_real_sleeping():
    # Given no job yet, and SageMaker reporting InProgress twice before Completed
    fake = FakeSageMaker(statuses=("InProgress", "InProgress", "Completed"))
    naps = []
    # When the step ensures the job
    done = jobs.ensure_training_job(fake, REQUEST, sleep=naps.append, **NO_WAIT)
    # Then it was created once and polled until Completed, napping the poll interval between
    assert _names(fake).count("create_training_job") == 1
    assert done["TrainingJobStatus"] == "Completed"
    assert naps == [5, 5]


def test_a_retried_step_finds_its_own_job_instead_of_starting_a_second():
    # Given the first attempt already created the job
    fake = FakeSageMaker(statuses=("Completed",))
    fake.create_training_job(**REQUEST)
    fake.calls.clear()
    # When the step runs again
    jobs.ensure_training_job(fake, REQUEST, sleep=lambda _: None, **NO_WAIT)
    # Then nothing new is created
    assert "create_training_job" not in _names(fake)


def test_a_failed_job_fails_the_step_with_sagemakers_reason():
    # Given SageMaker fails the job with a reason
    fake = FakeSageMaker(statuses=("Failed",), failure_reason="ClientError: No S3 objects found")
    # When / Then the step fails with that reason and the job's name
    with pytest.raises(jobs.StepFailed, match="mnist-0123456789ab-train ended Failed: ClientError"):
        jobs.ensure_training_job(fake, REQUEST, sleep=lambda _: None, **NO_WAIT)


def test_a_job_that_never_finishes_fails_the_step_at_the_deadline():
    # Given a job forever InProgress and a clock that jumps past the deadline
    fake = FakeSageMaker(statuses=("InProgress",))
    fake.create_training_job(**REQUEST)
    ticks = iter([0.0, 0.0, 10_000.0])
    # When / Then
    with pytest.raises(jobs.StepFailed, match="still InProgress after 600 s"):
        jobs.wait_for(
            lambda: fake.describe_training_job(REQUEST["TrainingJobName"]),
            "TrainingJobStatus",
            done={"Completed"},
            failed={"Failed"},
            what="training job",
            timeout_seconds=600,
            poll_seconds=1,
            sleep=lambda _: None,
            clock=lambda: next(ticks),
        )


def test_cancelling_the_step_stops_the_sagemaker_job():
    # Given KFP sends SIGTERM while the step waits on the job
    def cancel_on_second_poll(n_calls):
        if n_calls >= 3:
            os.kill(os.getpid(), signal.SIGTERM)

    fake = FakeSageMaker(statuses=("InProgress",), on_poll=cancel_on_second_poll)
    previous = signal.getsignal(signal.SIGTERM)
    # When the signal arrives
    with pytest.raises(KeyboardInterrupt, match="cancelled"):
        jobs.ensure_training_job(fake, REQUEST, sleep=lambda _: None, **NO_WAIT)
    # Then the job was asked to stop, and the previous signal handler is back
    assert ("stop_training_job", REQUEST) in fake.calls
    assert signal.getsignal(signal.SIGTERM) is previous


def test_other_sagemaker_errors_are_not_mistaken_for_a_missing_resource():
    def denied(**_):
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "X")

    with pytest.raises(ClientError, match="AccessDenied"):
        jobs.describe_or_none(denied, TrainingJobName="x")


CONFIG = {"EndpointConfigName": "mnist-0123456789ab-epc", "ProductionVariants": []}
TAGS = jobs.run_tags("mnist-0123456789ab")


def test_a_new_endpoint_is_created_on_the_runs_config():
    fake = FakeSageMaker()
    jobs.ensure_endpoint(fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, **NO_WAIT)
    assert _names(fake) == ["create_endpoint_config", "create_endpoint", "add_tags"]
    # Once it serves, the config says since when (ISO 8601 UTC): retiring ranks by it
    [(key, value)] = [(t["Key"], t["Value"]) for t in fake.calls[-1][1]["Tags"]]
    assert key == SERVED_AT_TAG
    assert datetime.fromisoformat(value).utcoffset() == timedelta(0)


def test_a_shared_endpoint_moves_to_the_new_runs_config_with_guardrails_and_keeps_its_tags():
    # Given an endpoint an earlier run created on its own config
    fake = FakeSageMaker()
    fake.configs.add("mnist-old-epc")
    fake.create_endpoint("mnist-e", "mnist-old-epc", TAGS)
    fake.calls.clear()
    seen = []
    # When this run deploys to the same name, with a deployment config and a last-moment check
    jobs.ensure_endpoint(
        fake,
        endpoint_name="mnist-e",
        config_request=CONFIG,
        tags=TAGS,
        deployment_config={"BlueGreenUpdatePolicy": {}},
        before_update=lambda description: seen.append(description["EndpointConfigName"]),
        **NO_WAIT,
    )
    # Then the endpoint is updated in place (not recreated, not retagged: its tags name the run
    # that created it), with the guardrails, after the check saw the endpoint as it stood
    assert _names(fake) == ["create_endpoint_config", "update_endpoint", "add_tags"]
    served = fake.calls[2][1]["ResourceArn"]
    assert served.endswith(f"endpoint-config/{CONFIG['EndpointConfigName']}")
    assert fake.calls[1][1]["DeploymentConfig"] == {"BlueGreenUpdatePolicy": {}}
    assert seen == ["mnist-old-epc"]


def test_a_check_before_the_update_that_raises_stops_the_deploy_before_any_update():
    fake = FakeSageMaker()
    fake.configs.add("mnist-old-epc")
    fake.create_endpoint("mnist-e", "mnist-old-epc", TAGS)

    def refuse(_description):
        raise RuntimeError("the serving model changed: not better any more")

    with pytest.raises(RuntimeError, match="not better"):
        jobs.ensure_endpoint(
            fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS,
            before_update=refuse, **NO_WAIT,
        )  # fmt: skip
    assert "update_endpoint" not in _names(fake)


def test_a_retried_deploy_that_already_happened_changes_nothing():
    fake = FakeSageMaker()
    jobs.ensure_endpoint(fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, **NO_WAIT)
    fake.calls.clear()
    jobs.ensure_endpoint(fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, **NO_WAIT)
    assert fake.calls == []


def test_an_endpoint_being_deleted_is_waited_out_then_created_on_the_new_config():
    # Given a shared endpoint that another run is deleting (to change its mode: endpoint_mode)
    fake = FakeSageMaker()
    fake.configs.add("old-epc")
    fake.create_endpoint("mnist-e", "old-epc", TAGS)
    fake.endpoints["mnist-e"]["EndpointStatus"] = "Deleting"
    sleeps = []

    def sleep(seconds):  # SageMaker finishes the delete while the step waits
        sleeps.append(seconds)
        fake.endpoints.pop("mnist-e", None)

    # When the deploy step moves it to the new config
    jobs.ensure_endpoint(
        fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, sleep=sleep, **NO_WAIT
    )
    # Then it waited for the delete, and created the endpoint again on its own config
    assert sleeps == [5]
    assert fake.endpoints["mnist-e"]["EndpointConfigName"] == CONFIG["EndpointConfigName"]
    assert [c for c, _ in fake.calls if "endpoint" in c][-1] == "create_endpoint"


def test_a_failed_endpoint_is_deleted_then_created_on_the_new_config(capsys):
    # Given a shared endpoint whose creation failed (SageMaker allows only DeleteEndpoint then)
    fake = FakeSageMaker()
    fake.configs.add("old-epc")
    fake.create_endpoint("mnist-e", "old-epc", TAGS)
    fake.endpoints["mnist-e"] |= {"EndpointStatus": "Failed", "FailureReason": "ping failed"}
    fake.calls.clear()

    def sleep(_seconds):  # SageMaker finishes the delete while the step waits
        fake.endpoints.pop("mnist-e", None)

    # When the deploy step moves it to the new config
    jobs.ensure_endpoint(
        fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, sleep=sleep, **NO_WAIT
    )
    # Then it deleted it, waited until gone, created it on its own config, and said so
    assert _names(fake) == [
        "create_endpoint_config", "delete_endpoint", "create_endpoint", "add_tags"
    ]  # fmt: skip
    assert fake.endpoints["mnist-e"]["EndpointConfigName"] == CONFIG["EndpointConfigName"]
    out = capsys.readouterr().out
    assert "endpoint mnist-e is Failed on old-epc (ping failed)" in out
    assert f"creating it again on {CONFIG['EndpointConfigName']}" in out


def test_two_deploys_finding_the_endpoint_failed_delete_it_once_and_one_creates_it():
    # Given a Failed endpoint that another run deletes just before this one asks to
    fake = FakeSageMaker()
    fake.configs.add("old-epc")
    fake.create_endpoint("mnist-e", "old-epc", TAGS)
    fake.endpoints["mnist-e"]["EndpointStatus"] = "Failed"

    def deleted_first(EndpointName):
        fake.endpoints.pop(EndpointName)
        raise _not_found(EndpointName)

    fake.delete_endpoint = deleted_first
    # When this run deploys, it waits for that delete and creates the endpoint on its config
    jobs.ensure_endpoint(fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, **NO_WAIT)
    assert fake.endpoints["mnist-e"]["EndpointConfigName"] == CONFIG["EndpointConfigName"]


@pytest.mark.parametrize("status", ["UpdateRollbackFailed", "OutOfService"])
def test_a_deploy_ends_at_once_on_an_endpoint_state_it_cannot_wait_through(status):
    # Given a shared endpoint whose update went wrong (every EndpointStatus of botocore's model
    # is either awaited or final: tests/unit/test_sagemaker_statuses.py)
    fake = FakeSageMaker()
    fake.configs.add("old-epc")
    fake.create_endpoint("mnist-e", "old-epc", TAGS)
    fake.endpoints["mnist-e"]["EndpointStatus"] = status
    fake.endpoints["mnist-e"]["FailureReason"] = "the update's rollback failed"
    sleeps = []
    # When the deploy step moves it to the new config, Then it fails with the state, not a timeout
    with pytest.raises(jobs.StepFailed, match=f"endpoint mnist-e ended {status}"):
        jobs.ensure_endpoint(
            fake, endpoint_name="mnist-e", config_request=CONFIG, tags=TAGS, sleep=sleeps.append,
            **NO_WAIT,
        )  # fmt: skip
    assert sleeps == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, jobs.DEFAULT_POLL_SECONDS),  # on AWS nothing sets it: every 30 s
        ("0.25", 0.25),  # the local stack's SageMaker finishes in about a second
        ("0", jobs.DEFAULT_POLL_SECONDS),  # never a tight loop
        ("-1", jobs.DEFAULT_POLL_SECONDS),
        ("fast", jobs.DEFAULT_POLL_SECONDS),
        ("3600", jobs.DEFAULT_POLL_SECONDS),  # never slower than the default
    ],
)
def test_the_poll_interval_comes_from_the_environment_within_bounds(monkeypatch, value, expected):
    from core.contracts import SAGEMAKER_POLL_SECONDS_VARIABLE

    if value is None:
        monkeypatch.delenv(SAGEMAKER_POLL_SECONDS_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(SAGEMAKER_POLL_SECONDS_VARIABLE, value)
    assert jobs.configured_poll_seconds() == expected
    pauses = []
    statuses = iter(["InProgress", "Completed"])
    jobs.wait_for(
        lambda: {"Status": next(statuses)},
        "Status",
        done=frozenset({"Completed"}),
        failed=frozenset({"Failed"}),
        what="job",
        timeout_seconds=60,
        sleep=pauses.append,
    )
    assert pauses == [expected]


# -- managed spot training (pipeline.steps.steps.train) ----------------------------------------


def _train(fake, **options):
    from pipeline.steps import steps

    return steps.train(
        fake,
        run_key="mnist-0123456789ab",
        role_arn="arn:aws:iam::123456789012:role/r",
        image="382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1",
        train_uri="s3://b/runs/mnist-0123456789ab/train/",
        run_uri="s3://b/runs/mnist-0123456789ab/",
        instance_type="ml.m5.large",
        instance_count=1,
        k=10,
        mini_batch_size=500,
        max_runtime_seconds=3600,
        poll_seconds=0.001,
        sleep=lambda _: None,
        **options,
    )


def _created(fake) -> dict:
    return next(request for name, request in fake.calls if name == "create_training_job")


def _valid_create_training_job(request):
    """The request as botocore's sagemaker model validates it (what SageMaker would parse)."""
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("sagemaker")
    validate_parameters(request, model.operation_model("CreateTrainingJob").input_shape)


def test_on_demand_training_asks_for_no_spot():
    fake = FakeSageMaker()
    _train(fake)
    request = _created(fake)
    _valid_create_training_job(request)
    assert "EnableManagedSpotTraining" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}


def test_spot_training_sets_the_flag_and_the_wait():
    fake = FakeSageMaker()
    _train(fake, spot_training=True, spot_max_wait_seconds=7200)
    request = _created(fake)
    _valid_create_training_job(request)
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 3600,
        "MaxWaitTimeInSeconds": 7200,
    }


def test_spot_training_refuses_a_wait_shorter_than_the_runtime_before_calling_sagemaker():
    fake = FakeSageMaker()
    with pytest.raises(ValueError, match="MaxWaitTimeInSeconds >= MaxRuntimeInSeconds"):
        _train(fake, spot_training=True, spot_max_wait_seconds=600)
    assert "create_training_job" not in _names(fake)
