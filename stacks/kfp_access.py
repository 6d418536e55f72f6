"""How the start-run Lambda reaches the KFP API: the cluster API (access entry) or a direct URL.

Cluster mode: the Lambda's role gets an EKS access entry with `AmazonEKSEditPolicy` scoped to
the KFP namespace. The Lambda calls KFP through the API server's service proxy
(`services/ml-pipeline:http/proxy/...`), which Kubernetes authorizes as `create`/`get` on the
`services/proxy` subresource. Of the AWS-managed access policies only Edit and Admin (and
ClusterAdmin) grant `services/proxy`; View does not. Edit is the narrowest of them, and the
namespace scope keeps it out of every other namespace. A tighter grant needs a custom RBAC Role
bound to an access-entry group, which CloudFormation cannot create inside the cluster.

URL mode: the Lambda reads a bearer token from Secrets Manager; no cluster permission at all.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from core.contracts import KFP_MODE_CLUSTER
from core.settings import Settings
from stacks.names import (
    EKS_ACCESS_ENTRY_TYPE,
    EKS_ACCESS_POLICY_NAME,
    EKS_ACCESS_SCOPE_NAMESPACE,
)

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
        self.access_entry: eks.CfnAccessEntry | None = None

    def grant_start_run(self, role: iam.IRole) -> None:
        """Let `role` reach the KFP API in the configured mode, and nothing more."""
        if self._settings.kfp_mode == KFP_MODE_CLUSTER:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    sid="ReadClusterEndpoint",
                    actions=["eks:DescribeCluster"],
                    resources=[self.cluster_arn],
                )
            )
            self.access_entry = eks.CfnAccessEntry(
                self,
                "StartRunAccessEntry",
                cluster_name=self._settings.eks_cluster_name,
                principal_arn=role.role_arn,
                type=EKS_ACCESS_ENTRY_TYPE,
                access_policies=[
                    eks.CfnAccessEntry.AccessPolicyProperty(
                        policy_arn=Stack.of(self).format_arn(
                            service="eks",
                            region="",
                            account="aws",
                            resource="cluster-access-policy",
                            resource_name=EKS_ACCESS_POLICY_NAME,
                        ),
                        access_scope=eks.CfnAccessEntry.AccessScopeProperty(
                            type=EKS_ACCESS_SCOPE_NAMESPACE,
                            namespaces=[self._settings.kfp_namespace],
                        ),
                    )
                ],
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
