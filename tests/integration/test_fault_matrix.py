"""The fault matrix: every outside call of start-run and track-progress, each fault, then what
AWS does next (Lambda's retries with one request id, the failure queue), then the watchdog (and,
for track-progress, `redrive`). The invariant for an upload: exactly one KFP run, or START_FAILED
plus one RUN_FAILED email plus a failure-queue message; never nothing, never two. For a run's
events: the record every event set gives without faults, each email kind once.

The one duplicate the design allows: SNS accepted a publish whose answer was lost; the retry
sends it again (SNS cannot deduplicate topics that email). Rows say so.

`python benchmarks/fault_matrix.py` prints the same matrix as a table (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, replace

import boto3
import pytest

from core import contracts
from lambdas.composition import watchdog_handler
from mnistflow.local.kfp_api import Fault
from tests.conftest import load_event
from tests.fakes.aws_faults import ANSWER_LOST, FAULTS, SERVER_ERROR, THROTTLE, TIMEOUT, AwsFault
from tests.fakes.progress import SUCCESSFUL_RUN, start_run_record
from tests.fakes.settings import function_environ
from tests.integration.conftest import (
    FAILURE_QUEUE,
    REGION,
    TABLE,
    LambdaContext,
)

pytestmark = pytest.mark.integration

# `benchmarks/fault_matrix.py` sets this to collect every row as JSON lines.
REPORT_VARIABLE = "MNISTFLOW_FAULT_MATRIX_REPORT"
RUNS = "/apis/v2beta1/runs"
EXPERIMENTS = "/apis/v2beta1/experiments"
DAY = 86400

# start-run's outside calls, in the order a start makes them (url mode).
START_RUN_AWS_SITES = {
    "dynamodb claim": ("dynamodb", "UpdateItem", 1),
    "s3 upload metadata": ("s3", "HeadObject", 1),
    "secrets manager token": ("secretsmanager", "GetSecretValue", 1),
    "dynamodb RUN_STARTED": ("dynamodb", "UpdateItem", 2),
    "dynamodb email claim": ("dynamodb", "UpdateItem", 3),
    "sns RUN_STARTED": ("sns", "Publish", 1),
    "dynamodb email sent": ("dynamodb", "UpdateItem", 4),
}
START_RUN_KFP_SITES = {
    "kfp find experiment": ("GET", EXPERIMENTS),
    "kfp create experiment": ("POST", EXPERIMENTS),
    "kfp find run": ("GET", RUNS),
    "kfp create run": ("POST", RUNS),
}
KFP_FAULTS = {
    THROTTLE: lambda method, path: Fault("status", method=method, path=path, status=429),
    SERVER_ERROR: lambda method, path: Fault("status", method=method, path=path, status=503),
    TIMEOUT: lambda method, path: Fault("hang", method=method, path=path),
    ANSWER_LOST: lambda method, path: Fault("lose_response", method=method, path=path),
}


def report(row: Row) -> Row:
    path = os.environ.get(REPORT_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            fields = asdict(row)
            fields.update(
                lost=row.lost,
                doubled=row.doubled,
                false_emails=row.false_emails,
                duplicate_emails=row.duplicate_emails,
                ok=row.ok,
            )
            out.write(json.dumps(fields) + "\n")
    return row


@dataclass(frozen=True)
class Row:
    function: str
    site: str
    fault: str
    runs: int
    status: str
    emails: tuple[str, ...]
    failure_queue: bool
    fired: bool = True  # the fault was injected (a wrong site would test nothing)

    @property
    def lost(self) -> bool:
        started = self.runs == 1 and self.status == contracts.STATUS_RUN_STARTED
        given_up = (
            self.runs == 0
            and self.status == contracts.STATUS_START_FAILED
            and self.emails.count(contracts.KIND_RUN_FAILED) == 1
            and self.failure_queue
        )
        return self.runs <= 1 and not (started or given_up)

    @property
    def doubled(self) -> bool:
        return self.runs > 1

    @property
    def false_emails(self) -> int:
        wrong = contracts.KIND_RUN_FAILED if self.runs else contracts.KIND_RUN_STARTED
        return self.emails.count(wrong)

    @property
    def duplicate_emails(self) -> int:
        return sum(n - 1 for n in Counter(self.emails).values() if n > 1)

    @property
    def duplicate_allowed(self) -> bool:
        return self.site.startswith("sns") and self.fault == ANSWER_LOST

    @property
    def ok(self) -> bool:
        duplicates_ok = self.duplicate_emails == 0 or (
            self.duplicate_allowed and self.duplicate_emails == 1
        )
        return not (self.lost or self.doubled or self.false_emails) and duplicates_ok


def _watchdog(aws, kfp, later: float):
    env = function_environ(
        contracts.WATCHDOG,
        REGION,
        kfp_mode="url",
        kfp_url=kfp.url,
        kfp_token_secret_name="mnistflow/kfp-token",
        kfp_token_secret_arn=aws.secret_arn,
        kfp_experiment_name="mnist-uploads",
        runs_table_name=TABLE,
        notification_topic_arn=aws.topic_arn,
        run_slots_queue_url=aws.run_slots_queue_url,
    )
    handler = watchdog_handler(env, clock=lambda: later, kfp_timeout_seconds=0.5)
    return handler({}, LambdaContext(function_name=contracts.WATCHDOG))


def _really_uploaded(event: dict) -> dict:
    """The canned event, naming a version really put in moto: HeadObject answers 200, so that
    a lost answer (which needs a success to lose) can be injected on it too."""
    obj = event["Records"][0]["s3"]
    put = boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=obj["bucket"]["name"], Key=obj["object"]["key"], Body=b"a dataset"
    )
    obj["object"]["versionId"] = put["VersionId"]
    return event


def run_start_case(aws, kfp, start_run, site: str, fault: str, persistent: bool = False) -> Row:
    """One upload, one fault (or, `persistent`, KFP failing every call of the site), Lambda's
    retries, then a watchdog pass a day later."""
    if site in START_RUN_AWS_SITES:
        service, operation, nth = START_RUN_AWS_SITES[site]
        aws_fault = AwsFault(service, operation, fault, nth)
        aws_fault.attach(start_run.handler.clients(service))
        fired = lambda: aws_fault.fired  # noqa: E731
    else:
        method, path = START_RUN_KFP_SITES[site]
        injected = KFP_FAULTS[fault](method, path)
        injected.times = times = 10_000 if persistent else 1
        kfp.inject(injected)
        fired = lambda: injected.times < times  # noqa: E731
    event = _really_uploaded(load_event("s3_put"))
    result = start_run.invoke_async(event)
    was_fired = fired()
    kfp.clear_faults()
    _watchdog(aws, kfp, time.time() + DAY)
    key = contracts.run_key(
        event["Records"][0]["s3"]["bucket"]["name"],
        "incoming/mnist.pkl.gz",
        event["Records"][0]["s3"]["object"]["versionId"],
    )
    item = aws.item(key) or {}
    return Row(
        contracts.START_RUN,
        site + (" (down)" if persistent else ""),
        fault,
        runs=len(kfp.runs_named(key)),
        status=item.get("status", ""),
        emails=tuple(m["kind"] for m in aws.messages()),
        failure_queue=result == FAILURE_QUEUE,
        fired=was_fired,
    )


START_CASES = [
    (site, fault) for site in (*START_RUN_AWS_SITES, *START_RUN_KFP_SITES) for fault in FAULTS
]


@pytest.mark.parametrize(("site", "fault"), START_CASES)
def test_start_run_under_one_fault_starts_one_run_or_gives_up_once(
    aws, kfp, start_run, site, fault
):
    row = report(run_start_case(aws, kfp, start_run, site, fault))
    assert row.fired, f"no fault was injected at {site}"
    assert row.ok, row
    assert row.runs == 1  # one fault, then Lambda's retry (or the watchdog) finishes the start


@pytest.mark.parametrize("site", list(START_RUN_KFP_SITES))
@pytest.mark.parametrize("fault", [THROTTLE, SERVER_ERROR])
def test_start_run_with_kfp_down_gives_up_once_at_the_last_attempt(
    aws, kfp, start_run, site, fault
):
    row = report(run_start_case(aws, kfp, start_run, site, fault, persistent=True))
    assert row.ok and row.status == contracts.STATUS_START_FAILED and row.failure_queue, row
    assert row.emails == (contracts.KIND_RUN_FAILED,)


# -- track-progress ---------------------------------------------------------------------------

# Its outside calls for the event that decides the outcome (the endpoint in service).
TRACK_SITES = {
    "dynamodb progress": ("dynamodb", "UpdateItem", 1),
    "dynamodb outcome": ("dynamodb", "UpdateItem", 2),
    "dynamodb email claim": ("dynamodb", "UpdateItem", 3),
    "sns ENDPOINT_READY": ("sns", "Publish", 1),
    "dynamodb email sent": ("dynamodb", "UpdateItem", 4),
}
DECIDING_EVENT = "sagemaker_endpoint_in_service"


def _seed(aws) -> None:
    from lambdas.dal.runs_table import to_attribute_value
    from tests.integration.conftest import _client

    item = {name: to_attribute_value(value) for name, value in start_run_record().items()}
    _client("dynamodb").put_item(TableName=TABLE, Item=item)


def run_track_case(aws, track_progress, site: str, fault: str) -> tuple[dict, list[str], int]:
    """A whole run's events, the fault on the deciding one's call; an event Lambda gave up on
    goes back with `redrive` (a synchronous invoke). Returns (state, emails, redriven)."""
    _seed(aws)
    redriven = 0
    for name in SUCCESSFUL_RUN:
        if name == DECIDING_EVENT:
            service, operation, nth = TRACK_SITES[site]
            injected = AwsFault(service, operation, fault, nth)
            injected.attach(track_progress.handler.clients(service))
        event = load_event(name)
        if track_progress.invoke_async(event) == FAILURE_QUEUE:
            track_progress(event, LambdaContext(function_name=contracts.TRACK_PROGRESS))
            redriven += 1
    item = aws.item(start_run_record()["run_key"]) or {}
    state = {k: v for k, v in item.items() if k != "announced"}
    assert injected.fired, f"no fault was injected at {site}"
    return state, [m["kind"] for m in aws.messages()], redriven


@pytest.mark.parametrize("site", list(TRACK_SITES))
@pytest.mark.parametrize("fault", FAULTS)
def test_track_progress_under_one_fault_keeps_the_record_and_announces_once(
    aws, track_progress, site, fault
):
    state, emails, _ = run_track_case(aws, track_progress, site, fault)
    report(
        Row(
            contracts.TRACK_PROGRESS,
            site,
            fault,
            runs=1,
            status=contracts.STATUS_RUN_STARTED if state.get("outcome") else "",
            emails=tuple(("RUN_STARTED", *emails)),
            failure_queue=False,
        )
    )
    assert state["outcome"] == contracts.STATUS_SUCCEEDED
    assert all(f"progress:{s}" in " ".join(state) for s in ("training", "transform", "endpoint"))
    allowed = 2 if site.startswith("sns") and fault == ANSWER_LOST else 1
    assert 1 <= emails.count(contracts.KIND_ENDPOINT_READY) <= allowed, emails
    assert contracts.KIND_RUN_FAILED not in emails


# -- cluster mode: the EKS describe and the STS presign ----------------------------------------

CLUSTER_SITES = {"eks describe": ("eks", "DescribeCluster", 1)}


class PresignFault:
    """The STS presign (a local signature, no call) failing once: credentials not at hand."""

    def __init__(self) -> None:
        self.fired = False

    def attach(self, sts) -> None:
        sts.meta.events.register("before-parameter-build.sts.GetCallerIdentity", self._fail)

    def _fail(self, **_: object) -> None:
        from botocore.exceptions import NoCredentialsError

        if not self.fired:
            self.fired = True
            raise NoCredentialsError()


def _cluster_case(aws, lambda_env, start_run, test_ca, monkeypatch, inject) -> Row:
    from mnistflow.local.kfp_api import LocalKfpApi
    from tests.integration.test_start_run_handler import (
        PROXY,
        _cluster_mode,
        _point_the_cluster_at,
    )

    with LocalKfpApi(prefix=PROXY, ssl_context=test_ca.server_context) as server:
        _cluster_mode(lambda_env)
        _point_the_cluster_at(monkeypatch, server, test_ca.ca_pem)
        inject(start_run.handler.clients)
        event = load_event("s3_put")
        result = start_run.invoke_async(event)
        key = contracts.run_key(
            event["Records"][0]["s3"]["bucket"]["name"],
            "incoming/mnist.pkl.gz",
            event["Records"][0]["s3"]["object"]["versionId"],
        )
        item = aws.item(key) or {}
        return Row(
            contracts.START_RUN,
            "cluster",
            "",
            runs=len(server.runs_named(key)),
            status=item.get("status", ""),
            emails=tuple(m["kind"] for m in aws.messages()),
            failure_queue=result == FAILURE_QUEUE,
        )


@pytest.mark.parametrize("fault", FAULTS)
def test_cluster_mode_under_an_eks_describe_fault_starts_one_run(
    aws, lambda_env, start_run, test_ca, monkeypatch, fault
):
    service, operation, nth = CLUSTER_SITES["eks describe"]
    injected = AwsFault(service, operation, fault, nth)
    row = _cluster_case(
        aws,
        lambda_env,
        start_run,
        test_ca,
        monkeypatch,
        lambda clients: injected.attach(clients(service)),
    )
    row = report(replace(row, site="eks describe", fault=fault))
    assert injected.fired and row.ok and row.runs == 1, row


def test_cluster_mode_under_a_failed_presign_starts_one_run(
    aws, lambda_env, start_run, test_ca, monkeypatch
):
    injected = PresignFault()
    row = _cluster_case(
        aws,
        lambda_env,
        start_run,
        test_ca,
        monkeypatch,
        lambda clients: injected.attach(clients("sts")),
    )
    row = report(replace(row, site="sts presign", fault="no credentials"))
    assert injected.fired and row.ok and row.runs == 1, row
