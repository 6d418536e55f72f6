"""One schema for the stack's settings and the run's parameters: each declared once, here.

A `Parameter` has a key, a kind (its type, bounds and checks), a default and a doc line, and
says where it goes:

- `source="context"`: a CDK context key (`cdk.json` or `-c key=value`) a deployer may set;
- `source="stack"`: a value the stack fills in (a table name, a role ARN, ...);
- `source="lambda"`: a value the Lambda runtime itself sets (the region);
- `source="run"`: a value start-run computes for each run (the dataset, the run key);
- `functions`: the Lambda functions whose environment carries it, as `KEY.upper()`;
- `pipeline=True`: a runtime parameter of the KFP pipeline, under its key.

From this table come: the context's validation (`read_context`), each function's environment
(`environment`) and its validated configuration (`read_environment`), the pipeline's parameters
(`pipeline_parameters`, from which pipeline/mnist_pipeline.py makes its signature) and the
runtime parameters start-run submits (`run_parameters`). The same checks run on every path.
Standard library only.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import contracts, images, kfp
from core.contracts import KFP_MODE_CLUSTER, KFP_MODE_URL, KFP_MODES, START_RUN

ALL_FUNCTIONS = frozenset(contracts.FUNCTIONS)
START_RUN_ONLY = frozenset({START_RUN})
KFP_CALLERS = frozenset({START_RUN, contracts.WATCHDOG})  # both reach KFP's API
WATCHDOG_ONLY = frozenset({contracts.WATCHDOG})
REQUIRED: Any = object()  # no default: the stack, the runtime or start-run always supplies it


class SettingError(ValueError):
    """A setting is missing or malformed; the message names it the way its reader knows it."""

    def __init__(self, key: str, problem: str, *, where: str = "context") -> None:
        label = f"CDK context '{key}'" if where == "context" else f"environment variable {where}"
        super().__init__(f"{label}: {problem}")
        self.key = key
        self.problem = problem


# -- kinds: how a value is read, checked, written to an environment, typed in the pipeline ----


# cdk.json ships placeholders for what a deployer must fill in; they all start with this.
PLACEHOLDER_PREFIX = "REPLACE-WITH-"


@dataclass(frozen=True)
class Text:
    pattern: re.Pattern[str] | None = None
    hint: str = ""  # what a good value looks like, for the error
    max_chars: int | None = None
    choices: tuple[str, ...] = ()
    python_type: type = str

    def parse(self, raw: Any) -> str:
        if raw is None:
            return ""
        if not isinstance(raw, str):
            raise ValueError(f"must be a string (got {raw!r})")
        value = raw.strip()
        if not value:
            return ""
        if value.startswith(PLACEHOLDER_PREFIX):
            raise ValueError(
                f"is still cdk.json's placeholder {value!r}: set it in cdk.json or with"
                " `-c <key>=<value>`"
            )
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)} (got {value!r})")
        if self.max_chars is not None and len(value) > self.max_chars:
            raise ValueError(f"at most {self.max_chars} characters (got {len(value)})")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            expected = f" (expected {self.hint})" if self.hint else ""
            raise ValueError(f"malformed value {value!r}{expected}")
        return value

    def to_env(self, value: Any) -> str:
        return value  # may be a CDK token: passed through unchanged


@dataclass(frozen=True)
class Whole:
    minimum: int
    maximum: int
    optional: bool = False  # None (null, empty, absent) means "not set"
    python_type: type = int
    step: int = 1  # the value is minimum + a multiple of step

    def parse(self, raw: Any) -> int | None:
        if self.optional and (raw is None or (isinstance(raw, str) and not raw.strip())):
            return None
        if isinstance(raw, bool):
            raise ValueError(f"must be a whole number (got {raw!r})")
        try:
            number = int(str(raw).strip())
        except ValueError:
            raise ValueError(f"must be a whole number (got {raw!r})") from None
        if not self.minimum <= number <= self.maximum:
            raise ValueError(f"must be {self.minimum} to {self.maximum} (got {number})")
        if (number - self.minimum) % self.step:
            raise ValueError(
                f"must be {self.minimum} to {self.maximum} in steps of {self.step} (got {number})"
            )
        return number

    def to_env(self, value: Any) -> str:
        return "" if value is None else str(value)


@dataclass(frozen=True)
class TextList:
    """A list from cdk.json, or a JSON list or comma-separated text from `-c key=...`."""

    item: Text
    unique: bool = False
    nullable: bool = False  # None stays None (a default decided elsewhere)
    python_type: type = list

    def parse(self, raw: Any) -> tuple[str, ...] | None:
        if raw is None and self.nullable:
            return None
        if raw is None or raw == "":
            return ()
        if isinstance(raw, str):
            text = raw.strip()
            if text.startswith("["):
                try:
                    raw = json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError(f"not a JSON list ({text!r})") from None
            else:
                raw = text.split(",")
        if not isinstance(raw, list | tuple) or not all(isinstance(i, str) for i in raw):
            raise ValueError(f"must be a list of strings (got {raw!r})")
        items = tuple(self.item.parse(i) for i in raw if i.strip())
        if self.unique and len(set(items)) != len(items):
            raise ValueError("lists the same value twice")
        return items

    def to_env(self, value: Any) -> str:
        return ",".join(value or ())


@dataclass(frozen=True)
class Url(Text):
    """An http(s) URL, kept without a trailing slash (paths are appended to it)."""

    def parse(self, raw: Any) -> str:
        return super().parse(raw).rstrip("/")


@dataclass(frozen=True)
class Fraction:
    """A number from 0 to 1 (a share, an accuracy)."""

    python_type: type = float

    def parse(self, raw: Any) -> float:
        if isinstance(raw, bool):
            raise ValueError(f"must be a number from 0 to 1 (got {raw!r})")
        try:
            number = float(str(raw).strip())
        except ValueError:
            raise ValueError(f"must be a number from 0 to 1 (got {raw!r})") from None
        if not 0.0 <= number <= 1.0:
            raise ValueError(f"must be from 0 to 1 (got {number})")
        return number

    def to_env(self, value: Any) -> str:
        return repr(float(value)) if isinstance(value, int | float) else value


@dataclass(frozen=True)
class Flag:
    """On or off: a JSON boolean from cdk.json, or true/false from `-c key=...` or the
    environment."""

    python_type: type = bool

    def parse(self, raw: Any) -> bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower() if isinstance(raw, str) else None
        if text in ("true", "false"):
            return text == "true"
        raise ValueError(f"must be true or false (got {raw!r})")

    def to_env(self, value: Any) -> str:
        return ("true" if value else "false") if isinstance(value, bool) else value


Kind = Text | Url | Whole | TextList | Fraction | Flag


# -- checks shared by every reader ------------------------------------------------------------

REGION = Text(re.compile(r"[a-z]{2}(-[a-z]+)+-\d"), "an AWS region such as eu-west-1")
INSTANCE_TYPE = Text(
    re.compile(r"ml\.[a-z0-9]+\.[a-z0-9]+"), "ml.<family>.<size>, e.g. ml.m5.large"
)
INSTANCE_COUNT = Whole(1, 10)  # far above what MNIST needs; guards against a typo like 100
# botocore's sagemaker model, shape EndpointName: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}, max 63. The
# product's IAM grants cover `mnist-*` names only, so a shared endpoint must carry the prefix.
ENDPOINT_NAME = Text(
    re.compile(rf"{contracts.SAGEMAKER_NAME_PREFIX}[a-zA-Z0-9](-*[a-zA-Z0-9]){{0,56}}"),
    f"empty, or a SageMaker endpoint name of at most 63 letters, digits and hyphens starting"
    f" with {contracts.SAGEMAKER_NAME_PREFIX!r}",
)
# botocore's eks model, shape ClusterName: ^[0-9A-Za-z][A-Za-z0-9\-_]*, 1 to 100 characters.
EKS_CLUSTER_NAME = Text(re.compile(r"[0-9A-Za-z][A-Za-z0-9\-_]{0,99}"), "an EKS cluster name")
# Kubernetes: namespaces are DNS-1123 labels, service accounts DNS-1123 subdomains.
K8S_LABEL = Text(re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"), "a Kubernetes namespace")
K8S_SUBDOMAIN = Text(
    re.compile(r"[a-z0-9]([-.a-z0-9]{0,251}[a-z0-9])?"), "a Kubernetes service account name"
)
# Kubernetes port names (IANA_SVC_NAME): lower-case letters, digits and hyphens, 15 at most.
K8S_PORT_NAME = Text(re.compile(r"[a-z0-9]([-a-z0-9]{0,13}[a-z0-9])?"), "a Kubernetes port name")
HTTP_URL = Url(re.compile(r"https?://[^\s/]+(/\S*)?"), "an http(s) URL")


@dataclass(frozen=True)
class ImageRef(Text):
    """A container image reference pinned to a tag other than `latest` or to a digest, so the
    steps of a run never change under it (the grammar of github.com/distribution/reference,
    reference.go: [registry[:port]/]path[:tag][@sha256:digest], a tag of at most 128 word
    characters, dots and hyphens)."""

    pattern: re.Pattern[str] | None = re.compile(
        r"(?:[a-zA-Z0-9.-]+(?::\d+)?/)?"
        r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
        r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
    )
    hint: str = "an image reference, [registry/]repository:tag or ...@sha256:<digest>"

    def parse(self, raw: Any) -> str:
        value = super().parse(raw)
        if value:
            match = self.pattern.fullmatch(value)
            if not match["digest"] and match["tag"] in (None, "latest"):
                raise ValueError(
                    f"{value!r} is not pinned: give a tag other than latest, or @sha256:<digest>"
                )
        return value


STEP_IMAGE = ImageRef()
SECRET_ARN_PATTERN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+"
)
SECRET_NAME_OR_ARN = Text(
    re.compile(rf"(?!arn:)[A-Za-z0-9/_+=.@-]{{1,512}}|{SECRET_ARN_PATTERN.pattern}"),
    "a Secrets Manager secret name or ARN",
)
EMAIL = Text(re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+"), "an email address")
DAYS = Whole(1, 3653)


def _arn(pattern: str, hint: str) -> Text:
    return Text(re.compile(pattern), hint)


# -- the schema --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Parameter:
    key: str
    kind: Kind
    doc: str
    default: Any = REQUIRED
    source: str = "context"  # context | stack | lambda | run
    functions: frozenset[str] = field(default_factory=frozenset)
    pipeline: bool = False
    env: str = ""  # the environment variable, when KEY.upper() will not do
    per_upload: bool = False  # an upload's S3 metadata may set it for its run (bounds kept)

    @property
    def env_name(self) -> str:
        return self.env or self.key.upper()

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def _context(key: str, kind: Kind, default: Any, doc: str, **where: Any) -> Parameter:
    return Parameter(key, kind, doc, default, "context", **where)


def _stack(key: str, kind: Kind, doc: str, default: Any = REQUIRED, **where: Any) -> Parameter:
    return Parameter(key, kind, doc, default, "stack", **where)


PARAMETERS: tuple[Parameter, ...] = (
    # Who hears about runs.
    _context(
        "notification_emails",
        TextList(EMAIL, unique=True),
        (),
        "one email subscription per address on the run notification topic; none when empty",
    ),
    _context(
        "operations_emails",
        TextList(EMAIL, unique=True, nullable=True),
        None,
        "subscriptions on the operations topic (alarms); null: the notification_emails"
        " addresses; an explicit empty value subscribes nobody",
    ),
    # How start-run reaches KFP.
    _context(
        "kfp_mode",
        Text(choices=KFP_MODES),
        KFP_MODE_CLUSTER,
        "cluster (EKS API + service proxy) or url (direct URL + bearer token)",
        functions=KFP_CALLERS,
    ),
    _context(
        "eks_cluster_name",
        EKS_CLUSTER_NAME,
        "",
        "the EKS cluster running KFP (required in cluster mode; in url mode, when set, the Pod"
        " Identity association is created)",
        functions=KFP_CALLERS,
    ),
    _context(
        "kfp_namespace",
        K8S_LABEL,
        "kubeflow",
        "namespace of KFP; scope of the access entry and of Pod Identity",
        functions=KFP_CALLERS,
    ),
    _context(
        "kfp_service_port",
        K8S_PORT_NAME,
        kfp.DEFAULT_HTTP_PORT_NAME,
        "cluster mode: the name of ml-pipeline's API port; `http`, or `tls` for KFP's TLS"
        " overlay (then reached over HTTPS)",
        functions=KFP_CALLERS,
    ),
    _context(
        "kfp_service_account",
        K8S_SUBDOMAIN,
        f"{contracts.PRODUCT_PREFIX}flow-pipeline",
        "service account the pipeline's pods run as (start-run names it on each run); standalone"
        " KFP: the product's own, bound to KFP's runner Role; multi-user: the profile's"
        " default-editor",
        functions=START_RUN_ONLY,
    ),
    _context(
        "kfp_url",
        HTTP_URL,
        "",
        "url mode: KFP API base URL, https://...",
        functions=KFP_CALLERS,
    ),
    _context(
        "kfp_token_secret_name",
        SECRET_NAME_OR_ARN,
        "",
        "url mode: Secrets Manager secret (name or ARN) holding the bearer token",
    ),
    _context(
        "vpc_id",
        Text(re.compile(r"vpc-[0-9a-f]{8,17}"), "a VPC id"),
        "",
        "put start-run in this VPC (with subnet_ids)",
    ),
    _context(
        "subnet_ids",
        TextList(Text(re.compile(r"subnet-[0-9a-f]{8,17}"), "a subnet id")),
        (),
        "the subnets for start-run (with vpc_id)",
    ),
    _context(
        "kfp_ui_url",
        HTTP_URL,
        "",
        "KFP UI base URL, for run links in the record and emails",
        functions=ALL_FUNCTIONS,
    ),
    _context(
        "kfp_experiment_name",
        Text(max_chars=128),
        contracts.PRODUCT_PREFIX,
        "KFP experiment the runs go into",
        functions=KFP_CALLERS,
    ),
    # What every run trains and deploys with (the pipeline's parameters).
    _context(
        "allowed_instance_types",
        TextList(INSTANCE_TYPE, unique=True),
        (),
        "the instance types a run may use (an IAM condition on SageMaker's create calls);"
        " empty: train_instance_type, transform_instance_type and endpoint_instance_type",
        functions=START_RUN_ONLY,
    ),
    _context(
        "step_image",
        STEP_IMAGE,
        "",
        "empty: pipeline/image/Dockerfile is built for linux/amd64 into the account's ECR at"
        " deploy (needs Docker or Finch); else this prebuilt image, pinned by tag or digest",
    ),
    _context(
        "training_image",
        Text(images.ECR_IMAGE, "an ECR image, <account>.dkr.ecr.<region>.<domain>/<repo>:<tag>"),
        "",
        "empty: SageMaker's built-in k-means image for the region; else this image",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "train_instance_type",
        INSTANCE_TYPE,
        "ml.m5.large",
        "SageMaker training instance type",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "train_instance_count",
        INSTANCE_COUNT,
        1,
        "SageMaker training instance count",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "transform_instance_type",
        INSTANCE_TYPE,
        "ml.m5.large",
        "batch transform instance type",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "transform_instance_count",
        INSTANCE_COUNT,
        1,
        "batch transform instance count",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "endpoint_instance_type",
        INSTANCE_TYPE,
        "ml.m5.large",
        "hosting instance type",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "endpoint_instance_count",
        INSTANCE_COUNT,
        1,
        "hosting instance count",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "endpoint_name",
        ENDPOINT_NAME,
        contracts.STABLE_ENDPOINT_NAME,
        "the stack's one stable endpoint (a name starting mnist-): each run that passes the"
        " quality gate updates it in place, with deployment guardrails",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "per_run_endpoints",
        Flag(),
        False,
        "true: each run gets its own <run key>-endpoint instead of updating endpoint_name",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "endpoint_type",
        Text(choices=contracts.ENDPOINT_TYPES),
        contracts.ENDPOINT_TYPE_INSTANCE,
        "instance: the endpoint runs on endpoint_instance_type instances (autoscaled); serverless:"
        " SageMaker Serverless Inference with serverless_memory_mb and serverless_max_concurrency,"
        " billed per use. A change of mode re-creates the endpoint (docs/deploy.md, Costs)",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    # Defaults: the SageMaker Python SDK's ServerlessInferenceConfig (aws/sagemaker-python-sdk,
    # src/sagemaker/serverless/serverless_inference_config.py: memory_size_in_mb=2048,
    # max_concurrency=5); a k-means model of MNIST is well under 1 MB.
    _context(
        "serverless_memory_mb",
        Whole(
            contracts.SERVERLESS_MEMORY_MB[0],
            contracts.SERVERLESS_MEMORY_MB[-1],
            step=contracts.SERVERLESS_MEMORY_MB[1] - contracts.SERVERLESS_MEMORY_MB[0],
        ),
        2048,
        "with endpoint_type serverless: ServerlessConfig.MemorySizeInMB",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "serverless_max_concurrency",
        Whole(*contracts.SERVERLESS_MAX_CONCURRENCY),
        5,
        "with endpoint_type serverless: ServerlessConfig.MaxConcurrency, invocations served at"
        " once (more are throttled)",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "deploy_bake_minutes",
        # BlueGreenUpdatePolicy.TerminationWaitInSeconds: 0 to 3600 (botocore's sagemaker model).
        Whole(0, 60),
        5,
        "the guardrails' baking period: how long the new model serves, watched by the endpoint's"
        " error and latency alarms, before the old fleet is let go (an alarm rolls it back)",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "endpoint_min_instances",
        INSTANCE_COUNT,
        1,
        "autoscaling of the stable endpoint: fewest instances",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "endpoint_max_instances",
        INSTANCE_COUNT,
        2,
        "autoscaling of the stable endpoint: most instances (at least endpoint_min_instances)",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "endpoint_target_invocations",
        # The SageMaker developer guide's typical target ("Define a scaling policy"): 70.
        Whole(1, 100_000),
        70,
        "autoscaling target: SageMakerVariantInvocationsPerInstance, invocations per instance"
        " per minute",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "kept_endpoint_configs",
        Whole(1, 20),
        2,
        "endpoint configs (with their models and promoted artifacts) kept for rollback after"
        " an update of the stable endpoint, the serving one included; older ones are deleted",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "endpoint_ttl_hours",
        Whole(1, 30 * 24),
        24,
        "per-run endpoints are deleted this long after they were created (by the watchdog,"
        " and by mnistflow cleanup)",
        functions=WATCHDOG_ONLY,
    ),
    _context(
        "k",
        Whole(2, 256),
        # 32, not the seed's 10: on the sample, 0.74 accurate against 0.57 on average, for
        # under 0.2 s more training (benchmarks/RESULTS.md, "Local SageMaker's k-means").
        32,
        "k-means clusters (more clusters than digits: each is named after its majority digit)",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
        # Lambda environment variable names have two characters at least (CloudFormation's
        # AWS::Lambda::Function schema: [a-zA-Z]([a-zA-Z0-9_])+).
        env="KMEANS_K",
    ),
    _context(
        "mini_batch_size",
        Whole(1, 100_000),
        500,
        "k-means mini-batch size",
        functions=START_RUN_ONLY,
        pipeline=True,
        per_upload=True,
    ),
    _context(
        "min_accuracy",
        Fraction(),
        0.6,
        "the quality gate: a model whose test accuracy (clusters mapped to digits) is under it"
        " is not deployed, and the run ends MODEL_REJECTED",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "deploy_tolerance",
        Fraction(),
        0.01,
        "champion/challenger: a model deploys to the stable endpoint only if its test accuracy is"
        " at least the serving model's on the same test split less this; else MODEL_REJECTED",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "model_registry",
        Flag(),
        True,
        "register each evaluated model in the stack's SageMaker model package group (Approved"
        " when deployed, Rejected otherwise); false: nothing is registered",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "max_runtime_seconds",
        # SageMaker's StoppingCondition allows at most 28 days.
        Whole(60, 28 * 24 * 3600),
        3600,
        "the training job's MaxRuntimeInSeconds",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    # Cheaper options (docs/deploy.md, "Costs"). Managed spot training: botocore's sagemaker
    # model, StoppingCondition.MaxWaitTimeInSeconds "must be equal to or greater than
    # MaxRuntimeInSeconds" (checked with max_runtime_seconds, _check_together).
    _context(
        "spot_training",
        Flag(),
        False,
        "train on managed spot capacity (EnableManagedSpotTraining); the email reports the"
        " saving from BillableTimeInSeconds against TrainingTimeInSeconds",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "spot_max_wait_seconds",
        Whole(60, 28 * 24 * 3600),
        7200,
        "with spot_training: MaxWaitTimeInSeconds, the wait for spot capacity plus the run;"
        " at least max_runtime_seconds",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "max_dataset_bytes",
        Whole(1, 16 * 1024**3),
        2 * 1024**3,
        "uploads over this size are refused before they are read",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _context(
        "preprocess_memory",
        # A Kubernetes quantity, because the pipeline hands it to the pod as it is (KFP resolves
        # a string parameter in a resource field; a number would be read as bytes).
        Text(
            re.compile(r"[1-9][0-9]{3,6}Mi|[1-9][0-9]{0,3}Gi"),
            "a memory size of at least 1000Mi, as <n>Mi or <n>Gi, e.g. 4608Mi",
        ),
        # 2 x the 2 GiB max_dataset_bytes (a decoded dataset and one copy) + 512Mi for the step's
        # runtime (pipeline/steps/dataset.py, MEMORY_RESERVE_BYTES).
        "4608Mi",
        "memory request and limit of the preprocess step's pod; a dataset whose load would need"
        " more (less 512Mi kept for the runtime) is refused before it is allocated",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    # The stuck-run watchdog (a scheduled function).
    _context(
        "watchdog_no_progress_minutes",
        Whole(10, 7 * 24 * 60),
        60,
        "a started run with no SageMaker progress for this long is checked against KFP",
        functions=WATCHDOG_ONLY,
    ),
    _context(
        "watchdog_max_run_hours",
        Whole(1, 30 * 24),
        24,
        "a run without an outcome this long after its upload is checked against KFP",
        functions=WATCHDOG_ONLY,
    ),
    # How many runs may be in flight at once.
    _context(
        "max_concurrent_runs",
        Whole(1, 50),
        2,
        "runs in flight at once (started, no outcome yet); further uploads wait as QUEUED and"
        " start in upload order as runs end. Keep it within the account's SageMaker training"
        " instance quota for train_instance_type (Service Quotas), so a burst waits instead of"
        " failing on quota",
        functions=frozenset({START_RUN, contracts.WATCHDOG}),
    ),
    # Housekeeping.
    _context(
        "reserved_concurrency",
        Whole(1, 1000, optional=True),
        None,
        "reserved concurrency of each function; unset by default (accounts whose concurrency"
        " quota is 10 refuse any reservation)",
    ),
    _context("runs_retention_days", DAYS, 30, "lifecycle expiry of runs/ in the data bucket"),
    _context("access_logs_retention_days", DAYS, 90, "expiry of the bucket's server access logs"),
    _context(
        "log_retention_days",
        DAYS,
        30,
        "CloudWatch retention of the Lambdas' logs (rounded up to an allowed value)",
    ),
    # Filled in by the stack.
    _stack(
        "runs_table_name",
        Text(re.compile(r"[a-zA-Z0-9_.-]{3,255}"), "a DynamoDB table name"),
        "the runs table",
        functions=ALL_FUNCTIONS,
    ),
    _stack(
        "run_slots_queue_url",
        Text(re.compile(r"https?://\S+"), "an SQS queue URL"),
        'where a freed slot is announced ("a slot is free"); start-run consumes it',
        functions=ALL_FUNCTIONS,
    ),
    _stack(
        "notification_topic_arn",
        _arn(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}", "an SNS topic ARN"),
        "the run notification topic",
        functions=ALL_FUNCTIONS,
    ),
    _stack(
        "data_bucket_name",
        Text(re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"), "an S3 bucket name"),
        "the data bucket",
        functions=frozenset({START_RUN, contracts.WATCHDOG}),  # the watchdog: promoted models
    ),
    _stack(
        "kfp_token_secret_arn",
        Text(SECRET_ARN_PATTERN, "a Secrets Manager secret ARN"),
        "url mode: the token secret's ARN (from kfp_token_secret_name); else empty",
        default="",
        functions=KFP_CALLERS,
    ),
    _stack(
        "pipeline_spec_path",
        Text(),
        "the compiled pipeline start-run submits",
        functions=START_RUN_ONLY,
    ),
    _stack(
        "step_image_uri",
        STEP_IMAGE,
        "the image every step runs in (the built asset's, pinned to its tag, or step_image)",
        functions=START_RUN_ONLY,
        env="STEP_IMAGE",
    ),
    _stack(
        # botocore's sagemaker model, shape RoleArn.
        "sagemaker_role_arn",
        _arn(r"arn:aws[a-z-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+", "an IAM role ARN"),
        "the execution role the pipeline passes to SageMaker",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _stack(
        "endpoint_alarm_names",
        Text(re.compile(r"[^,\s][^,]{0,254}(,[^,\s][^,]{0,254}){0,9}"), "alarm names, by commas"),
        "the CloudWatch alarms (errors, latency) whose ALARM rolls back a stable endpoint's update",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _stack(
        "event_bus_name",
        Text(re.compile(r"[/.\-_A-Za-z0-9]{1,256}"), "an EventBridge bus name"),
        "where the pipeline's exit handler puts its final-state event",
        functions=START_RUN_ONLY,
        pipeline=True,
    ),
    _stack(
        "powertools_service_name",
        Text(choices=contracts.FUNCTIONS),
        "the function's name, in its logs and metrics",
        functions=ALL_FUNCTIONS,
    ),
    _stack(
        "powertools_metrics_namespace",
        Text(),
        "the product's CloudWatch metric namespace",
        functions=ALL_FUNCTIONS,
    ),
    # Set by the Lambda runtime.
    Parameter(
        "aws_region", REGION, "the function's region", source="lambda", functions=ALL_FUNCTIONS
    ),  # fmt: skip
    # Computed by start-run for each run.
    Parameter("dataset_uri", Text(), "s3://bucket/key of the upload", source="run", pipeline=True),
    Parameter(
        "dataset_version",
        Text(),
        "the S3 version id of the upload the run reads ('' when the bucket is unversioned)",
        source="run",
        pipeline=True,
    ),
    Parameter("run_key", Text(), "the run key", source="run", pipeline=True),
    Parameter("region", REGION, "the region SageMaker runs in", source="run", pipeline=True),
)
BY_KEY = {parameter.key: parameter for parameter in PARAMETERS}
CONTEXT_KEYS = tuple(p.key for p in PARAMETERS if p.source == "context")
# The instance types a run's SageMaker calls name.
INSTANCE_TYPE_KEYS = ("train_instance_type", "transform_instance_type", "endpoint_instance_type")
_CDK_KEYS = frozenset({"acknowledged-issue-numbers"})

# Keys that are required together, or when the KFP mode needs them.
REQUIRED_IN_MODE = {
    KFP_MODE_CLUSTER: ("eks_cluster_name", "kfp_namespace"),
    KFP_MODE_URL: ("kfp_url", "kfp_token_secret_name", "kfp_token_secret_arn"),
}
GO_TOGETHER = (("vpc_id", "subnet_ids"),)
# Keys whose values are bounds of one range: (low, high).
ORDERED = (("endpoint_min_instances", "endpoint_max_instances"),)


class Settings(Mapping[str, Any]):
    """Validated values by key, also readable as attributes (`settings.kfp_mode`)."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise AttributeError(key) from None

    def __repr__(self) -> str:
        return f"Settings({self._values!r})"


def _parse(parameter: Parameter, raw: Any, where: str) -> Any:
    try:
        value = parameter.kind.parse(raw)
    except ValueError as error:
        raise SettingError(parameter.key, str(error), where=where) from None
    if value == "" and isinstance(parameter.default, str) and parameter.default:
        # An empty value would skip every check; leave the key out to get the default.
        raise SettingError(
            parameter.key,
            f"must not be empty (leave it out for the default {parameter.default!r})",
            where=where,
        )
    return value


def _check_together(values: Mapping[str, Any], where: Any) -> None:
    """The cross-key rules, for whichever of their keys this reader has."""
    mode = values.get("kfp_mode")
    for key in REQUIRED_IN_MODE.get(mode, ()):
        if key in values and not values[key]:
            raise SettingError(key, f"required when kfp_mode is {mode!r}", where=where(key))
    spot_wait, runtime = values.get("spot_max_wait_seconds"), values.get("max_runtime_seconds")
    if values.get("spot_training") and spot_wait is not None and runtime is not None:
        if spot_wait < runtime:
            raise SettingError(
                "spot_max_wait_seconds",
                f"{spot_wait} is less than max_runtime_seconds ({runtime}): SageMaker requires"
                " MaxWaitTimeInSeconds >= MaxRuntimeInSeconds for managed spot training",
                where=where("spot_max_wait_seconds"),
            )
    for group in GO_TOGETHER:
        present = [key for key in group if key in values]
        if len(present) == len(group) and len({bool(values[key]) for key in group}) > 1:
            missing = next(key for key in group if not values[key])
            raise SettingError(
                missing,
                f"{' and '.join(group)} go together: give all or none",
                where=where(missing),
            )
    for low, high in ORDERED:
        if low in values and high in values and values[low] > values[high]:
            raise SettingError(
                high,
                f"must be at least {low} ({values[low]}; got {values[high]})",
                where=where(high),
            )


def closest_key(key: str, known: Sequence[str] = CONTEXT_KEYS) -> str | None:
    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    return matches[0] if matches else None


# The CDK app's context file, at the repository's root (absent where the core is shipped).
CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def cdk_json_context(path: Path = CDK_JSON) -> dict[str, Any]:
    """The "context" object of cdk.json (empty when there is none)."""
    if not path.exists():
        return {}
    return dict(json.loads(path.read_text()).get("context", {}))


def _is_cdk_key(key: str) -> bool:
    """CDK's own context keys: feature flags `@aws-cdk/...`, the CLI's `aws:cdk:...`, cached
    lookups `availability-zones:account=...`, and the CLI's acknowledged notices."""
    return key.startswith("@") or ":" in key or key in _CDK_KEYS


def read_context(context: Mapping[str, Any]) -> Settings:
    """The CDK context, validated: every error names the key (and, if unknown, the closest)."""
    for key in context:
        if key in CONTEXT_KEYS or _is_cdk_key(key):
            continue
        normal = key.strip().lower().replace("-", "_")
        near = normal if normal in CONTEXT_KEYS else closest_key(normal)
        hint = f"; did you mean '{near}'?" if near else ""
        raise SettingError(key, f"unknown context key{hint}")
    values = {}
    for parameter in PARAMETERS:
        if parameter.source != "context":
            continue
        raw = context.get(parameter.key, parameter.default)
        values[parameter.key] = _parse(parameter, raw, "context")
    if values["operations_emails"] is None:
        values["operations_emails"] = values["notification_emails"]
    _check_together(values, lambda key: "context")
    allowed = values["allowed_instance_types"]
    for key in INSTANCE_TYPE_KEYS:
        if allowed and values[key] not in allowed:
            raise SettingError(
                key,
                f"{values[key]!r} is not in allowed_instance_types ({', '.join(allowed)}):"
                " add it there, or the run's own SageMaker call is denied",
            )
    return Settings(values)


def function_parameters(function: str) -> tuple[Parameter, ...]:
    return tuple(p for p in PARAMETERS if function in p.functions)


def environment(function: str, values: Mapping[str, Any]) -> dict[str, str]:
    """A function's environment: one variable per parameter it reads, from `values` by key (the
    function's service name and the metric namespace follow from its name).

    Values may be CDK tokens (strings); they are written as they are and checked by the
    function at cold start (`read_environment`).
    """
    values = {
        **values,
        "powertools_service_name": function,
        "powertools_metrics_namespace": contracts.METRICS_NAMESPACE,
    }
    env = {}
    for parameter in function_parameters(function):
        if parameter.source == "lambda":
            continue  # the Lambda runtime sets it
        if parameter.key not in values:
            raise KeyError(f"{function}: no value for {parameter.key}")
        env[parameter.env_name] = parameter.kind.to_env(values[parameter.key])
    return env


def read_environment(function: str, environ: Mapping[str, str]) -> Settings:
    """A function's configuration from its environment, checked as the context is."""
    values = {}
    for parameter in function_parameters(function):
        # The stack sets every variable: a missing one is an error, never a silent default.
        raw = environ.get(parameter.env_name)
        if raw is None or (not raw.strip() and parameter.required):
            raise SettingError(parameter.key, "is missing or empty", where=parameter.env_name)
        values[parameter.key] = _parse(parameter, raw, parameter.env_name)
    _check_together(values, lambda key: BY_KEY[key].env_name)
    return Settings(values)


def pipeline_parameters() -> tuple[Parameter, ...]:
    """The pipeline's parameters, required ones first (a Python signature needs that order)."""
    chosen = [p for p in PARAMETERS if p.pipeline]
    return tuple(sorted(chosen, key=lambda p: not p.required))


def run_parameters(settings: Mapping[str, Any], **run: Any) -> dict[str, Any]:
    """The runtime parameters of one run: the per-run values plus the configured ones."""
    parameters = {}
    for parameter in pipeline_parameters():
        source = run if parameter.source == "run" else settings
        if parameter.key not in source:
            raise KeyError(f"no value for the pipeline parameter {parameter.key}")
        parameters[parameter.key] = source[parameter.key]
    unknown = set(run) - {p.key for p in pipeline_parameters() if p.source == "run"}
    if unknown:
        raise KeyError(f"not per-run pipeline parameters: {', '.join(sorted(unknown))}")
    return parameters


def allowed_instance_types(settings: Mapping[str, Any]) -> tuple[str, ...]:
    """The instance types a run may use: the context's list, else the configured three."""
    configured = [settings[key] for key in INSTANCE_TYPE_KEYS]
    return tuple(settings["allowed_instance_types"]) or tuple(dict.fromkeys(configured))


# -- per-upload settings ---------------------------------------------------------------------

# S3 user metadata (x-amz-meta-<name>) reaches the API lower-cased, without its prefix (S3 user
# guide, "Working with object metadata"); `-` and `_` are taken as the same.
UPLOAD_METADATA_PREFIX = "x-amz-meta-"
PER_UPLOAD_KEYS = tuple(p.key for p in PARAMETERS if p.per_upload)
# Recorded with a run's settings (next to PER_UPLOAD_KEYS) when its endpoint is serverless: what
# its email's and `status`'s serving cost line describe.
SERVERLESS_KEYS = ("endpoint_type", "serverless_memory_mb", "serverless_max_concurrency")
# What the cost needs of an endpoint on instances: the stable one serves endpoint_instance_count
# held within these bounds (core.serving), a per-run one the count as it is.
INSTANCE_SERVING_KEYS = ("endpoint_min_instances", "endpoint_max_instances", "per_run_endpoints")


def recorded_settings(values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a run record keeps: the per-upload ones, and the serverless ones when the
    endpoint is serverless, else the ones its instance count depends on."""
    keys = PER_UPLOAD_KEYS
    if values.get("endpoint_type") == contracts.ENDPOINT_TYPE_SERVERLESS:
        keys += SERVERLESS_KEYS
    else:
        keys += INSTANCE_SERVING_KEYS
    return {key: values[key] for key in keys}


class UploadSettingError(ValueError):
    """An upload's metadata asks for a setting it may not have, or a value out of bounds."""


def upload_overrides(metadata: Mapping[str, str], settings: Mapping[str, Any]) -> dict[str, Any]:
    """The run settings an upload's S3 user metadata sets, checked against the schema's bounds
    (and the instance types against the ones IAM allows a run); {} when it sets none."""
    overrides: dict[str, Any] = {}
    for name, raw in metadata.items():
        key = name.strip().lower().replace("-", "_")
        if key in (k.replace("-", "_") for k in contracts.PRODUCT_METADATA_KEYS):
            continue
        if key not in PER_UPLOAD_KEYS:
            raise UploadSettingError(
                f"unknown run setting {UPLOAD_METADATA_PREFIX}{name} in the upload's metadata;"
                f" an upload may set {', '.join(PER_UPLOAD_KEYS)}"
            )
        try:
            value = BY_KEY[key].kind.parse(raw)
        except ValueError as error:
            raise UploadSettingError(f"{UPLOAD_METADATA_PREFIX}{name}: {error}") from None
        if key in INSTANCE_TYPE_KEYS and value not in allowed_instance_types(settings):
            raise UploadSettingError(
                f"{UPLOAD_METADATA_PREFIX}{name}: {value} is not one of the instance types this"
                f" stack allows ({', '.join(allowed_instance_types(settings))});"
                " add it to allowed_instance_types and deploy"
            )
        overrides[key] = value
    return overrides
