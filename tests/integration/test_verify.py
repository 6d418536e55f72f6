"""`mnistflow verify` against the local stack's emulator (moto server): a deployed stack passes
every check, and each fault is one FAIL line saying what to fix, exit 1, no traceback.

The stack's outputs, topics, subscriptions and alarms are moto's; start-run is the local stack's
real handler (its dry run reaches the local KFP API, or a port nothing listens on); EKS and
Lambda's Invoke are tests/fakes/aws_deployed.py (moto has no Pod Identity or access entries,
and would run the function in Docker).
"""

from __future__ import annotations

import json
import socket
import uuid

import pytest
from moto.sns.models import sns_backends

from core import contracts
from core.settings import BY_KEY
from lambdas.composition import start_run_handler
from mnistflow import cli
from mnistflow.local.stack import LOCAL_KFP_TOKEN, LocalStack
from tests.fakes.aws_deployed import FakeEks, FakeLambda

pytestmark = pytest.mark.integration

CLUSTER = "mnist-cluster"
NAMESPACE = "kubeflow"
SERVICE_ACCOUNT = "mnistflow-pipeline"
ALARMS = ("mnistflow-start-run-errors", "mnistflow-undelivered-notifications")
CLOUDWATCH_MAY_PUBLISH = {
    "Sid": "LetTheProductsAlarmsPublish",
    "Effect": "Allow",
    "Principal": {"Service": contracts.CLOUDWATCH_SERVICE},
    "Action": "sns:Publish",
    "Resource": "*",
}


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    with LocalStack(tmp_path_factory.mktemp("verify")) as stack:
        yield stack


def _dead_url() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


class Deployed:
    """A deployed stack, as `cdk deploy` leaves it, on the emulator (one per test: own names)."""

    def __init__(self, local: LocalStack, mode: str = contracts.KFP_MODE_URL) -> None:
        self.local = local
        self.client = local.emulator.client
        self.name = f"MnistFlow{uuid.uuid4().hex[:8]}"
        self.account = local.account
        self.region = local.emulator.region
        role = f"arn:aws:iam::{self.account}:role/{self.name}-"
        sns = self.client("sns")
        self.topics = {
            label: sns.create_topic(Name=f"{self.name}-{label}")["TopicArn"]
            for label in ("notifications", "operations")
        }
        self.set_operations_policy([CLOUDWATCH_MAY_PUBLISH])
        for topic in self.topics.values():
            sns.subscribe(TopicArn=topic, Protocol="email", Endpoint="ops@example.com")
        self.alarms = [f"{self.name}-{alarm}" for alarm in ALARMS]
        for alarm in self.alarms:
            self.put_alarm(alarm, [self.topics["operations"]])
        self.start_run = f"{self.name}-start-run"
        self.outputs = {
            contracts.OUTPUT_START_RUN_FUNCTION: self.start_run,
            contracts.OUTPUT_NOTIFICATION_TOPIC_ARN: self.topics["notifications"],
            contracts.OUTPUT_OPERATIONS_TOPIC_ARN: self.topics["operations"],
            contracts.OUTPUT_PIPELINE_ROLE_ARN: role + "pods",
            contracts.OUTPUT_KFP_MODE: mode,
            contracts.OUTPUT_EKS_CLUSTER_NAME: CLUSTER,
            contracts.OUTPUT_KFP_NAMESPACE: NAMESPACE,
            contracts.OUTPUT_KFP_SERVICE_ACCOUNT: SERVICE_ACCOUNT,
            contracts.OUTPUT_START_RUN_ROLE_ARN: role + "start-run",
            contracts.OUTPUT_WATCHDOG_ROLE_ARN: role + "watchdog",
            contracts.OUTPUT_ALARM_NAMES: ",".join(self.alarms),
        }
        # The cluster as the stack and its admin leave it
        self.eks = FakeEks(self.account, self.region)
        self.eks.add_cluster(CLUSTER)
        self.eks.associate(CLUSTER, NAMESPACE, SERVICE_ACCOUNT, role + "pods")
        for function in ("start-run", "watchdog"):
            self.eks.access_entries[(CLUSTER, role + function)] = [
                contracts.START_RUN_KUBERNETES_GROUP
            ]
        self.start_run_environment = dict(local.environments[contracts.START_RUN])

    def put_alarm(self, name: str, actions: list[str]) -> None:
        self.client("cloudwatch").put_metric_alarm(
            AlarmName=name,
            MetricName="Errors",
            Namespace="AWS/Lambda",
            Statistic="Sum",
            Period=300,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            AlarmActions=actions,
        )

    def set_operations_policy(self, statements: list[dict]) -> None:
        self.client("sns").set_topic_attributes(
            TopicArn=self.topics["operations"],
            AttributeName="Policy",
            AttributeValue=json.dumps({"Version": "2012-10-17", "Statement": statements}),
        )

    def leave_pending(self, topic_label: str) -> None:
        """AWS lists an email subscription as "PendingConfirmation" until its link is followed
        (SNS developer guide, "Confirm the subscription"); moto confirms at once, so mark one as
        AWS lists it."""
        backend = sns_backends[self.account][self.region]
        for subscription in backend.subscriptions.values():
            if subscription.topic_arn == self.topics[topic_label]:
                subscription.arn = "PendingConfirmation"

    def create_stack(self) -> None:
        template = {
            "Resources": {"Queue": {"Type": "AWS::SQS::Queue"}},
            "Outputs": {key: {"Value": value} for key, value in self.outputs.items()},
        }
        self.client("cloudformation").create_stack(
            StackName=self.name, TemplateBody=json.dumps(template)
        )

    def verify(self, monkeypatch, capsys) -> tuple[int, list[str], str]:
        self.create_stack()
        start_run = start_run_handler(self.start_run_environment)
        lambda_ = FakeLambda({self.start_run: start_run})
        fakes = {"eks": self.eks, "lambda": lambda_}
        monkeypatch.setattr(
            cli, "_client", lambda args, service: fakes.get(service) or self.client(service)
        )
        code = cli.main(["verify", "--stack", self.name])
        out, err = capsys.readouterr()
        self.invoked = lambda_.events
        return code, out.splitlines(), err


def _line(lines: list[str], check: str) -> str:
    return next(line for line in lines if line.split(":")[0].split()[-1:] == check.split()[-1:])


def test_a_deployed_stack_passes_every_check_and_the_dry_run_starts_nothing(
    local, monkeypatch, capsys
):
    deployed = Deployed(local)
    code, lines, err = deployed.verify(monkeypatch, capsys)
    assert (code, err) == (0, ""), lines
    assert lines[0] == (
        f"ok    stack: {deployed.name} CREATE_COMPLETE in us-east-1,"
        f" {len(deployed.outputs)} outputs"
    )
    assert lines[1] == "ok    subscriptions: notifications 1 confirmed, operations 1 confirmed"
    assert lines[2].startswith(f"ok    kfp: start-run reached KFP 2.14.0 ({local.kfp.url}); ")
    assert lines[3] == (
        f"ok    pod identity: {NAMESPACE}/{SERVICE_ACCOUNT} gets"
        f" {deployed.outputs[contracts.OUTPUT_PIPELINE_ROLE_ARN]}; the agent is there"
    )
    assert lines[4] == (
        "ok    access entries: skipped: url mode (start-run uses the token in the secret)"
    )
    assert lines[5] == "ok    alarms: 2 alarms notify the operations topic; CloudWatch may publish"
    assert lines[6] == "all checks passed"
    # The dry run was the one event, and KFP got no run and no experiment from it
    assert deployed.invoked == [(deployed.start_run, contracts.DRY_RUN_EVENT)]
    assert local.kfp.runs == {}


def _missing_output(d: Deployed) -> None:
    del d.outputs[contracts.OUTPUT_ALARM_NAMES]


def _pending(d: Deployed) -> None:
    d.leave_pending("operations")


def _kfp_down(d: Deployed) -> None:
    d.start_run_environment[BY_KEY["kfp_url"].env_name] = _dead_url()


def _no_association(d: Deployed) -> None:
    d.eks.associations.clear()


def _alarm_without_action(d: Deployed) -> None:
    d.put_alarm(d.alarms[0], [])


def _policy_without_cloudwatch(d: Deployed) -> None:
    d.set_operations_policy([{**CLOUDWATCH_MAY_PUBLISH, "Principal": {"AWS": "*"}}])


@pytest.mark.parametrize(
    ("fault", "check", "expected"),
    [
        (
            _missing_output,
            "stack",
            "FAIL  stack: {name} has no output AlarmNames: deploy this version"
            " (npx aws-cdk@2 deploy)",
        ),
        (
            _pending,
            "subscriptions",
            "FAIL  subscriptions: not confirmed: ops@example.com (operations): follow the link in"
            " the 'AWS Notification - Subscription Confirmation' email; after 48 hours SNS"
            " deletes it, then subscribe again: aws sns subscribe --topic-arn {operations}"
            " --protocol email --notification-endpoint ops@example.com",
        ),
        (
            _kfp_down,
            "kfp",
            "FAIL  kfp: start-run cannot use KFP ({kfp_url}): the healthz failed: GET"
            " /apis/v2beta1/healthz: connection to the KFP API failed (ConnectionRefusedError:"
            " [Errno 111] Connection refused); check kfp_url ({kfp_url}) and the function's"
            " network (vpc_id, subnet_ids)",
        ),
        (
            _no_association,
            "pod identity",
            f"FAIL  pod identity: no Pod Identity association for {NAMESPACE}/{SERVICE_ACCOUNT} in"
            f" cluster {CLUSTER}: the stack makes it; deploy again (npx aws-cdk@2 deploy) or"
            " check kfp_namespace and kfp_service_account",
        ),
        (
            _alarm_without_action,
            "alarms",
            "FAIL  alarms: {alarm} do not notify the operations topic: deploy again"
            " (npx aws-cdk@2 deploy)",
        ),
        (
            _policy_without_cloudwatch,
            "alarms",
            "FAIL  alarms: the operations topic's policy does not let cloudwatch.amazonaws.com"
            " publish, so no alarm notifies anyone: deploy again (npx aws-cdk@2 deploy); it"
            " restores the statement LetTheProductsAlarmsPublish",
        ),
    ],
)
def test_each_fault_is_one_line_saying_what_to_fix(
    local, monkeypatch, capsys, fault, check, expected
):
    # Given a deployed stack with one fault
    deployed = Deployed(local)
    fault(deployed)
    # When the deployer runs mnistflow verify
    code, lines, err = deployed.verify(monkeypatch, capsys)
    # Then that check fails with what to fix, the others pass, exit 1, no traceback
    values = {
        "name": deployed.name,
        "operations": deployed.topics["operations"],
        "kfp_url": deployed.start_run_environment[BY_KEY["kfp_url"].env_name],
        "alarm": deployed.alarms[0],
    }
    assert code == 1 and err == "" and "Traceback" not in "\n".join(lines)
    assert _line(lines, check) == expected.format(**values)
    failed = [line for line in lines if line.startswith("FAIL")]
    if check == "stack":  # the rest needs the outputs: not checked
        assert len(failed) == 6 and lines[-1] == "6 of 6 checks failed"
    else:
        assert failed == [expected.format(**values)] and lines[-1] == "1 of 6 checks failed"


def test_a_kfp_that_answers_but_refuses_the_token_says_how_to_mint_one(local, monkeypatch, capsys):
    deployed = Deployed(local)
    secret = deployed.start_run_environment[BY_KEY["kfp_token_secret_arn"].env_name]
    local.emulator.client("secretsmanager").put_secret_value(
        SecretId=secret, SecretString="a-stale-token"
    )
    try:
        code, lines, _ = deployed.verify(monkeypatch, capsys)
    finally:
        local.emulator.client("secretsmanager").put_secret_value(
            SecretId=secret, SecretString=LOCAL_KFP_TOKEN
        )
    line = _line(lines, "kfp")
    assert code == 1
    assert line.startswith(f"FAIL  kfp: start-run cannot use KFP ({local.kfp.url}): the experiment")
    assert "HTTP 401" in line
    assert line.endswith(
        "the token was refused: mint one (kubectl -n kubeflow create token default-editor"
        " --audience pipelines.kubeflow.org --duration 8760h) and put it in the secret"
        " (aws secretsmanager put-secret-value --secret-id <kfp_token_secret_name>"
        " --secret-string <token>)"
    )


def test_a_missing_access_entry_in_cluster_mode_says_to_deploy_again(local, monkeypatch, capsys):
    deployed = Deployed(local, mode=contracts.KFP_MODE_CLUSTER)
    start_run_role = deployed.outputs[contracts.OUTPUT_START_RUN_ROLE_ARN]
    del deployed.eks.access_entries[(CLUSTER, start_run_role)]
    code, lines, _ = deployed.verify(monkeypatch, capsys)
    assert code == 1
    assert _line(lines, "access entries") == (
        f"FAIL  access entries: start-run's role {start_run_role} has no access entry in cluster"
        f" {CLUSTER}: deploy again (npx aws-cdk@2 deploy)"
    )


def test_a_start_run_deployed_before_the_dry_run_says_to_deploy_this_version(
    local, monkeypatch, capsys
):
    # An older start-run takes the event as an S3 notification without records: it answers
    # its outcome, not the dry run's
    deployed = Deployed(local)
    deployed.create_stack()
    old = FakeLambda({deployed.start_run: lambda event, context: {"started": [], "skipped": []}})
    fakes = {"eks": deployed.eks, "lambda": old}
    monkeypatch.setattr(
        cli, "_client", lambda args, service: fakes.get(service) or deployed.client(service)
    )
    assert cli.main(["verify", "--stack", deployed.name]) == 1
    line = _line(capsys.readouterr().out.splitlines(), "kfp")
    assert line == (
        f"FAIL  kfp: {deployed.start_run} does not know the dry run (deployed before mnistflow"
        " verify): deploy this version (npx aws-cdk@2 deploy)"
    )


def test_no_stack_in_the_region_is_one_line_and_the_rest_is_not_checked(local, monkeypatch, capsys):
    monkeypatch.setattr(cli, "_client", lambda args, service: local.emulator.client(service))
    assert cli.main(["verify", "--stack", "NotDeployed"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    assert lines[0] == (
        "FAIL  stack: no stack NotDeployed in us-east-1: deploy it (npx aws-cdk@2 deploy -c"
        " eks_cluster_name=<cluster>) or name its region (--region) and stack (--stack)"
    )
    assert lines[1] == "FAIL  subscriptions: not checked (needs the stack's outputs)"
    assert lines[-1] == "6 of 6 checks failed"
