"""The CDK context this app reads (cdk.json "context" or `-c key=value`), parsed and validated.

Every error names the context key it is about, so a bad `cdk.json` fails at synth, not at deploy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runflow import contracts
from runflow.contracts import PRODUCT_PREFIX

KFP_MODE_CLUSTER, KFP_MODE_URL, KFP_MODES = (
    contracts.KFP_MODE_CLUSTER,
    contracts.KFP_MODE_URL,
    contracts.KFP_MODES,
)

SAGEMAKER_NAME_MAX_CHARS = 63
MAX_INSTANCE_COUNT = 10  # far above what MNIST needs; guards against a typo like 100

_EMAIL = re.compile(r"^[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+$")
_CLUSTER_NAME = contracts.EKS_CLUSTER_NAME_PATTERN
_K8S_LABEL = contracts.K8S_NAME_PATTERN
_K8S_SUBDOMAIN = re.compile(r"^[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?$")
_INSTANCE_TYPE = contracts.INSTANCE_TYPE_PATTERN
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_SECRET_NAME = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")
_SECRET_ARN = contracts.SECRET_ARN_PATTERN
_URL = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_VPC_ID = re.compile(r"^vpc-[0-9a-f]{8,17}$")
_SUBNET_ID = re.compile(r"^subnet-[0-9a-f]{8,17}$")
_EXPERIMENT_NAME_MAX_CHARS = 128


class SettingsError(ValueError):
    """A context value is missing or malformed; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"CDK context '{key}': {problem}")
        self.key = key


@dataclass(frozen=True)
class Settings:
    """Everything the stack needs from the context, already validated."""

    notification_emails: tuple[str, ...] = ()
    # Who gets the operations alarms; when the context does not name them, the
    # notification_emails addresses do.
    operations_emails: tuple[str, ...] = ()
    kfp_mode: str = KFP_MODE_CLUSTER
    eks_cluster_name: str = ""
    kfp_namespace: str = "kubeflow"
    kfp_service_account: str = "pipeline-runner"
    kfp_url: str = ""
    kfp_token_secret_name: str = ""
    vpc_id: str = ""
    subnet_ids: tuple[str, ...] = ()
    kfp_ui_url: str = ""
    kfp_experiment_name: str = PRODUCT_PREFIX
    train_instance_type: str = "ml.m5.large"
    train_instance_count: int = 1
    transform_instance_type: str = "ml.m5.large"
    transform_instance_count: int = 1
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_instance_count: int = 1
    endpoint_name: str = ""
    runs_retention_days: int = 30
    access_logs_retention_days: int = 90
    log_retention_days: int = 30

    @property
    def uses_cluster_api(self) -> bool:
        return self.kfp_mode == KFP_MODE_CLUSTER

    @property
    def in_vpc(self) -> bool:
        return bool(self.vpc_id)

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Settings:
        """Parse the app's context; keys not given take the defaults above."""
        defaults = cls()

        def text(key: str) -> str:
            value = context.get(key, getattr(defaults, key))
            if value is None:
                return ""
            if not isinstance(value, str):
                raise SettingsError(key, f"must be a string (got {value!r})")
            return value.strip()

        def count(key: str, minimum: int, maximum: int | None = None) -> int:
            value = context.get(key, getattr(defaults, key))
            try:
                number = int(str(value).strip())
            except ValueError:
                raise SettingsError(key, f"must be a whole number (got {value!r})") from None
            if number < minimum or (maximum is not None and number > maximum):
                upper = f" and at most {maximum}" if maximum is not None else ""
                raise SettingsError(key, f"must be at least {minimum}{upper} (got {number})")
            return number

        kfp_mode = text("kfp_mode") or KFP_MODE_CLUSTER
        if kfp_mode not in KFP_MODES:
            raise SettingsError(
                "kfp_mode", f"must be one of {', '.join(KFP_MODES)} (got {kfp_mode!r})"
            )

        notification_emails = _emails("notification_emails", context.get("notification_emails"))
        operations_emails = context.get("operations_emails")
        settings = cls(
            notification_emails=notification_emails,
            operations_emails=(
                notification_emails
                if operations_emails is None
                else _emails("operations_emails", operations_emails)
            ),
            kfp_mode=kfp_mode,
            eks_cluster_name=text("eks_cluster_name"),
            kfp_namespace=text("kfp_namespace"),
            kfp_service_account=text("kfp_service_account"),
            kfp_url=text("kfp_url").rstrip("/"),
            kfp_token_secret_name=text("kfp_token_secret_name"),
            vpc_id=text("vpc_id"),
            subnet_ids=_strings("subnet_ids", context.get("subnet_ids", ())),
            kfp_ui_url=text("kfp_ui_url").rstrip("/"),
            kfp_experiment_name=text("kfp_experiment_name"),
            train_instance_type=text("train_instance_type"),
            train_instance_count=count("train_instance_count", 1, MAX_INSTANCE_COUNT),
            transform_instance_type=text("transform_instance_type"),
            transform_instance_count=count("transform_instance_count", 1, MAX_INSTANCE_COUNT),
            endpoint_instance_type=text("endpoint_instance_type"),
            endpoint_instance_count=count("endpoint_instance_count", 1, MAX_INSTANCE_COUNT),
            endpoint_name=text("endpoint_name"),
            runs_retention_days=count("runs_retention_days", 1),
            access_logs_retention_days=count("access_logs_retention_days", 1),
            log_retention_days=count("log_retention_days", 1),
        )
        settings._validate()
        return settings

    def _validate(self) -> None:
        _check_kfp_connection(self)
        if self.eks_cluster_name and not _CLUSTER_NAME.match(self.eks_cluster_name):
            raise SettingsError(
                "eks_cluster_name", f"not a valid EKS cluster name ({self.eks_cluster_name!r})"
            )
        if not _K8S_LABEL.match(self.kfp_namespace):
            raise SettingsError(
                "kfp_namespace", f"not a valid Kubernetes namespace ({self.kfp_namespace!r})"
            )
        if not _K8S_SUBDOMAIN.match(self.kfp_service_account):
            raise SettingsError(
                "kfp_service_account",
                f"not a valid service account name ({self.kfp_service_account!r})",
            )
        if self.kfp_ui_url and not _URL.match(self.kfp_ui_url):
            raise SettingsError("kfp_ui_url", f"must be an http(s) URL (got {self.kfp_ui_url!r})")
        if (
            not self.kfp_experiment_name
            or len(self.kfp_experiment_name) > _EXPERIMENT_NAME_MAX_CHARS
        ):
            raise SettingsError(
                "kfp_experiment_name", f"must be 1 to {_EXPERIMENT_NAME_MAX_CHARS} characters"
            )
        for key in ("train_instance_type", "transform_instance_type", "endpoint_instance_type"):
            if not _INSTANCE_TYPE.match(getattr(self, key)):
                raise SettingsError(key, f"must look like ml.m5.large (got {getattr(self, key)!r})")
        _check_endpoint_name(self.endpoint_name)
        _check_vpc(self)


def _check_kfp_connection(settings: Settings) -> None:
    if settings.uses_cluster_api:
        if not settings.eks_cluster_name:
            raise SettingsError("eks_cluster_name", "required when kfp_mode is 'cluster'")
        return
    if not settings.kfp_url:
        raise SettingsError("kfp_url", "required when kfp_mode is 'url'")
    if not _URL.match(settings.kfp_url):
        raise SettingsError("kfp_url", f"must be an http(s) URL (got {settings.kfp_url!r})")
    secret = settings.kfp_token_secret_name
    if not secret:
        raise SettingsError("kfp_token_secret_name", "required when kfp_mode is 'url'")
    if not (
        _SECRET_ARN.match(secret) or (_SECRET_NAME.match(secret) and not secret.startswith("arn:"))
    ):
        raise SettingsError(
            "kfp_token_secret_name", f"not a Secrets Manager name or ARN ({secret!r})"
        )


def _check_endpoint_name(name: str) -> None:
    if not name:
        return
    prefix = f"{PRODUCT_PREFIX}-"
    if not name.startswith(prefix):
        raise SettingsError("endpoint_name", f"must start with {prefix!r} (got {name!r})")
    if len(name) > SAGEMAKER_NAME_MAX_CHARS or not _SAGEMAKER_NAME.match(name):
        raise SettingsError(
            "endpoint_name",
            f"at most {SAGEMAKER_NAME_MAX_CHARS} letters, digits and hyphens (got {name!r})",
        )


def _check_vpc(settings: Settings) -> None:
    if bool(settings.vpc_id) != bool(settings.subnet_ids):
        key = "subnet_ids" if settings.vpc_id else "vpc_id"
        raise SettingsError(key, "vpc_id and subnet_ids go together: give both or neither")
    if settings.vpc_id and not _VPC_ID.match(settings.vpc_id):
        raise SettingsError("vpc_id", f"not a VPC id ({settings.vpc_id!r})")
    for subnet in settings.subnet_ids:
        if not _SUBNET_ID.match(subnet):
            raise SettingsError("subnet_ids", f"not a subnet id ({subnet!r})")


def _strings(key: str, value: Any) -> tuple[str, ...]:
    """A list from cdk.json, or a JSON list / comma-separated string from `-c key=...`."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise SettingsError(key, f"not a JSON list ({text!r})") from None
        else:
            value = text.split(",")
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise SettingsError(key, f"must be a list of strings (got {value!r})")
    return tuple(item.strip() for item in value if item.strip())


def _emails(key: str, value: Any) -> tuple[str, ...]:
    emails = _strings(key, value)
    for email in emails:
        if not _EMAIL.match(email):
            raise SettingsError(key, f"not an email address ({email!r})")
    if len(set(emails)) != len(emails):
        raise SettingsError(key, "lists the same address twice")
    return emails


CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The "context" object of cdk.json (empty when there is none)."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()).get("context", {}))
