"""How the start-run Lambda reaches the KFP API: the cluster API (access entry) or a direct URL.

Cluster mode: the Lambda's role gets an EKS access entry (type STANDARD) that puts it in one
Kubernetes group, and no AWS-managed access policy: AmazonEKSEditPolicy, the narrowest that
allows `services/proxy`, also allows secrets, `pods/exec` and impersonating service accounts.
What the group may do is a namespaced Role shipped with the product (`mnistflow
kubernetes-manifest`, docs/deploy.md): `get` and `create` on `services/proxy` of ml-pipeline only,
which is how Kubernetes authorizes GET and POST through the API server's service proxy
(k8s.io/apiserver requestinfo.go: GET -> get, POST -> create). EKS does not check that the group
is bound to anything ("creating-access-entries": "Amazon EKS doesn't confirm..."): until the
manifest is applied, every call is refused, and the RUN_FAILED email says what to check.

URL mode: the Lambda reads a bearer token from Secrets Manager; no cluster permission at all.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from core.contracts import KFP_MODE_CLUSTER, START_RUN_KUBERNETES_GROUP
from core.settings import Settings
from stacks.names import EKS_ACCESS_ENTRY_TYPE

SECRET_ARN_RANDOM_SUFFIX = "-??????"  # noqa: S105 (not a password) - Secrets Manager appends six random characters


class KfpAccess(Construct):
    """The KFP connection settings for the Lambda, and the permissions that go with them."""

    def __init__(self, scope: Construct, construct_id: str, *, settings: Settings) -> None:
        super().__init__(scope, construct_id)
        self._settings = settings
        stack = Stack.of(self)
        self.cluster_arn = (
            stack.format_arn(
                service="eks", resource="cluster", resource_name=settings.eks_cluster_name
            )
            if settings.eks_cluster_name
            else ""
        )
        self.token_secret_arn, self._token_secret_resource = _token_secret(stack, settings)
        self.access_entries: list[eks.CfnAccessEntry] = []

    def grant_kfp_caller(self, role: iam.IRole, entry_id: str) -> None:
        """Let `role` reach the KFP API in the configured mode, and nothing more (start-run and
        the watchdog: each its own access entry, both in the one Kubernetes group)."""
        if self._settings.kfp_mode == KFP_MODE_CLUSTER:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="ReadClusterEndpoint",
                    actions=["eks:DescribeCluster"],
                    resources=[self.cluster_arn],
                )
            )
            self.access_entries.append(
                eks.CfnAccessEntry(
                    self,
                    entry_id,
                    cluster_name=self._settings.eks_cluster_name,
                    principal_arn=role.role_arn,
                    type=EKS_ACCESS_ENTRY_TYPE,
                    kubernetes_groups=[START_RUN_KUBERNETES_GROUP],
                )
            )
        else:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="ReadKfpToken",
                    actions=["secretsmanager:GetSecretValue"],
                    resources=[self._token_secret_resource],
                )
            )


def _token_secret(stack: Stack, settings: Settings) -> tuple[str, str]:
    """(value for KFP_TOKEN_SECRET_ARN, IAM resource) for the token secret; empty in cluster mode.

    Given a name, the ARN is the partial ARN (Secrets Manager accepts it as a SecretId) and the
    IAM resource adds the random suffix's six characters.
    """
    secret = settings.kfp_token_secret_name
    if settings.kfp_mode == KFP_MODE_CLUSTER or not secret:
        return "", ""
    if secret.startswith("arn:"):
        return secret, secret
    partial_arn = stack.format_arn(
        service="secretsmanager",
        resource="secret",
        resource_name=secret,
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    return partial_arn, f"{partial_arn}{SECRET_ARN_RANDOM_SUFFIX}"
