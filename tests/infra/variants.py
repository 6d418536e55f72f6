"""The context variants the infrastructure tests synthesize."""

from __future__ import annotations

EMAILS = ("ops@example.com", "data-team@example.org")
CLUSTER = "mnist-cluster"
# What a deployer sets on top of cdk.json, which ships a placeholder cluster name.
CLUSTER_CONTEXT = {"eks_cluster_name": CLUSTER}
TOKEN_SECRET_NAME = "mnistflow/kfp-token"
URL_MODE_CONTEXT = {
    "kfp_mode": "url",
    "kfp_url": "https://kfp.internal.example.com",
    "kfp_token_secret_name": TOKEN_SECRET_NAME,
    "vpc_id": "vpc-0123456789abcdef0",
    "subnet_ids": ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"],
    "eks_cluster_name": "",
    "notification_emails": [],
}
# A step image built and pushed by the deployer, pinned by digest.
PREBUILT_STEP_IMAGE = "registry.example.com:5000/ml/mnist-steps@sha256:" + "ab" * 32
