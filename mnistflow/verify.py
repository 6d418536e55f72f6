"""`verify`: check a deployed stack from the deployer's machine, one line per check.

What is checked, and how (each says what to fix when it fails):

- stack: the stack is in a settled state and has every output the checks read
  (CloudFormation DescribeStacks; core.contracts.VERIFIED_OUTPUTS);
- subscriptions: no email subscription of the two topics waits for confirmation (SNS
  ListSubscriptionsByTopic lists an unconfirmed one with "PendingConfirmation" as its
  SubscriptionArn: SNS developer guide, "Confirm the subscription"; SNS deletes it after 48 hours:
  "Amazon SNS now supports automatic deletion of unconfirmed subscriptions", 2023-05-10);
- kfp: start-run reaches KFP, by its dry run (core.contracts.DRY_RUN_EVENT, Lambda Invoke
  RequestResponse): the same connection a start makes, healthz and the experiment lookup, nothing
  started. In cluster mode this also checks the Kubernetes Role: the API server answers 403 to a
  group the Role does not admit. It checks the Role's `get` (the lookups); its `create` is used
  only by a real start;
- pod identity: the association for the pipeline's service account gives the stack's pod role
  (EKS ListPodIdentityAssociations, DescribePodIdentityAssociation), and the Pod Identity agent
  add-on is there (DescribeAddon);
- access entries: start-run's and the watchdog's roles have theirs, in the product's Kubernetes
  group, and the cluster's authentication mode admits access entries (DescribeAccessEntry,
  DescribeCluster);
- alarms: every alarm of the stack exists, has its actions enabled and notifies the operations
  topic, whose policy lets CloudWatch publish (DescribeAlarms, GetTopicAttributes).

Not checked: the KMS key policy that lets CloudWatch encrypt for the topic, the RoleBinding of the
pipeline's service account to KFP's runner Role (used by the pods, not by start-run), the
network the pipeline's pods reach.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from core import contracts, kfp

# CloudFormation's StackStatus values (botocore cloudformation/2010-05-15 service-2.json) in
# which a stack stands as deployed; *_IN_PROGRESS ones are on their way.
SETTLED_STATUSES = (
    "CREATE_COMPLETE",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_COMPLETE",
)
# The SubscriptionArn SNS lists for a subscription not confirmed yet (SNS developer guide,
# "Confirm the subscription"); GetSubscriptionAttributes says the same as PendingConfirmation=true
# (botocore sns/2010-03-31 service-2.json).
PENDING_CONFIRMATION = "PendingConfirmation"
POD_IDENTITY_AGENT_ADDON = "eks-pod-identity-agent"
# DescribeCluster accessConfig.authenticationMode values that honour access entries (EKS API
# reference, AuthenticationMode: API, API_AND_CONFIG_MAP, CONFIG_MAP).
ACCESS_ENTRY_MODES = ("API", "API_AND_CONFIG_MAP")
DEPLOY = "npx aws-cdk@2 deploy"
APPLY_MANIFEST = "./dev kubernetes-manifest | kubectl apply -f -"

Clients = Callable[[str], Any]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    says: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.says}"


def verify(clients: Clients, stack_name: str = contracts.STACK_NAME) -> list[Check]:
    """Every check, in order; later checks are skipped (and fail) when the outputs are missing."""
    stack, outputs = _stack(clients, stack_name)
    if not stack.ok:
        rest = ("subscriptions", "kfp", "pod identity", "access entries", "alarms")
        return [
            stack,
            *(Check(name, False, "not checked (needs the stack's outputs)") for name in rest),
        ]
    return [
        stack,
        _subscriptions(clients, outputs),
        _kfp(clients, outputs),
        _pod_identity(clients, outputs),
        _access_entries(clients, outputs),
        _alarms(clients, outputs),
    ]


def describe(checks: list[Check]) -> str:
    failed = sum(not c.ok for c in checks)
    summary = "all checks passed" if not failed else f"{failed} of {len(checks)} checks failed"
    return "\n".join([*(c.line() for c in checks), summary])


# -- the checks ------------------------------------------------------------------------------


def _stack(clients: Clients, stack_name: str) -> tuple[Check, dict[str, str]]:
    cloudformation = clients("cloudformation")
    region = cloudformation.meta.region_name
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" not in _message(error):
            raise
        return Check(
            "stack",
            False,
            f"no stack {stack_name} in {region}: deploy it ({DEPLOY} -c eks_cluster_name=<cluster>)"
            " or name its region (--region) and stack (--stack)",
        ), {}
    stack = stacks[0]
    status = stack["StackStatus"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if status not in SETTLED_STATUSES:
        fix = "wait for it to finish" if status.endswith("_IN_PROGRESS") else "see its events"
        return Check(
            "stack",
            False,
            f"{stack_name} is {status}: {fix} (aws cloudformation describe-stack-events"
            f" --stack-name {stack_name})",
        ), outputs
    wanted = list(contracts.VERIFIED_OUTPUTS)
    if outputs.get(contracts.OUTPUT_KFP_MODE) == contracts.KFP_MODE_CLUSTER:
        wanted.append(contracts.OUTPUT_EKS_CLUSTER_NAME)
    missing = [k for k in wanted if not outputs.get(k)]
    if missing:
        return Check(
            "stack",
            False,
            f"{stack_name} has no output {', '.join(missing)}: deploy this version ({DEPLOY})",
        ), outputs
    return Check(
        "stack", True, f"{stack_name} {status} in {region}, {len(outputs)} outputs"
    ), outputs


def _subscriptions(clients: Clients, outputs: dict[str, str]) -> Check:
    sns = clients("sns")
    said, pending = [], []
    topics = (
        ("notifications", outputs[contracts.OUTPUT_NOTIFICATION_TOPIC_ARN], "notification_emails"),
        ("operations", outputs[contracts.OUTPUT_OPERATIONS_TOPIC_ARN], "operations_emails"),
    )
    for label, topic_arn, key in topics:
        subscriptions = [
            s
            for page in sns.get_paginator("list_subscriptions_by_topic").paginate(
                TopicArn=topic_arn
            )
            for s in page.get("Subscriptions", [])
        ]
        waiting = [s for s in subscriptions if s["SubscriptionArn"] == PENDING_CONFIRMATION]
        pending += [(label, topic_arn, s) for s in waiting]
        confirmed = len(subscriptions) - len(waiting)
        said.append(f"{label} {confirmed} confirmed" if subscriptions else f"{label} none ({key})")
    if not pending:
        return Check("subscriptions", True, ", ".join(said))
    label, topic_arn, first = pending[0]
    who = ", ".join(f"{s['Endpoint']} ({where})" for where, _, s in pending)
    return Check(
        "subscriptions",
        False,
        f"not confirmed: {who}: follow the link in the 'AWS Notification - Subscription"
        " Confirmation' email; after 48 hours SNS deletes it, then subscribe again: aws sns"
        f" subscribe --topic-arn {topic_arn} --protocol {first['Protocol']}"
        f" --notification-endpoint {first['Endpoint']}",
    )


def _kfp(clients: Clients, outputs: dict[str, str]) -> Check:
    function = outputs[contracts.OUTPUT_START_RUN_FUNCTION]
    try:
        reply = clients("lambda").invoke(
            FunctionName=function,
            InvocationType="RequestResponse",
            Payload=json.dumps(contracts.DRY_RUN_EVENT).encode(),
        )
    except ClientError as error:
        if _code(error) != "ResourceNotFoundException":
            raise
        return Check("kfp", False, f"no function {function}: deploy the stack again ({DEPLOY})")
    payload = reply["Payload"].read().decode("utf-8", "replace")
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if "FunctionError" in reply:
        detail = answer if isinstance(answer, dict) else {}
        error = f"{detail.get('errorType', 'Error')}: {detail.get('errorMessage', payload[:200])}"
        return Check("kfp", False, f"start-run failed on the dry run ({error}): see its log group")
    if not contracts.is_dry_run(answer):
        return Check(
            "kfp",
            False,
            f"{function} does not know the dry run (deployed before mnistflow verify):"
            f" deploy this version ({DEPLOY})",
        )
    where = (
        f"cluster {answer['eks_cluster_name']}, namespace {answer['kfp_namespace']}"
        if answer["kfp_mode"] == contracts.KFP_MODE_CLUSTER
        else answer["kfp_url"]
    )
    if not answer["ok"]:
        return Check(
            "kfp",
            False,
            f"start-run cannot use KFP ({where}): the {answer['failed_call']} failed:"
            f" {answer['error']}; {_kfp_fix(answer)}",
        )
    version = answer["kfp_version"]
    if _older(version, kfp.MIN_BACKEND_VERSION):
        return Check(
            "kfp",
            False,
            f"KFP {version} is older than {kfp.MIN_BACKEND_VERSION}, which the pipeline's exit"
            f" handler needs: upgrade Kubeflow Pipelines to {kfp.MIN_BACKEND_VERSION} or later",
        )
    if answer["kfp_mode"] == contracts.KFP_MODE_CLUSTER and answer["multi_user"]:
        return Check(
            "kfp",
            False,
            f"KFP {version} is multi-user, which cluster mode cannot reach (the API server drops"
            " the user's identity): deploy with -c kfp_mode=url -c kfp_url=... -c"
            " kfp_token_secret_name=... (docs/deploy.md, multi-user Kubeflow)",
        )
    experiment = answer["experiment_name"]
    found = (
        f"experiment {experiment} is {answer['experiment_id']}"
        if answer["experiment_id"]
        else f"experiment {experiment} not made yet (the first run makes it)"
    )
    return Check("kfp", True, f"start-run reached KFP {version} ({where}); {found}")


def _kfp_fix(answer: dict[str, Any]) -> str:
    status, error = answer.get("status"), answer["error"]
    namespace, port = answer["kfp_namespace"], answer["kfp_service_port"]
    if answer["kfp_mode"] == contracts.KFP_MODE_CLUSTER:
        cluster = answer["eks_cluster_name"]
        if error.startswith("eks:DescribeCluster"):
            return (
                f"check eks_cluster_name ({cluster}) and that the stack's region is the cluster's"
            )
        if status == 401:
            return (
                "the cluster refused start-run's token: see the access entries check below, and"
                f" the cluster's authentication mode (aws eks describe-cluster --name {cluster}"
                " --query cluster.accessConfig)"
            )
        if status == 403:
            return (
                f"the Role and RoleBinding for group {contracts.START_RUN_KUBERNETES_GROUP} are"
                f" missing in {namespace}: {APPLY_MANIFEST}"
            )
        if status == 404:
            return (
                f"no ml-pipeline service with port {port} in {namespace}: check kfp_namespace and"
                " kfp_service_port (tls for KFP's TLS overlay)"
            )
        if status is not None and status >= 500:
            return (
                "the API server could not reach the ml-pipeline pod: is it running, and do the"
                " nodes admit TCP 8888 from the cluster security group?"
            )
        return (
            "the cluster's endpoint is not reachable from the function: its public endpoint must"
            f" admit 0.0.0.0/0 (aws eks describe-cluster --name {cluster} --query"
            " cluster.resourcesVpcConfig.publicAccessCidrs), or set vpc_id and subnet_ids"
        )
    if error.startswith("secretsmanager"):
        return "check kfp_token_secret_name and that the secret holds the token"
    if status in (401, 403):
        return (
            f"the token was refused: mint one (kubectl -n {namespace} create token default-editor"
            " --audience pipelines.kubeflow.org --duration 8760h) and put it in the secret"
            " (aws secretsmanager put-secret-value --secret-id <kfp_token_secret_name>"
            " --secret-string <token>)"
        )
    if status == 404 or answer["kind"] == "unexpected":
        return "kfp_url must be KFP's API base URL (it serves /apis/v2beta1), not the UI"
    return f"check kfp_url ({answer['kfp_url']}) and the function's network (vpc_id, subnet_ids)"


def _pod_identity(clients: Clients, outputs: dict[str, str]) -> Check:
    cluster = outputs.get(contracts.OUTPUT_EKS_CLUSTER_NAME)
    if not cluster:
        return Check(
            "pod identity",
            True,
            "skipped: no eks_cluster_name, so the stack made no association (url mode); the"
            " pipeline's pods need AWS credentials another way",
        )
    eks = clients("eks")
    namespace = outputs[contracts.OUTPUT_KFP_NAMESPACE]
    account = outputs[contracts.OUTPUT_KFP_SERVICE_ACCOUNT]
    role = outputs[contracts.OUTPUT_PIPELINE_ROLE_ARN]
    found = eks.list_pod_identity_associations(
        clusterName=cluster, namespace=namespace, serviceAccount=account
    )["associations"]
    if not found:
        return Check(
            "pod identity",
            False,
            f"no Pod Identity association for {namespace}/{account} in cluster {cluster}: the"
            f" stack makes it; deploy again ({DEPLOY}) or check kfp_namespace and"
            " kfp_service_account",
        )
    association = eks.describe_pod_identity_association(
        clusterName=cluster, associationId=found[0]["associationId"]
    )["association"]
    if association["roleArn"] != role:
        return Check(
            "pod identity",
            False,
            f"{namespace}/{account} gets {association['roleArn']}, not the stack's {role}: delete"
            f" that association (aws eks delete-pod-identity-association --cluster-name {cluster}"
            f" --association-id {association['associationId']}) and deploy again ({DEPLOY})",
        )
    try:
        eks.describe_addon(clusterName=cluster, addonName=POD_IDENTITY_AGENT_ADDON)
    except ClientError as error:
        if _code(error) != "ResourceNotFoundException":
            raise
        return Check(
            "pod identity",
            False,
            f"cluster {cluster} has no Pod Identity agent, so no pod gets the role: aws eks"
            f" create-addon --cluster-name {cluster} --addon-name {POD_IDENTITY_AGENT_ADDON}",
        )
    return Check("pod identity", True, f"{namespace}/{account} gets {role}; the agent is there")


def _access_entries(clients: Clients, outputs: dict[str, str]) -> Check:
    cluster = outputs.get(contracts.OUTPUT_EKS_CLUSTER_NAME)
    if outputs[contracts.OUTPUT_KFP_MODE] != contracts.KFP_MODE_CLUSTER:
        return Check(
            "access entries", True, "skipped: url mode (start-run uses the token in the secret)"
        )
    eks = clients("eks")
    mode = (
        eks.describe_cluster(name=cluster)["cluster"]
        .get("accessConfig", {})
        .get("authenticationMode", "")
    )
    if mode and mode not in ACCESS_ENTRY_MODES:
        return Check(
            "access entries",
            False,
            f"cluster {cluster} authenticates with {mode} only, which ignores access entries: aws"
            f" eks update-cluster-config --name {cluster} --access-config"
            " authenticationMode=API_AND_CONFIG_MAP",
        )
    group = contracts.START_RUN_KUBERNETES_GROUP
    for function, output in (
        (contracts.START_RUN, contracts.OUTPUT_START_RUN_ROLE_ARN),
        (contracts.WATCHDOG, contracts.OUTPUT_WATCHDOG_ROLE_ARN),
    ):
        role = outputs[output]
        try:
            entry = eks.describe_access_entry(clusterName=cluster, principalArn=role)["accessEntry"]
        except ClientError as error:
            if _code(error) != "ResourceNotFoundException":
                raise
            return Check(
                "access entries",
                False,
                f"{function}'s role {role} has no access entry in cluster {cluster}: deploy"
                f" again ({DEPLOY})",
            )
        if group not in entry.get("kubernetesGroups", []):
            return Check(
                "access entries",
                False,
                f"{function}'s access entry is not in group {group}: deploy again ({DEPLOY})",
            )
    return Check(
        "access entries",
        True,
        f"start-run and watchdog in group {group} of {cluster}; the group's Role is checked by"
        " the kfp line",
    )


def _alarms(clients: Clients, outputs: dict[str, str]) -> Check:
    topic = outputs[contracts.OUTPUT_OPERATIONS_TOPIC_ARN]
    policy = json.loads(
        clients("sns").get_topic_attributes(TopicArn=topic)["Attributes"].get("Policy") or "{}"
    )
    if not any(_admits_cloudwatch(s) for s in _as_list(policy.get("Statement"))):
        return Check(
            "alarms",
            False,
            f"the operations topic's policy does not let {contracts.CLOUDWATCH_SERVICE} publish,"
            f" so no alarm notifies anyone: deploy again ({DEPLOY}); it restores the statement"
            " LetTheProductsAlarmsPublish",
        )
    names = [n for n in outputs[contracts.OUTPUT_ALARM_NAMES].split(",") if n]
    found = {
        alarm["AlarmName"]: alarm
        for page in clients("cloudwatch")
        .get_paginator("describe_alarms")
        .paginate(AlarmNames=names, AlarmTypes=["MetricAlarm"])
        for alarm in page.get("MetricAlarms", [])
    }
    missing = [n for n in names if n not in found]
    if missing:
        return Check("alarms", False, f"missing: {', '.join(missing)}: deploy again ({DEPLOY})")
    silent = [n for n in names if topic not in found[n].get("AlarmActions", [])]
    if silent:
        return Check(
            "alarms",
            False,
            f"{', '.join(silent)} do not notify the operations topic: deploy again ({DEPLOY})",
        )
    disabled = [n for n in names if not found[n].get("ActionsEnabled", True)]
    if disabled:
        return Check(
            "alarms",
            False,
            f"actions disabled on {', '.join(disabled)}: aws cloudwatch enable-alarm-actions"
            f" --alarm-names {' '.join(disabled)}",
        )
    return Check(
        "alarms", True, f"{len(names)} alarms notify the operations topic; CloudWatch may publish"
    )


# -- helpers -----------------------------------------------------------------------------------


def _admits_cloudwatch(statement: dict[str, Any]) -> bool:
    principal = statement.get("Principal")
    services = _as_list(principal.get("Service")) if isinstance(principal, dict) else []
    actions = [a.lower() for a in _as_list(statement.get("Action"))]
    return (
        statement.get("Effect") == "Allow"
        and contracts.CLOUDWATCH_SERVICE in services
        and any(a in ("sns:publish", "sns:*", "*") for a in actions)
    )


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


_RELEASE = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def _older(version: str, minimum: str) -> bool:
    """True when `version` (a release tag like 2.14.0 or v2.5.0) is older; unknown tags pass."""
    found, wanted = _RELEASE.search(version or ""), _RELEASE.search(minimum)
    if found is None or wanted is None:
        return False
    return tuple(map(int, found.groups())) < tuple(map(int, wanted.groups()))


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def _message(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Message", str(error))
