"""The start-run handler end to end: moto for AWS, the fake KFP server for the cluster's API."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
import yaml

from runflow import contracts
from tests.conftest import load_event
from tests.fakes.kfp_server import FakeKfpServer
from tests.integration.conftest import (
    BUCKET,
    CLUSTER,
    KFP_TEST_TIMEOUT_SECONDS,
    ROLE_ARN,
    SECRET_TOKEN,
    LambdaContext,
)

pytestmark = pytest.mark.integration

RUNS = "/apis/v2beta1/runs"
EXPERIMENTS = "/apis/v2beta1/experiments"


def handler():
    from runflow.handlers import start_run

    return start_run.handler


def run_key_of(event_name: str) -> str:
    obj = load_event(event_name)["Records"][0]["s3"]["object"]
    key = unquote_plus(obj["key"])
    return contracts.run_key(BUCKET, key, obj.get("versionId") or obj["eTag"])


@pytest.fixture
def kfp(lambda_env):
    with FakeKfpServer(accept_token=SECRET_TOKEN) as server:
        lambda_env.setenv("KFP_URL", server.url)
        yield server


def log_lines(caplog) -> list[dict]:
    """The structured log lines so far: message plus the extra keys."""
    return [{**vars(record), "message": record.getMessage()} for record in caplog.records]


# -- the happy path ------------------------------------------------------------------------


def test_upload_starts_one_run_with_the_spec_and_parameters(kfp, aws, pipeline_spec_file):
    # Given an upload of a dataset version under incoming/
    event = load_event("s3_put")
    key = run_key_of("s3_put")

    # When the handler receives its notification
    result = handler()(event, LambdaContext())

    # Then one run exists on KFP, named by the run key, in the configured experiment
    assert result["started"] == [key]
    [run] = kfp.runs_named(key)
    [experiment] = kfp.state.experiments.values()
    assert experiment["display_name"] == "mnist-uploads"
    assert run["experiment_id"] == experiment["experiment_id"]
    # And the request carried the bearer token from Secrets Manager and the spec inline
    [create] = kfp.requests_to("POST", RUNS)
    assert create.headers["authorization"] == f"Bearer {SECRET_TOKEN}"
    assert create.headers["content-type"] == "application/json"
    assert create.body["display_name"] == key
    assert create.body["pipeline_spec"] == yaml.safe_load(pipeline_spec_file.read_text())
    assert create.body["runtime_config"]["parameters"] == {
        "dataset_uri": f"s3://{BUCKET}/incoming/mnist.pkl.gz",
        "run_key": key,
        "region": "us-east-1",
        "role_arn": ROLE_ARN,
        "training_image": "",
        "train_instance_type": "ml.m5.xlarge",
        "train_instance_count": 1,
        "transform_instance_type": "ml.m5.large",
        "transform_instance_count": 2,
        "endpoint_instance_type": "ml.t2.medium",
        "endpoint_instance_count": 1,
        "endpoint_name": "",
    }
    # And every parameter it sends is one the pipeline declares
    declared = create.body["pipeline_spec"]["root"]["inputDefinitions"]["parameters"]
    assert set(create.body["runtime_config"]["parameters"]) <= set(declared)
    # And the lookup before the create filtered by display name within the experiment
    [lookup] = kfp.requests_to("GET", RUNS)
    assert lookup.query["experiment_id"] == experiment["experiment_id"]
    predicate = json.loads(lookup.query["filter"])["predicates"][0]
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


def test_duplicate_delivery_gives_one_run(kfp, aws, caplog):
    # Given a notification that was already handled
    event = load_event("s3_put")
    handler()(event, LambdaContext())
    caplog.clear()

    # When S3 delivers it again
    result = handler()(event, LambdaContext())

    # Then nothing new happens on KFP, and the log says why
    key = run_key_of("s3_put")
    assert result["duplicates"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert len(kfp.requests_to("POST", RUNS)) == 1
    assert any("duplicate delivery" in line["message"] for line in log_lines(caplog))
    assert len(aws.messages()) == 1  # only the first RUN_STARTED


def test_existing_experiment_is_reused(kfp, aws):
    # Given the experiment already exists on KFP
    handler()(load_event("s3_put"), LambdaContext())

    # When another dataset arrives
    handler()(load_event("s3_put_special_key"), LambdaContext())

    # Then no second experiment is created
    assert len(kfp.state.experiments) == 1
    assert len(kfp.requests_to("POST", EXPERIMENTS)) == 1


@pytest.mark.parametrize("event_name", ["s3_put_special_key", "s3_put_unversioned"])
def test_awkward_keys_are_decoded(kfp, aws, event_name):
    # Given a key with spaces, '+', unicode and deep folders (or an unversioned bucket)
    event = load_event(event_name)
    raw_key = event["Records"][0]["s3"]["object"]["key"]

    # When it is handled
    handler()(event, LambdaContext())

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
    kfp, aws, caplog, event_name, log_fragment
):
    # Given a notification that is not a dataset upload to our bucket
    # When it is handled
    result = handler()(load_event(event_name), LambdaContext())

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
def test_bad_uploads_are_rejected_and_announced(kfp, aws, caplog, event_name, reason_fragment):
    # Given an upload under incoming/ that cannot be a dataset
    key = run_key_of(event_name)

    # When it is handled
    result = handler()(load_event(event_name), LambdaContext())

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
    handler()(load_event(event_name), LambdaContext())
    assert aws.item(key)["status"] == contracts.STATUS_REJECTED and len(aws.messages()) == 1


def test_size_limit_comes_from_the_configuration(kfp, aws, lambda_env):
    # Given a limit lower than the upload's size
    lambda_env.setenv("MAX_DATASET_BYTES", "1000")

    # When the upload is handled
    handler()(load_event("s3_put"), LambdaContext())

    # Then it is rejected for its size
    assert "over the limit of 1000 bytes" in aws.item(run_key_of("s3_put"))["reason"]


# -- KFP failing ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("program", "calls_expected", "reason_fragment"),
    [
        (lambda k: k.fail(401, times=10), 2, "HTTP 401"),
        (lambda k: k.fail(404, times=10), 2, "HTTP 404"),
        (lambda k: k.fail(500, times=10), 4, "HTTP 500"),
        (lambda k: k.drop_connection(times=10), 4, "connection to the KFP API failed"),
        (
            lambda k: k.hang(times=10),
            4,
            f"no answer from the KFP API within {KFP_TEST_TIMEOUT_SECONDS:g} s",
        ),
    ],
    ids=["401", "404", "500", "dropped", "no-answer"],
)
def test_kfp_failing_records_start_failed_emails_and_raises(
    kfp, aws, clock, caplog, program, calls_expected, reason_fragment
):
    # Given a KFP API that keeps failing
    program(kfp)
    key = run_key_of("s3_put")

    # When an upload is handled, Then the invocation fails so Lambda retries / dead-letters it
    from runflow.logic.start_run import StartRunFailed

    with pytest.raises(StartRunFailed, match=key):
        handler()(load_event("s3_put"), LambdaContext())

    # And KFP was tried as often as the policy says, with backoff between tries
    assert len(kfp.requests) == calls_expected
    assert clock.sleeps == [1.0, 2.0, 4.0][: calls_expected - 1]
    # And the record says START_FAILED with the reason
    item = aws.item(key)
    assert item["status"] == contracts.STATUS_START_FAILED
    assert reason_fragment in item["reason"]
    # And RUN_FAILED says why and what to check
    [message] = aws.messages()
    assert message["kind"] == contracts.KIND_RUN_FAILED and message["run_key"] == key
    assert len(message["subject"]) < 100 and message["subject"].isascii()
    assert reason_fragment in message["message"] and "What to check" in message["message"]
    assert kfp.runs_named(key) == []
    assert any(line["message"] == "KFP run could not be started" for line in log_lines(caplog))


def test_a_later_delivery_after_start_failed_starts_the_run(kfp, aws):
    # Given a start that failed because KFP answered 500 throughout
    kfp.fail(500, times=4)
    with pytest.raises(Exception, match="could not be started"):
        handler()(load_event("s3_put"), LambdaContext())

    # When Lambda retries the event and KFP is back
    handler()(load_event("s3_put"), LambdaContext())

    # Then exactly one run exists and the record shows both attempts
    key = run_key_of("s3_put")
    assert len(kfp.runs_named(key)) == 1
    item = aws.item(key)
    assert item["status"] == contracts.STATUS_RUN_STARTED and item["start_attempts"] == 2
    assert "reason" not in item
    assert [e["event"] for e in item["timeline"]] == [
        "ACCEPTED",
        "START_FAILED",
        "ACCEPTED",
        "RUN_STARTED",
    ]
    assert [m["kind"] for m in aws.messages()] == ["RUN_FAILED", "RUN_STARTED"]


def test_transient_failure_is_retried_within_the_invocation(kfp, aws, clock):
    # Given a KFP API that fails twice, then recovers
    kfp.fail(503, times=2)

    # When an upload is handled
    result = handler()(load_event("s3_put"), LambdaContext())

    # Then the run starts in the same invocation after two backoffs
    assert result["started"] == [run_key_of("s3_put")]
    assert clock.sleeps == [1.0, 2.0]


def test_lost_create_response_does_not_create_a_second_run(kfp, aws):
    # Given KFP creates the run but the answer never reaches the Lambda
    kfp.lose_create_run_response()

    # When an upload is handled
    result = handler()(load_event("s3_put"), LambdaContext())

    # Then the retry finds the run by its display name instead of creating another
    key = run_key_of("s3_put")
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert len(kfp.requests_to("POST", RUNS)) == 1
    assert aws.item(key)["kfp_run_id"] == kfp.runs_named(key)[0]["run_id"]


def test_lost_response_then_lambda_retry_finds_the_run(kfp, aws, lambda_env):
    # Given a run created on KFP whose response was lost and the invocation then failed
    kfp.lose_create_run_response()
    kfp.fail(500, times=3, method="GET", path=RUNS)
    with pytest.raises(Exception, match="could not be started"):
        handler()(load_event("s3_put"), LambdaContext())

    # When Lambda delivers the event again
    result = handler()(load_event("s3_put"), LambdaContext())

    # Then it records the existing run: one run on KFP
    key = run_key_of("s3_put")
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1
    assert aws.item(key)["status"] == contracts.STATUS_RUN_STARTED


def test_an_expired_claim_is_taken_over_by_a_redelivery(kfp, aws, clock):
    # Given an invocation that claimed the run key and died (Lambda timeout) before recording
    from runflow.composition import start_run_service

    key = run_key_of("s3_put")
    handler()(load_event("s3_put"), LambdaContext())  # builds the service; records RUN_STARTED
    import boto3

    boto3.client("dynamodb", region_name="us-east-1").update_item(
        TableName="mnistflow-runs",
        Key={"run_key": {"S": key}},
        UpdateExpression="SET #s = :a, claim_expires_at = :past",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":a": {"S": "ACCEPTED"}, ":past": {"N": "1"}},
    )
    assert start_run_service() is not None

    # When the event is delivered again
    result = handler()(load_event("s3_put"), LambdaContext())

    # Then the claim is taken over and the existing run reused, not duplicated
    assert result["reused"] == [key]
    assert len(kfp.runs_named(key)) == 1


def test_bad_token_is_reread_after_401(kfp, aws):
    # Given KFP rejects the first call (a rotated token)
    kfp.fail(401, times=1)

    # When an upload is handled
    result = handler()(load_event("s3_put"), LambdaContext())

    # Then the secret is read again and the second try succeeds
    assert result["started"] == [run_key_of("s3_put")]


def test_multi_user_namespace_is_sent_in_url_mode(kfp, aws, lambda_env):
    # Given a profile namespace for multi-user Kubeflow
    lambda_env.setenv("KFP_NAMESPACE", "team-mnist")

    # When an upload is handled
    handler()(load_event("s3_put"), LambdaContext())

    # Then experiments are looked up and created in that namespace
    [lookup] = kfp.requests_to("GET", EXPERIMENTS)
    assert lookup.query["namespace"] == "team-mnist"
    assert kfp.requests_to("POST", EXPERIMENTS)[0].body["namespace"] == "team-mnist"
    assert kfp.requests_to("GET", RUNS)[0].query["namespace"] == "team-mnist"


# -- cluster mode ----------------------------------------------------------------------------


def test_cluster_mode_goes_through_the_service_proxy_with_an_eks_token(
    aws, lambda_env, test_ca, monkeypatch
):
    # Given the fake KFP served over TLS at the API server's service-proxy path
    from runflow import composition
    from runflow.dal import eks_token

    proxy = "/api/v1/namespaces/kubeflow/services/ml-pipeline:http/proxy"
    with FakeKfpServer(
        prefix=proxy,
        ssl_context=test_ca.server_context,
        accept_token=lambda t: t.startswith("k8s-aws-v1."),
    ) as server:
        lambda_env.setenv("KFP_MODE", "cluster")
        lambda_env.setenv("EKS_CLUSTER_NAME", CLUSTER)
        lambda_env.setenv("KFP_NAMESPACE", "kubeflow")
        lambda_env.delenv("KFP_URL")
        lambda_env.delenv("KFP_TOKEN_SECRET_ARN")
        described = []

        def describe_via_moto_then_point_at_the_fake(eks, name):
            # moto answers DescribeCluster; its endpoint and CA are then swapped for ours.
            real = eks_token.describe_cluster(eks, name)
            described.append(name)
            return replace(real, endpoint=server.endpoint, ca_pem=test_ca.ca_pem)

        monkeypatch.setattr(
            composition, "describe_cluster", describe_via_moto_then_point_at_the_fake
        )

        # When two uploads are handled by the same container
        handler()(load_event("s3_put"), LambdaContext())
        handler()(load_event("s3_put_special_key"), LambdaContext())

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
    aws, lambda_env, test_ca, monkeypatch, clock
):
    # Given a cluster whose reported CA did not sign the API server's certificate
    from runflow import composition
    from runflow.dal import eks_token
    from runflow.logic.start_run import StartRunFailed

    proxy = "/api/v1/namespaces/kubeflow/services/ml-pipeline:http/proxy"
    with FakeKfpServer(prefix=proxy, ssl_context=test_ca.server_context) as server:
        lambda_env.setenv("KFP_MODE", "cluster")
        lambda_env.setenv("EKS_CLUSTER_NAME", CLUSTER)
        lambda_env.setenv("KFP_NAMESPACE", "kubeflow")
        monkeypatch.setattr(
            composition,
            "describe_cluster",
            lambda eks, name: replace(
                eks_token.describe_cluster(eks, name), endpoint=server.endpoint, ca_pem=""
            ),
        )

        # When an upload is handled, Then it fails for TLS and says so
        with pytest.raises(StartRunFailed):
            handler()(load_event("s3_put"), LambdaContext())
        assert "TLS failure" in aws.item(run_key_of("s3_put"))["reason"]
        assert clock.sleeps == []  # certificate problems do not heal by waiting
