"""One contract, two implementations, for the fakes the start-run and track-progress unit tests
use: ScriptedKfp against the KFP adapter (lambdas.dal.kfp_api) on the local KFP API, and
RecordingNotifier against the SNS adapter (lambdas.dal.topic) on moto, read back from a queue
subscribed to the topic. A unit test that passes on a fake then says something about the real
adapter. (The runs-table fakes have their own: test_runs_table_contract.py.)"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from core import contracts, kfp
from core.run_record import DatasetRef
from lambdas.dal.kfp_api import KfpHttpApi
from lambdas.dal.topic import SnsNotifier
from lambdas.logic import notifications
from lambdas.logic.ports import KfpCallFailed, KfpHealth, PublishFailed
from mnistflow.local.kfp_api import Fault, LocalKfpApi
from tests.fakes import KFP_CALLS, KFP_CREATES, RecordingNotifier, ScriptedKfp

pytestmark = pytest.mark.integration

TOKEN = "a-token"  # noqa: S105
KEY = "mnist-0123456789ab"
SPEC = {"pipelineInfo": {"name": "mnist"}, "root": {}}
# A pipeline whose exit handler reads the final status, as the product's does.
EXIT_HANDLER_SPEC = {
    "pipelineInfo": {"name": "mnist"},
    "root": {
        "dag": {
            "tasks": {
                "report-final-state": {
                    "inputs": {
                        "parameters": {
                            "status": {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
                        }
                    }
                }
            }
        }
    },
}
OLD_BACKEND = "2.5.0"


# -- KFP: ScriptedKfp versus KfpHttpApi on the local KFP API ---------------------------------


class Token:
    def bearer_token(self) -> str:
        return TOKEN

    def invalidate(self) -> None:
        pass


class EmulatedKfp:
    """The real adapter, talking HTTP to the KFP emulator."""

    def __init__(self, server: LocalKfpApi) -> None:
        self._server = server
        self.api = KfpHttpApi(lambda: server.url, Token(), timeout_seconds=2)

    def answer_next(self, call: str, status: int) -> None:
        method, path = KFP_CALLS[call].split(" ")
        self._server.inject(Fault("status", method=method, path=path, status=status))

    def lose_next_create_answer(self) -> None:
        method, path = KFP_CALLS["create_run"].split(" ")
        self._server.inject(Fault("lose_response", method=method, path=path))

    def run_old_backend(self, version: str) -> None:
        self._server.backend_version = version


class FakeKfp:
    def __init__(self) -> None:
        self.api = ScriptedKfp()

    def answer_next(self, call: str, status: int) -> None:
        self.api.fail_with_status(call, status)

    def lose_next_create_answer(self) -> None:
        self.api.lose_create_response += 1

    def run_old_backend(self, version: str) -> None:
        self.api.backend_version = version


@pytest.fixture(params=["fake", "emulator"])
def kfp_api(request):
    if request.param == "fake":
        yield FakeKfp()
        return
    with LocalKfpApi(accept_token=TOKEN) as server:
        yield EmulatedKfp(server)


def create_run(api, experiment_id: str, name: str = KEY, spec: dict[str, Any] = SPEC):
    return api.create_run(experiment_id, name, "MNIST run", spec, {"k": 10}, "mnist-runner")


def test_healthz_names_the_release_and_a_standalone_server(kfp_api):
    # start-run's dry run (mnistflow verify) reads these two facts
    assert kfp_api.api.health() == KfpHealth(kfp.MIN_BACKEND_VERSION, multi_user=False)
    kfp_api.run_old_backend(OLD_BACKEND)
    assert kfp_api.api.health().version == OLD_BACKEND


def test_no_experiment_is_found_before_one_is_created(kfp_api):
    assert kfp_api.api.find_experiments("mnist-uploads") == []


@pytest.mark.parametrize("name", ["mnist-uploads", "mnist+v2", "mnist 100%", "mnist é/ü?#"])
def test_a_created_experiment_is_found_by_its_exact_name_only(kfp_api, name):
    api = kfp_api.api
    experiment = api.create_experiment(name, "runs of uploads")
    other = api.create_experiment(f"{name}-other", "")
    assert experiment.display_name == name and experiment.experiment_id
    assert other.experiment_id != experiment.experiment_id
    assert api.find_experiments(name) == [experiment]
    assert api.find_experiments(name[:-1]) == []  # no prefix match


def test_an_experiment_name_is_taken_once_and_the_second_create_may_be_retried(kfp_api):
    # A concurrent start created it first: 409, transient (the next try finds it)
    api = kfp_api.api
    first = api.create_experiment("mnist-uploads", "")
    with pytest.raises(KfpCallFailed) as failed:
        api.create_experiment("mnist-uploads", "")
    assert (failed.value.kind, failed.value.status) == (KfpCallFailed.TRANSIENT, 409)
    assert api.find_experiments("mnist-uploads") == [first]


def test_an_experiment_without_a_name_is_refused_for_good(kfp_api):
    with pytest.raises(KfpCallFailed) as failed:
        kfp_api.api.create_experiment("", "")
    assert (failed.value.kind, failed.value.status) == (KfpCallFailed.PERMANENT, 400)
    assert str(failed.value).startswith("POST /apis/v2beta1/experiments: HTTP 400 ")


def test_a_created_run_is_found_by_its_name_in_its_experiment_only(kfp_api):
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    elsewhere = api.create_experiment("elsewhere", "")
    assert api.find_runs(experiment.experiment_id, KEY) == []
    run = create_run(api, experiment.experiment_id)
    assert run.run_id and run.created_at
    assert (run.display_name, run.experiment_id, run.state) == (
        KEY,
        experiment.experiment_id,
        "PENDING",
    )
    assert api.find_runs(experiment.experiment_id, KEY) == [run]
    assert api.find_runs(elsewhere.experiment_id, KEY) == []
    assert api.find_runs(experiment.experiment_id, "mnist-ba9876543210") == []


def test_runs_sharing_a_name_are_all_found_and_created_at_orders_them(kfp_api):
    # start-run keeps the oldest, by (created_at, run_id): creation order must survive a sort
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    created = [create_run(api, experiment.experiment_id) for _ in range(11)]
    found = api.find_runs(experiment.experiment_id, KEY)
    assert sorted(found, key=lambda r: (r.created_at, r.run_id)) == created
    assert len({r.run_id for r in found}) == len(created)


def test_a_run_is_read_back_by_its_id(kfp_api):
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    run = create_run(api, experiment.experiment_id)
    assert api.get_run(run.run_id) == run


def test_an_unknown_run_id_is_not_found(kfp_api):
    with pytest.raises(KfpCallFailed) as failed:
        kfp_api.api.get_run("no-such-run")
    assert (failed.value.kind, failed.value.status) == (KfpCallFailed.NOT_FOUND, 404)
    assert str(failed.value).startswith("GET /apis/v2beta1/runs/no-such-run: HTTP 404 ")
    assert not failed.value.maybe_done


@pytest.mark.parametrize(
    ("status", "kind"), [(503, KfpCallFailed.TRANSIENT), (403, KfpCallFailed.AUTH)]
)
def test_an_error_answer_to_a_run_read_surfaces_as_its_kind(kfp_api, status, kind):
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    run = create_run(api, experiment.experiment_id)
    kfp_api.answer_next("get_run", status)
    with pytest.raises(KfpCallFailed) as failed:
        api.get_run(run.run_id)
    assert (failed.value.kind, failed.value.status) == (kind, status)
    assert not failed.value.maybe_done
    assert api.get_run(run.run_id) == run


def test_a_run_in_an_unknown_experiment_is_not_found(kfp_api):
    with pytest.raises(KfpCallFailed) as failed:
        create_run(kfp_api.api, "no-such-experiment")
    assert (failed.value.kind, failed.value.status) == (KfpCallFailed.NOT_FOUND, 404)


@pytest.mark.parametrize(
    ("call", "status", "kind"),
    [
        ("find_experiments", 500, KfpCallFailed.TRANSIENT),
        ("create_experiment", 503, KfpCallFailed.TRANSIENT),
        ("find_runs", 429, KfpCallFailed.TRANSIENT),
        ("create_run", 500, KfpCallFailed.TRANSIENT),
        ("create_run", 400, KfpCallFailed.PERMANENT),
        ("create_run", 404, KfpCallFailed.NOT_FOUND),
        ("find_experiments", 401, KfpCallFailed.AUTH),
        ("find_runs", 403, KfpCallFailed.AUTH),
    ],
)
def test_an_error_answer_surfaces_as_its_kind_and_does_no_work(kfp_api, call, status, kind):
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    calls = {
        "find_experiments": lambda: api.find_experiments("mnist-uploads"),
        "create_experiment": lambda: api.create_experiment("mnist-other", ""),
        "find_runs": lambda: api.find_runs(experiment.experiment_id, KEY),
        "create_run": lambda: create_run(api, experiment.experiment_id),
    }
    # Given KFP answers the next such call with an error status
    kfp_api.answer_next(call, status)
    # When it is made, Then it fails with the kind the retry policy reads, naming the call
    with pytest.raises(KfpCallFailed) as failed:
        calls[call]()
    assert (failed.value.kind, failed.value.status) == (kind, status)
    assert str(failed.value).startswith(f"{KFP_CALLS[call]}: HTTP {status} ")
    # And a create answered with a 5xx may have happened anyway: start-run looks before again
    assert failed.value.maybe_done == (call in KFP_CREATES and status >= 500)
    # And nothing was created; the next call is answered as usual
    assert api.find_runs(experiment.experiment_id, KEY) == []
    assert api.find_experiments("mnist-other") == []
    calls[call]()


def test_a_lost_create_answer_is_transient_and_the_run_exists(kfp_api):
    # The lookup by display name on the retry relies on this
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    kfp_api.lose_next_create_answer()
    with pytest.raises(KfpCallFailed) as failed:
        create_run(api, experiment.experiment_id)
    assert (failed.value.kind, failed.value.status) == (KfpCallFailed.TRANSIENT, None)
    assert failed.value.maybe_done
    assert str(failed.value).startswith("POST /apis/v2beta1/runs: ")
    [run] = api.find_runs(experiment.experiment_id, KEY)
    assert (run.display_name, run.experiment_id) == (KEY, experiment.experiment_id)


def test_an_old_backend_refuses_an_exit_handler_for_good_naming_the_version(kfp_api):
    api = kfp_api.api
    experiment = api.create_experiment("mnist-uploads", "")
    kfp_api.run_old_backend(OLD_BACKEND)
    with pytest.raises(KfpCallFailed) as failed:
        create_run(api, experiment.experiment_id, spec=EXIT_HANDLER_SPEC)
    assert (failed.value.kind, failed.value.status) == (KfpCallFailed.PERMANENT, 500)
    assert not failed.value.maybe_done  # refused, every time: nothing was made
    message = str(failed.value)
    assert message.startswith("POST /apis/v2beta1/runs: HTTP 500")
    assert kfp.OLD_BACKEND_REJECTION in message
    assert f"upgrade Kubeflow Pipelines to {kfp.MIN_BACKEND_VERSION} or later" in message
    assert api.find_runs(experiment.experiment_id, KEY) == []
    # A pipeline without such an exit handler still runs there
    assert create_run(api, experiment.experiment_id, spec=SPEC).display_name == KEY


def test_a_current_backend_takes_the_exit_handler(kfp_api):
    experiment = kfp_api.api.create_experiment("mnist-uploads", "")
    run = create_run(kfp_api.api, experiment.experiment_id, spec=EXIT_HANDLER_SPEC)
    assert kfp_api.api.find_runs(experiment.experiment_id, KEY) == [run]


# -- notifications: RecordingNotifier versus SnsNotifier on moto -----------------------------

REGION = "us-east-1"
DATASET = DatasetRef("mnistflow-data", "incoming/mnist é.npz", "v1", "etag", 10)


class SnsOnMoto:
    """The SNS adapter on a moto topic; a queue subscribed without raw delivery reads back
    what an email subscriber would get."""

    def __init__(self) -> None:
        sns = boto3.client("sns", region_name=REGION)
        self._sqs = boto3.client("sqs", region_name=REGION)
        topic_arn = sns.create_topic(Name="mnistflow-notifications")["TopicArn"]
        self._queue = self._sqs.create_queue(QueueName="inbox")["QueueUrl"]
        queue_arn = self._sqs.get_queue_attributes(
            QueueUrl=self._queue, AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]
        sns.subscribe(
            TopicArn=topic_arn,
            Protocol="sqs",
            Endpoint=queue_arn,
            Attributes={"RawMessageDelivery": "false"},
        )
        self.notifier = SnsNotifier(topic_arn, lambda: sns)

    def delivered(self) -> list[dict[str, Any]]:
        seen = []
        while True:
            answer = self._sqs.receive_message(QueueUrl=self._queue, MaxNumberOfMessages=10)
            if not answer.get("Messages"):
                return seen
            for message in answer["Messages"]:
                body = json.loads(message["Body"])
                attributes = body.get("MessageAttributes", {})
                assert {a["Type"] for a in attributes.values()} <= {"String"}
                seen.append(
                    {
                        "subject": body.get("Subject", ""),
                        "message": body["Message"],
                        "attributes": {name: a["Value"] for name, a in attributes.items()},
                    }
                )
                self._sqs.delete_message(
                    QueueUrl=self._queue, ReceiptHandle=message["ReceiptHandle"]
                )


class FakeTopic:
    def __init__(self) -> None:
        self.notifier = RecordingNotifier()

    def delivered(self) -> list[dict[str, Any]]:
        return [
            {
                "subject": p.subject,
                "message": p.message,
                "attributes": {
                    contracts.MESSAGE_ATTRIBUTE_KIND: p.kind,
                    contracts.MESSAGE_ATTRIBUTE_RUN_KEY: p.run_key,
                },
            }
            for p in self.notifier.published
        ]


@pytest.fixture(params=["fake", "sns"])
def topic(request):
    if request.param == "fake":
        yield FakeTopic()
        return
    with mock_aws():
        yield SnsOnMoto()


def sent(kind: str, run_key: str, subject: str, message: str) -> dict[str, Any]:
    attributes = {
        contracts.MESSAGE_ATTRIBUTE_KIND: kind,
        contracts.MESSAGE_ATTRIBUTE_RUN_KEY: run_key,
    }
    return {"subject": subject, "message": message, "attributes": attributes}


def by_subject(delivered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(delivered, key=lambda d: json.dumps(d, sort_keys=True))


def test_a_notification_arrives_with_its_subject_message_and_attributes(topic):
    topic.notifier.publish(contracts.KIND_RUN_STARTED, KEY, "MNIST run started", "Run: run-1")
    expected = sent(contracts.KIND_RUN_STARTED, KEY, "MNIST run started", "Run: run-1")
    assert topic.delivered() == [expected]


NOTES = {
    contracts.KIND_DATA_REJECTED: notifications.data_rejected(KEY, DATASET, "the object is empty"),
    contracts.KIND_RUN_STARTED: notifications.run_started(KEY, DATASET, "run-1", "https://k/#/r"),
    contracts.KIND_RUN_FAILED: notifications.run_could_not_start(
        KEY, DATASET, "x" * 300, 4, "check the access entry"
    ),
}


@pytest.mark.parametrize("kind", sorted(NOTES))
def test_what_the_functions_send_arrives_as_it_was_built(topic, kind):
    note = NOTES[kind]
    assert note.kind == kind
    topic.notifier.publish(note.kind, KEY, note.subject, note.message)
    assert topic.delivered() == [sent(kind, KEY, note.subject, note.message)]


def test_the_longest_subject_and_a_multiline_unicode_message_arrive_unchanged(topic):
    # SNS's Publish reference: the subject "must be less than 100 characters long", so 99 is the
    # longest (moto lets 100 through too; the fake refuses it as SNS does, which is outside
    # this contract: tests/unit/test_start_run_logic.py holds it)
    subject = "S" * 99
    message = "Line one: é – ü\n\n  indented line\nlast line"
    topic.notifier.publish(contracts.KIND_ENDPOINT_READY, KEY, subject, message)
    assert topic.delivered() == [sent(contracts.KIND_ENDPOINT_READY, KEY, subject, message)]


def test_every_publish_arrives_once(topic):
    published = [
        sent(kind, f"mnist-00000000000{i}", f"subject {i}", f"message {i}")
        for i, kind in enumerate(contracts.NOTIFICATION_KINDS)
    ]
    for p in published:
        attributes = p["attributes"]
        topic.notifier.publish(
            attributes[contracts.MESSAGE_ATTRIBUTE_KIND],
            attributes[contracts.MESSAGE_ATTRIBUTE_RUN_KEY],
            p["subject"],
            p["message"],
        )
    # SNS to SQS keeps no order: the same notifications, each once
    assert by_subject(topic.delivered()) == by_subject(published)


def test_a_subject_over_100_characters_is_refused_and_nothing_is_sent(topic):
    with pytest.raises(PublishFailed) as refused:
        topic.notifier.publish(contracts.KIND_RUN_FAILED, KEY, "S" * 101, "message")
    assert not refused.value.maybe_sent and "(InvalidParameter)" in str(refused.value)
    assert topic.delivered() == []


@pytest.mark.parametrize(("kind", "run_key"), [("", KEY), (contracts.KIND_RUN_FAILED, "")])
def test_an_empty_attribute_value_is_refused_and_nothing_is_sent(topic, kind, run_key):
    with pytest.raises(PublishFailed) as refused:
        topic.notifier.publish(kind, run_key, "subject", "message")
    assert not refused.value.maybe_sent and "(InvalidParameter)" in str(refused.value)
    assert topic.delivered() == []
