"""The start-run handler end to end: moto for AWS, the local KFP API for the cluster's."""

from __future__ import annotations

import base64
from dataclasses import replace
from urllib.parse import parse_qs, unquote_plus, urlsplit

import boto3
import pytest
import yaml

from core import contracts, endpoint_alarms
from core.settings import pipeline_parameters
from lambdas.composition import start_run_handler
from lambdas.logic.ports import KfpCallFailed
from mnistflow.local.kfp_api import Fault, LocalKfpApi, parse_filter
from tests.conftest import load_event
from tests.fakes.settings import STACK_VALUES
from tests.integration.conftest import (
    BUCKET,
    CLUSTER,
    FAILURE_QUEUE,
    KFP_TEST_TIMEOUT_SECONDS,
    SECRET_TOKEN,
    LambdaContext,
)

pytestmark = pytest.mark.integration

RUNS = "/apis/v2beta1/runs"
EXPERIMENTS = "/apis/v2beta1/experiments"


def run_key_of(event_name: str) -> str:
    obj = load_event(event_name)["Records"][0]["s3"]["object"]
    key = unquote_plus(obj["key"])
    return contracts.run_key(BUCKET, key, obj.get("versionId") or obj["eTag"])


def log_lines(caplog) -> list[dict]:
    """The structured log lines so far: message plus the extra keys."""
    return [{**vars(record), "message": record.getMessage()} for record in caplog.records]


# -- the happy path ------------------------------------------------------------------------


def test_upload_starts_one_run_with_the_spec_and_parameters(
    kfp, aws, pipeline_spec_file, start_run
):
    # Given an upload of a dataset version under incoming/
    event = load_event("s3_put")
    key = run_key_of("s3_put")

    # When the handler receives its notification
    result = start_run(event)

    # Then one run exists on KFP, named by the run key, in the configured experiment
    assert result["started"] == [key]
    [run] = kfp.runs_named(key)
    [experiment] = kfp.experiments.values()
    assert experiment["display_name"] == "mnist-uploads"
    assert run["experiment_id"] == experiment["experiment_id"]
    # And the request carried the bearer token from Secrets Manager and the spec inline
    [create] = kfp.requests_to("POST", RUNS)
    assert create.headers["authorization"] == f"Bearer {SECRET_TOKEN}"
    assert create.headers["content-type"] == "application/json"
    assert create.body["display_name"] == key
    compiled = yaml.safe_load(pipeline_spec_file.read_text())
    sent = create.body["pipeline_spec"]
    assert {k: v for k, v in sent.items() if k != "deploymentSpec"} == {
        k: v for k, v in compiled.items() if k != "deploymentSpec"
    }
    # And every step runs in the image the stack deployed, not the compiled placeholder
    executors = sent["deploymentSpec"]["executors"]
    assert {e["container"]["image"] for e in executors.values()} == {STACK_VALUES["step_image_uri"]}
    for name, executor in executors.items():
        original = compiled["deploymentSpec"]["executors"][name]["container"]
        assert {**executor["container"], "image": original["image"]} == original
    # And its parameters are the pipeline's: this run's, the stack's, the configured ones
    defaults = {p.key: p.default for p in pipeline_parameters() if not p.required}
    assert create.body["runtime_config"]["parameters"] == {
        **defaults,
        "dataset_uri": f"s3://{BUCKET}/incoming/mnist.pkl.gz",
        "dataset_version": load_event("s3_put")["Records"][0]["s3"]["object"]["versionId"],
        "run_key": key,
        "region": "us-east-1",
        "sagemaker_role_arn": aws.role_arn,
        "event_bus_name": contracts.PIPELINE_EVENT_BUS,
        "endpoint_alarm_names": endpoint_alarms.alarm_names("mnist-classifier"),
        "train_instance_type": "ml.m5.xlarge",
        "transform_instance_count": 2,
        "endpoint_instance_type": "ml.t2.medium",
    }
    # And the run's pods use the product's own service account (bound to KFP's runner Role)
    assert create.body["service_account"] == "mnistflow-pipeline"
    # And every parameter it sends is one the pipeline declares
    declared = create.body["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert set(create.body["runtime_config"]["parameters"]) <= set(declared)
    # And the lookup before the create filtered by display name within the experiment
    [lookup] = kfp.requests_to("GET", RUNS)
    assert lookup.query["experiment_id"] == experiment["experiment_id"]
    # (KFP's server URL-decodes the filter twice; the emulator parses it as the server does)
    predicate = parse_filter(lookup.query["filter"])["predicates"][0]
    assert predicate == {"key": "display_name", "operation": "EQUALS", "string_value": key}
    # And the record says RUN_STARTED with the run id and the UI link
    item = aws.item(key)
    assert item["status"] == contracts.STATUS_RUN_STARTED
    assert item["kfp_run_id"] == run["run_id"]
    assert item["kfp_run_url"] == f"https://kfp.example.com/#/runs/details/{run['run_id']}"
    assert item["experiment_id"] == experiment["experiment_id"]
    assert item["dataset"] == {
        "bucket": BUCKET,
        "key": "incoming/mnist.pkl.gz",
        "version": load_event("s3_put")["Records"][0]["s3"]["object"]["versionId"],
        "etag": "0123456789abcdef0123456789abcdef",
        "size": 11490434,
    }
    assert item["start_attempts"] == 1
    assert [e["event"] for e in item["timeline"]] == ["ACCEPTED", "RUN_STARTED"]
    assert item["created_at"].endswith("Z") and item["updated_at"] >= item["created_at"]
    assert "claim_expires_at" not in item
    # And RUN_STARTED was announced with its attributes
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_RUN_STARTED and message["run_key"] == key
    assert run["run_id"] in message["message"]


def test_a_relative_spec_path_is_resolved_at_cold_start_against_the_working_directory(
    kfp, aws, lambda_env, pipeline_spec_file, start_run, tmp_path, monkeypatch
):
    # Given the compiled spec in the working directory at cold start, named by a relative path
    task = tmp_path / "task"
    task.mkdir()
    (task / "mnist_pipeline.yaml").write_bytes(pipeline_spec_file.read_bytes())
    lambda_env["PIPELINE_SPEC_PATH"] = "mnist_pipeline.yaml"
    monkeypatch.chdir(task)
    start_run.handler  # noqa: B018 (the cold start: the container is built here)
    # When the working directory changes before the first upload is handled
    monkeypatch.chdir(tmp_path)
    result = start_run(load_event("s3_put"))
    # Then the run carries the spec from the file found at cold start
    key = run_key_of("s3_put")
    assert result["started"] == [key]
    [create] = kfp.requests_to("POST", RUNS)
    compiled = yaml.safe_load(pipeline_spec_file.read_text())
    assert create.body["pipeline_spec"]["pipelineInfo"] == compiled["pipelineInfo"]
    assert create.body["pipeline_spec"]["root"] == compiled["root"]


def test_duplicate_delivery_gives_one_run(kfp, aws, caplog, start_run):
    # Given a notification that was already handled
    event = load_event("s3_put")
    start_run(event)
    caplog.clear()

    # When S3 delivers it again (a new invocation: another request id)
    result = start_run(event, LambdaContext(aws_request_id="another-delivery"))

    # Then nothing new happens on KFP, and the log says why
    key = run_key_of("s3_put")
    assert result["duplicates"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert len(kfp.requests_to("POST", RUNS)) == 1
    assert any("this delivery stops here" in line["message"] for line in log_lines(caplog))
    assert len(aws.messages()) == 1  # only the first RUN_STARTED


def test_existing_experiment_is_reused(kfp, aws, start_run):
    # Given the experiment already exists on KFP
    start_run(load_event("s3_put"))

    # When another dataset arrives
    start_run(load_event("s3_put_special_key"))

    # Then no second experiment is created
    assert len(kfp.experiments) == 1
    assert len(kfp.requests_to("POST", EXPERIMENTS)) == 1


@pytest.mark.parametrize("event_name", ["s3_put_special_key", "s3_put_unversioned"])
def test_awkward_keys_are_decoded(kfp, aws, event_name, start_run):
    # Given a key with spaces, '+', unicode and deep folders (or an unversioned bucket)
    event = load_event(event_name)
    raw_key = event["Records"][0]["s3"]["object"]["key"]

    # When it is handled
    start_run(event)

    # Then the run gets the decoded key in its dataset URI and the record keeps it too
    key = run_key_of(event_name)
    [create] = kfp.requests_to("POST", RUNS)
    decoded = unquote_plus(raw_key)
    assert create.body["runtime_config"]["parameters"]["dataset_uri"] == f"s3://{BUCKET}/{decoded}"
    assert aws.item(key)["dataset"]["key"] == decoded
    if event_name == "s3_put_special_key":
        assert decoded == "incoming/données/2026/été/mnist jeu+v2 (final).npz"
    else:
        assert aws.item(key)["dataset"]["version"] == ""  # the ETag made the run key
    [message] = aws.messages()
    assert message["subject"].isascii() and len(message["subject"]) < 100


# -- records that are not started ---------------------------------------------------------


@pytest.mark.parametrize(
    ("event_name", "log_fragment"),
    [
        ("s3_test_event", "S3 test event"),
        ("s3_put_other_bucket", "is not the data bucket"),
        ("s3_put_pipeline_output", "outside incoming/"),
    ],
)
def test_records_that_are_not_ours_are_skipped_with_a_log_line(
    kfp, aws, caplog, event_name, log_fragment, start_run
):
    # Given a notification that is not a dataset upload to our bucket
    # When it is handled
    result = start_run(load_event(event_name))

    # Then nothing is recorded, sent or started, and the log says why
    assert result["skipped"] and log_fragment in result["skipped"][0]
    assert kfp.requests == [] and aws.items() == [] and aws.messages() == []
    skipped = [line for line in log_lines(caplog) if line["message"] == "Skipping S3 record"]
    assert log_fragment in skipped[0]["reason"]


@pytest.mark.parametrize(
    ("event_name", "reason_fragment"),
    [
        ("s3_put_empty", "empty (0 bytes)"),
        ("s3_put_too_large", "over the limit of 2147483648 bytes"),
        ("s3_put_unsupported_suffix", "unsupported file type"),
    ],
)
def test_bad_uploads_are_rejected_and_announced(
    kfp, aws, caplog, event_name, reason_fragment, start_run
):
    # Given an upload under incoming/ that cannot be a dataset
    key = run_key_of(event_name)

    # When it is handled
    result = start_run(load_event(event_name))

    # Then it is recorded as REJECTED with the reason, and DATA_REJECTED is sent
    assert result["rejected"] == [key]
    item = aws.item(key)
    assert item["status"] == contracts.STATUS_REJECTED
    assert reason_fragment in item["reason"]
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_DATA_REJECTED and message["run_key"] == key
    assert reason_fragment in message["message"]
    assert len(message["subject"]) < 100
    # And KFP was never called, and the log says so
    assert kfp.requests == []
    assert any(line["message"] == "Dataset rejected" for line in log_lines(caplog))
    # And a redelivery changes nothing
    start_run(load_event(event_name))
    assert aws.item(key)["status"] == contracts.STATUS_REJECTED and len(aws.messages()) == 1


def test_size_limit_comes_from_the_configuration(kfp, aws, lambda_env, start_run):
    # Given a limit lower than the upload's size
    lambda_env["MAX_DATASET_BYTES"] = "1000"

    # When the upload is handled
    start_run(load_event("s3_put"))

    # Then it is rejected for its size
    assert "over the limit of 1000 bytes" in aws.item(run_key_of("s3_put"))["reason"]


# -- KFP failing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "calls_expected", "reason_fragment"),
    [
        (lambda k: k.inject(Fault("status", times=100, status=401)), 2, "HTTP 401"),
        (lambda k: k.inject(Fault("status", times=100, status=404)), 2, "HTTP 404"),
        (lambda k: k.inject(Fault("status", times=100, status=500)), 4, "HTTP 500"),
        (lambda k: k.inject(Fault("drop", times=100)), 4, "connection to the KFP API failed"),
        (
            lambda k: k.inject(Fault("hang", times=100)),
            4,
            f"no answer from the KFP API within {KFP_TEST_TIMEOUT_SECONDS:g} s",
        ),
    ],
    ids=["401", "404", "500", "dropped", "no-answer"],
)
def test_kfp_failing_records_start_failed_emails_and_raises(
    kfp, aws, clock, caplog, program, calls_expected, reason_fragment, start_run
):
    # Given a KFP API that keeps failing
    program(kfp)
    key = run_key_of("s3_put")

    # When Lambda runs the upload event with its retries, Then every attempt fails and the
    # event ends on the failure queue
    assert start_run.invoke_async(load_event("s3_put")) == FAILURE_QUEUE

    # And KFP was tried as often as the policy says in each attempt, with backoff between tries
    attempts = contracts.LAMBDA_ASYNC_ATTEMPTS
    assert len(kfp.requests) == calls_expected * attempts
    assert clock.sleeps == [1.0, 2.0, 4.0][: calls_expected - 1] * attempts
    # And the record says START_FAILED with the reason, after the last attempt only
    item = aws.item(key)
    assert item["status"] == contracts.STATUS_START_FAILED
    assert item["claim_attempts"] == attempts and reason_fragment in item["reason"]
    assert [e["event"] for e in item["timeline"]] == [
        "ACCEPTED", "START_RETRY", "ACCEPTED", "START_RETRY", "ACCEPTED", "START_FAILED",
        "SLOT_FREED",  # given back at once: the next upload may start
    ]  # fmt: skip
    # And one RUN_FAILED says why and what to check
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_RUN_FAILED and message["run_key"] == key
    assert len(message["subject"]) < 100 and message["subject"].isascii()
    assert reason_fragment in message["message"] and "What to check" in message["message"]
    assert kfp.runs_named(key) == []
    assert any(
        line["message"] == "KFP run could not be started; given up" for line in log_lines(caplog)
    )


def test_lambdas_retry_starts_the_run_when_kfp_is_back(kfp, aws, start_run):
    # Given a first attempt that fails because KFP answered 500 throughout
    kfp.inject(Fault("status", times=4, status=500))

    # When Lambda runs the event, retrying it, and KFP is back for the retry
    result = start_run.invoke_async(load_event("s3_put"))

    # Then exactly one run exists, the record shows both attempts, and no RUN_FAILED went out
    key = run_key_of("s3_put")
    assert result["started"] == [key]
    assert len(kfp.runs_named(key)) == 1
    item = aws.item(key)
    assert item["status"] == contracts.STATUS_RUN_STARTED and item["claim_attempts"] == 2
    assert [e["event"] for e in item["timeline"]] == [
        "ACCEPTED",
        "START_RETRY",
        "ACCEPTED",
        "RUN_STARTED",
    ]
    assert [m["kind"] for m in aws.messages()] == ["RUN_STARTED"]


def test_transient_failure_is_retried_within_the_invocation(kfp, aws, clock, start_run):
    # Given a KFP API that fails twice, then recovers
    kfp.inject(Fault("status", times=2, status=503))

    # When an upload is handled
    result = start_run(load_event("s3_put"))

    # Then the run starts in the same invocation after two backoffs
    assert result["started"] == [run_key_of("s3_put")]
    assert clock.sleeps == [1.0, 2.0]


def test_lost_create_response_does_not_create_a_second_run(kfp, aws, start_run):
    # Given KFP creates the run but the answer never reaches the Lambda
    kfp.inject(Fault("lose_response", method="POST", path=RUNS))

    # When an upload is handled
    result = start_run(load_event("s3_put"))

    # Then the retry finds the run by its display name instead of creating another
    key = run_key_of("s3_put")
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert len(kfp.requests_to("POST", RUNS)) == 1
    assert aws.item(key)["kfp_run_id"] == kfp.runs_named(key)[0]["run_id"]


def test_lost_response_then_lambda_retry_finds_the_run(kfp, aws, lambda_env, start_run):
    # Given a run created on KFP whose response was lost and the invocation then failed
    kfp.inject(Fault("lose_response", method="POST", path=RUNS))
    kfp.inject(Fault("status", times=3, method="GET", path=RUNS, status=500))

    # When Lambda runs the event, retrying it after the failed first attempt
    result = start_run.invoke_async(load_event("s3_put"))

    # Then it records the existing run: one run on KFP
    key = run_key_of("s3_put")
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert aws.item(key)["status"] == contracts.STATUS_RUN_STARTED


def test_an_expired_claim_is_taken_over_by_a_redelivery(kfp, aws, start_run):
    # Given an invocation that claimed the run key and died (Lambda timeout) before recording
    key = run_key_of("s3_put")
    start_run(load_event("s3_put"))  # records RUN_STARTED
    boto3.client("dynamodb", region_name="us-east-1").update_item(
        TableName="mnistflow-runs",
        Key={"run_key": {"S": key}},
        UpdateExpression="SET #s = :a, claim_expires_at = :past",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":a": {"S": "ACCEPTED"}, ":past": {"N": "1"}},
    )

    # When the event is delivered again (another invocation)
    result = start_run(load_event("s3_put"), LambdaContext(aws_request_id="redelivery"))

    # Then the claim is taken over and the existing run reused, not duplicated
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1


def test_bad_token_is_reread_after_401(kfp, aws, start_run):
    # Given KFP rejects the first call (a rotated token)
    kfp.inject(Fault("status", times=1, status=401))

    # When an upload is handled
    result = start_run(load_event("s3_put"))

    # Then the secret is read again and the second try succeeds
    assert result["started"] == [run_key_of("s3_put")]


def test_multi_user_namespace_is_sent_in_url_mode(kfp, aws, lambda_env, start_run):
    # Given a profile namespace for multi-user Kubeflow
    lambda_env["KFP_NAMESPACE"] = "team-mnist"

    # When an upload is handled
    start_run(load_event("s3_put"))

    # Then experiments are looked up and created in that namespace
    [lookup] = kfp.requests_to("GET", EXPERIMENTS)
    assert lookup.query["namespace"] == "team-mnist"
    assert kfp.requests_to("POST", EXPERIMENTS)[0].body["namespace"] == "team-mnist"
    assert kfp.requests_to("GET", RUNS)[0].query["namespace"] == "team-mnist"


# -- cluster mode ----------------------------------------------------------------------------


PROXY = "/api/v1/namespaces/kubeflow/services/ml-pipeline:http/proxy"


def _point_the_cluster_at(monkeypatch, server: LocalKfpApi, ca_pem: str) -> list[str]:
    """moto answers DescribeCluster; its endpoint and CA are then swapped for the local API's."""
    from lambdas.dal import eks_token

    described: list[str] = []
    real = eks_token.describe_cluster

    def describe(eks, name):
        described.append(name)
        return replace(real(eks, name), endpoint=server.endpoint, ca_pem=ca_pem)

    monkeypatch.setattr(eks_token, "describe_cluster", describe)
    return described


def _cluster_mode(lambda_env) -> None:
    lambda_env.update(
        KFP_MODE="cluster",
        EKS_CLUSTER_NAME=CLUSTER,
        KFP_NAMESPACE="kubeflow",
        KFP_URL="",
        KFP_TOKEN_SECRET_ARN="",
    )


def test_cluster_mode_goes_through_the_service_proxy_with_an_eks_token(
    aws, lambda_env, start_run, test_ca, monkeypatch
):
    # Given the local KFP API served over TLS at the API server's service-proxy path
    with LocalKfpApi(
        prefix=PROXY,
        ssl_context=test_ca.server_context,
        accept_token=lambda t: t.startswith("k8s-aws-v1."),
    ) as server:
        _cluster_mode(lambda_env)
        described = _point_the_cluster_at(monkeypatch, server, test_ca.ca_pem)

        # When two uploads are handled by the same container
        start_run(load_event("s3_put"))
        start_run(load_event("s3_put_special_key"))

        # Then the cluster was described once and KFP reached at the proxy path over TLS
        assert described == [CLUSTER]
        assert server.url.startswith("https://") and len(server.requests_to("POST", RUNS)) == 2
        # And the bearer token is a presigned STS GetCallerIdentity URL for this cluster
        token = server.requests[0].headers["authorization"].removeprefix("Bearer k8s-aws-v1.")
        url = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        query = parse_qs(urlsplit(url).query)
        assert query["Action"] == ["GetCallerIdentity"]
        assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"][0].split(";")
        # And no namespace is sent to standalone KFP
        assert "namespace" not in server.requests_to("GET", EXPERIMENTS)[0].query
        assert aws.item(run_key_of("s3_put"))["status"] == contracts.STATUS_RUN_STARTED


def test_cluster_mode_with_a_wrong_ca_fails_the_start_without_retrying(
    aws, lambda_env, start_run, test_ca, monkeypatch, clock
):
    # Given a cluster whose reported CA did not sign the API server's certificate
    from lambdas.logic.start_run import StartRunFailed

    with LocalKfpApi(prefix=PROXY, ssl_context=test_ca.server_context) as server:
        _cluster_mode(lambda_env)
        _point_the_cluster_at(monkeypatch, server, "")

        # When an upload is handled, Then it fails for TLS and says so
        with pytest.raises(StartRunFailed):
            start_run(load_event("s3_put"))
        assert "TLS failure" in aws.item(run_key_of("s3_put"))["reason"]
        assert clock.sleeps == []  # certificate problems do not heal by waiting


def test_an_old_kfp_backend_is_not_retried_and_the_email_names_the_version_needed(
    aws, lambda_env, start_run, clock
):
    # Given a KFP backend older than 2.14.0, which refuses the pipeline's exit handler
    from lambdas.logic.start_run import StartRunFailed

    with LocalKfpApi(accept_token=SECRET_TOKEN, backend_version="2.5.0") as server:
        lambda_env["KFP_URL"] = server.url
        # When an upload is handled, Then the start fails at once: no retry can help
        with pytest.raises(StartRunFailed):
            start_run(load_event("s3_put"))
        assert len(server.requests_to("POST", RUNS)) == 1 and clock.sleeps == []
    # And the record and the one email say which version is needed
    key = run_key_of("s3_put")
    assert aws.item(key)["status"] == contracts.STATUS_START_FAILED
    assert "older than 2.14.0" in aws.item(key)["reason"]
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_RUN_FAILED
    assert "upgrade Kubeflow Pipelines to 2.14.0 or later" in message["message"]


@pytest.mark.parametrize("name", ["mnist+v2", "mnist 100%", "mnist%2Bv2", "mnist é/ü?#"])
def test_an_experiment_name_kfp_decodes_twice_is_still_found(kfp, aws, lambda_env, start_run, name):
    # Given an experiment name with characters KFP's double URL-decoding of filters would change
    lambda_env["KFP_EXPERIMENT_NAME"] = name
    # When two uploads are handled
    start_run(load_event("s3_put"))
    start_run(load_event("s3_put_special_key"))
    # Then the second found the experiment the first created: one experiment, by that name
    assert [e["display_name"] for e in kfp.experiments.values()] == [name]
    assert len(kfp.requests_to("POST", EXPERIMENTS)) == 1


# -- issue 10: slow creates and unexpected answers -------------------------------------------


def test_a_create_kfp_commits_after_the_clients_timeout_starts_one_run(aws, kfp, lambda_env):
    # Given KFP committing the run 1.5 s after the create, long after the 0.5 s client timeout
    kfp.inject(Fault("commit_late", method="POST", path=RUNS, seconds=1.5))
    # (real waits here: the create's lookups must see KFP's clock move)
    function = start_run_handler(lambda_env, rng=lambda: 0.0, kfp_timeout_seconds=0.5)

    # When the upload is handled
    result = function(load_event("s3_put"), LambdaContext())

    # Then start-run looked for the run by name before creating again, and found it
    key = run_key_of("s3_put")
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert len(kfp.requests_to("POST", RUNS)) == 1


@pytest.mark.parametrize(
    ("path", "method", "body"),
    [
        (EXPERIMENTS, "GET", b"[]"),  # a JSON list
        (EXPERIMENTS, "GET", b"<html><body>Sign in</body></html>"),  # a login page
        (RUNS, "GET", b""),  # an empty body
        (RUNS, "GET", b"not json"),
        (RUNS, "POST", b'{"display_name": "mnist-x"}'),  # a run without its id
        (RUNS, "GET", b'{"runs": {"run_id": "r"}}'),  # a list that is not one
    ],
    ids=["list", "html", "empty", "not-json", "no-run-id", "runs-not-a-list"],
)
def test_an_unexpected_kfp_answer_is_a_classified_failure_never_a_crash(
    aws, kfp, start_run, path, method, body
):
    # Given KFP (or something in front of it) answering 200 with a body the API never gives
    kfp.inject(Fault("body", method=method, path=path, body=body))

    # When the upload is handled, with Lambda's retries
    result = start_run.invoke_async(load_event("s3_put"))

    # Then no crash: the call is retried, and the upload ends with exactly one run
    key = run_key_of("s3_put")
    assert result["started"] + result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert aws.item(key)["status"] == contracts.STATUS_RUN_STARTED
    assert [m["kind"] for m in aws.messages()] == [contracts.KIND_RUN_STARTED]


def test_an_unexpected_answer_is_named_for_what_it_is():
    from lambdas.dal.kfp_api import KfpHttpApi

    class Tokens:
        def bearer_token(self) -> str:
            return "t"

        def invalidate(self) -> None:
            pass

    with LocalKfpApi() as server:
        server.inject(Fault("body", method="GET", path=EXPERIMENTS, body=b"<html>login</html>"))
        api = KfpHttpApi(lambda: server.url, Tokens(), timeout_seconds=1)
        with pytest.raises(KfpCallFailed) as raised:
            api.find_experiments("mnist")
    assert raised.value.kind == KfpCallFailed.UNEXPECTED
    assert "not a JSON object" in str(raised.value) and "not its UI or a proxy" in str(raised.value)


# -- per-upload settings, read from the upload itself ----------------------------------------


def _uploaded(aws, key: str, metadata: dict[str, str]) -> dict:
    """Puts an object in moto with user metadata; the S3 event for that exact version."""
    s3 = boto3.client("s3", region_name="us-east-1")
    put = s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 100, Metadata=metadata)
    event = load_event("s3_put")
    obj = event["Records"][0]["s3"]["object"]
    obj.update(key=key, versionId=put["VersionId"], size=100, eTag=put["ETag"].strip('"'))
    return event


@pytest.mark.real_uploads
def test_an_uploads_metadata_reaches_the_run(kfp, aws, start_run):
    # Given an upload with x-amz-meta-k: 32 (S3 gives it back lower-cased, without the prefix)
    event = _uploaded(aws, "incoming/mnist.pkl.gz", {"k": "32", "Train-Instance-Count": "2"})

    # When start-run handles it
    result = start_run(event)

    # Then the run is submitted with k=32 and two training instances, and the record says so
    [key] = result["started"]
    [create] = kfp.requests_to("POST", RUNS)
    parameters = create.body["runtime_config"]["parameters"]
    assert (parameters["k"], parameters["train_instance_count"]) == (32, 2)
    item = aws.item(key)
    assert item["overridden"] == ["k", "train_instance_count"]
    assert item["run_settings"]["k"] == 32


@pytest.mark.real_uploads
def test_an_upload_deleted_before_start_run_reads_it_is_rejected(kfp, aws, start_run):
    event = _uploaded(aws, "incoming/gone.npz", {})
    obj = event["Records"][0]["s3"]["object"]
    boto3.client("s3", region_name="us-east-1").delete_object(
        Bucket=BUCKET, Key=obj["key"], VersionId=obj["versionId"]
    )
    result = start_run(event)
    [key] = result["rejected"]
    assert "the uploaded object is gone" in aws.item(key)["reason"]
    assert [m["kind"] for m in aws.messages()] == [contracts.KIND_DATA_REJECTED]
    assert kfp.requests == []
