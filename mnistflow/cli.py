"""mnistflow: drop MNIST data in S3, get a SageMaker endpoint. The user's commands.

AWS commands (status, predict, rerun) use the usual AWS configuration (profile, region);
point them at the local stack with --endpoint-url (or AWS_ENDPOINT_URL).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

SAMPLE_DATASET = Path(__file__).parent / "data" / "mnist-sample.pkl.gz"
DEFAULT_SPEC_PATH = Path("build") / "mnist_pipeline.yaml"
EXIT_USAGE = 2
# How the user ran the CLI, for the hints it prints: ./dev sets it to "./dev".
INVOKED_AS_VARIABLE = "MNISTFLOW_INVOKED_AS"
ROLLBACK_POLL_SECONDS = 2.0  # a person waits: a short pause between two DescribeEndpoint calls


def _client(args: argparse.Namespace, service: str):
    import boto3
    from botocore.config import Config

    # A person waits for the answer: botocore's standard retries (3 attempts, short backoff),
    # not the legacy mode's five, so an endpoint that is not there is said in seconds.
    config = Config(retries={"mode": "standard", "max_attempts": 3}, connect_timeout=10)
    return boto3.client(
        service, region_name=args.region, endpoint_url=args.endpoint_url, config=config
    )


def _demo(args: argparse.Namespace) -> int:
    from mnistflow.demo import DemoError, run_demo

    try:
        outcome = run_demo(args.data, port=args.port, keep_running=args.keep_running)
    except DemoError as error:
        print(f"demo: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ndemo: stopped; the local stack is down.", file=sys.stderr)
        return 130
    if outcome.announced:
        return 0
    print(f"\ndemo: no endpoint: {outcome.reason}", file=sys.stderr)
    return 1


def _runs(args: argparse.Namespace):
    from lambdas.dal.runs_table import RunsTableReader

    dynamodb = _client(args, "dynamodb")
    return RunsTableReader(args.table, lambda: dynamodb)


def _price_list(args: argparse.Namespace):
    """The Price List, asked in its own region (lambdas.dal.price_list.PRICING_REGION)."""
    import boto3

    from lambdas.dal.price_list import PRICING_REGION, PriceList

    pricing = boto3.client("pricing", region_name=PRICING_REGION)
    return PriceList(lambda: pricing)


def _region(args: argparse.Namespace) -> str:
    import boto3

    return args.region or boto3.session.Session().region_name or ""


def _status(args: argparse.Namespace) -> int:
    from core.contracts import STATUS_QUEUED
    from core.run_record import queue_positions
    from mnistflow.status import UnknownRun, describe_run, describe_runs, read_run

    runs = _runs(args)
    if args.run_key:
        try:
            record = read_run(runs, args.run_key)
            place = None
            if record.status == STATUS_QUEUED:
                place = queue_positions(runs.scan()).get(record.run_key)
            billed = not args.endpoint_url  # the local stack bills nothing: no price is asked
            prices = _price_list(args) if billed else None
            print(describe_run(record, prices, region=_region(args), billed=billed, place=place))
        except UnknownRun as error:
            print(f"status: {error}", file=sys.stderr)
            return 1
        return 0
    print(describe_runs(runs.scan()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from mnistflow.predict import (
        PredictError,
        describe_predictions,
        digit_mapping,
        load_images,
        predict,
        sample_images,
    )

    try:
        if args.image:
            images, labels = load_images(args.image), None
        else:
            images, labels = sample_images(args.sample)
        sagemaker = _client(args, "sagemaker")
        mapping = digit_mapping(sagemaker, _client(args, "s3"), args.endpoint)
        answers = predict(
            sagemaker,
            _client(args, "sagemaker-runtime"),
            args.endpoint,
            images,
            labels,
            mapping,
        )
    except PredictError as error:
        print(f"predict: {error}", file=sys.stderr)
        return 1
    print(describe_predictions(answers))
    return 0


def _rerun(args: argparse.Namespace) -> int:
    from mnistflow.rerun import RerunError, rerun

    try:
        bucket, key, version = rerun(_runs(args), _client(args, "s3"), args.run_key)
    except RerunError as error:
        print(f"rerun: {error}", file=sys.stderr)
        return 1
    print(f"uploaded s3://{bucket}/{key} again as version {version}: a new run starts from it")
    return 0


def _redrive(args: argparse.Namespace) -> int:
    from mnistflow.redrive import (
        RedriveError,
        describe,
        lambda_invoker,
        redrive,
        targets_from_stack,
    )

    try:
        targets = targets_from_stack(_client(args, "cloudformation"), args.stack)
        results = redrive(
            _client(args, "sqs"),
            lambda_invoker(_client(args, "lambda")),
            targets,
            dry_run=args.dry_run,
        )
    except RedriveError as error:
        print(f"redrive: {error}", file=sys.stderr)
        return 1
    print(describe(results, args.dry_run))
    return 1 if any(r.outcome.startswith("failed again") for r in results) else 0


def _verify(args: argparse.Namespace) -> int:
    from mnistflow.verify import describe, verify

    checks = verify(lambda service: _client(args, service), args.stack)
    print(describe(checks))
    return 0 if all(c.ok for c in checks) else 1


def _cleanup(args: argparse.Namespace) -> int:
    from core.contracts import data_bucket_name
    from mnistflow.cleanup import cleanup, describe_cleanup, runs_in_flight

    sts = _client(args, "sts")
    bucket = args.bucket or data_bucket_name(
        sts.get_caller_identity()["Account"], sts.meta.region_name
    )
    outcomes = cleanup(
        _client(args, "sagemaker"),
        _client(args, "s3"),
        bucket=bucket,
        endpoint_name=args.endpoint,
        keep=args.keep,
        ttl_hours=args.ttl_hours,
        in_flight=runs_in_flight(_runs(args).scan()),
        dry_run=args.dry_run,
    )
    print(describe_cleanup(outcomes, args.dry_run))
    return 1 if any(o.result == "refused" for o in outcomes) else 0


def _rollback(args: argparse.Namespace) -> int:
    from core.sagemaker_events import ENDPOINT
    from mnistflow.cleanup import CleanupError, rollback
    from pipeline.steps import sagemaker_jobs as jobs
    from pipeline.steps.steps import ENDPOINT_TIMEOUT_SECONDS

    sm = _client(args, "sagemaker")
    try:
        done = rollback(sm, endpoint_name=args.endpoint)
    except CleanupError as error:
        print(f"rollback: {error}", file=sys.stderr)
        return 1
    print(
        f"endpoint {done.endpoint}: {done.from_config} -> {done.to_config}; run {done.run_key}"
        " serves once the update is in"
    )
    if args.no_wait:
        return 0
    try:
        described = jobs.wait_for(
            lambda: sm.describe_endpoint(EndpointName=done.endpoint),
            ENDPOINT.status_field,
            done=ENDPOINT.done,
            failed=ENDPOINT.failed,
            what=f"endpoint {done.endpoint}",
            timeout_seconds=ENDPOINT_TIMEOUT_SECONDS,
            poll_seconds=ROLLBACK_POLL_SECONDS,
        )
    except jobs.StepFailed as error:
        print(f"rollback: {error}", file=sys.stderr)
        return 1
    if described.get("EndpointConfigName") != done.to_config:  # SageMaker rolled it back
        print(
            f"rollback: endpoint {done.endpoint} is back on {described.get('EndpointConfigName')}"
            f": {described.get('FailureReason') or 'the update did not take'}",
            file=sys.stderr,
        )
        return 1
    print(f"endpoint {done.endpoint} is InService: run {done.run_key} now serves")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from pipeline.compile import compile_pipeline

    print(compile_pipeline(args.output))
    return 0


def _kubernetes_manifest(args: argparse.Namespace) -> int:
    from core.settings import SettingError, cdk_json_context, read_context
    from mnistflow.kubernetes import manifest

    context = cdk_json_context()
    for pair in args.context:
        key, sep, value = pair.partition("=")
        if not sep:
            print(f"kubernetes-manifest: -c takes key=value (got {pair!r})", file=sys.stderr)
            return EXIT_USAGE
        context[key] = value
    try:
        settings = read_context(context)
    except SettingError as error:
        print(f"kubernetes-manifest: {error}", file=sys.stderr)
        return EXIT_USAGE
    text = manifest(settings)
    if not text:
        print(
            "kubernetes-manifest: nothing to apply in url mode (multi-user Kubeflow: runs use the"
            " profile namespace's default-editor service account)",
            file=sys.stderr,
        )
        return 0
    print(text, end="")
    return 0


def _aws_options(parser: argparse.ArgumentParser) -> None:
    from core.contracts import RUNS_TABLE_NAME

    parser.add_argument("--region", default=None, help="AWS region (default: your AWS config)")
    parser.add_argument(
        "--endpoint-url", default=None, help="an AWS emulator, e.g. the local stack's"
    )
    if parser.prog.split()[-1] in ("status", "rerun", "cleanup"):
        parser.add_argument(
            "--table", default=RUNS_TABLE_NAME, help=f"runs table (default {RUNS_TABLE_NAME})"
        )


def _setting(key: str):
    """An option read as the setting `key` is, with its bounds (core/settings.py)."""
    from core.settings import BY_KEY

    kind = BY_KEY[key].kind

    def parse(raw: str):
        try:
            return kind.parse(raw)
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"{key} {error}") from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    from core import contracts

    parser = argparse.ArgumentParser(prog="mnistflow", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an AWS error in full"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo",
        help="the whole flow on this machine: upload, run, email (AWS emulator + KFP local)",
        description="Start the local stack, upload the dataset under incoming/, show the "
        "run's progress, then print the run record, the emails and how to call the endpoint. "
        "Exit 0 when the endpoint was announced, 1 otherwise, 2 when it cannot start.",
    )
    demo.add_argument("--data", type=Path, default=SAMPLE_DATASET, help="a .pkl.gz or .npz")
    demo.add_argument("--port", type=int, default=0, help="emulator port (default: a free one)")
    demo.add_argument(
        "--keep-running", action="store_true", help="leave the local stack up until Ctrl-C"
    )
    demo.set_defaults(func=_demo)

    status = commands.add_parser(
        "status",
        help="the runs, newest first, or one run's timeline",
        description="Read the runs table: every run with its steps, or one run in detail.",
    )
    status.add_argument("run_key", nargs="?", help="a run key (mnist-...)")
    _aws_options(status)
    status.set_defaults(func=_status)

    pred = commands.add_parser(
        "predict",
        help="send digits to an endpoint and print the digits it reads",
        description="Send images as text/csv (one image a line) to the endpoint and print, "
        "for each, the digit (the cluster's digit, from the run's evaluation), the closest "
        "cluster and its distance; with --sample, the true digits and the accuracy on them.",
    )
    pred.add_argument("--endpoint", required=True, help="endpoint name (mnist-...)")
    source = pred.add_mutually_exclusive_group()
    source.add_argument(
        "--image", type=Path, help=".npy or CSV: 784 pixels a line, in [0, 1] or 0-255"
    )
    source.add_argument(
        "--sample", type=int, default=5, help="send N labelled test digits (default 5)"
    )
    _aws_options(pred)
    pred.set_defaults(func=_predict)

    again = commands.add_parser(
        "rerun",
        help="start a new run on the dataset of an earlier run",
        description="Copy the run's dataset version onto its key as a new version; the "
        "upload trigger starts a new run for it, exactly as for a fresh upload.",
    )
    again.add_argument("run_key", help="the earlier run's key")
    _aws_options(again)
    again.set_defaults(func=_rerun)

    back = commands.add_parser(
        "redrive",
        help="hand the events on the failure queues back to their functions",
        description="Read start-run's and track-progress's failure queues (from the stack's "
        "outputs), invoke each function with each event, and delete a message only when its "
        "function handled it. Exit 0 when all went through, 1 when some failed again (kept).",
    )
    back.add_argument("--dry-run", action="store_true", help="list what would be handed back")
    back.add_argument(
        "--stack", default=contracts.STACK_NAME, help=f"the stack (default {contracts.STACK_NAME})"
    )
    _aws_options(back)
    back.set_defaults(func=_redrive)

    check = commands.add_parser(
        "verify",
        help="check a deployed stack: outputs, subscriptions, KFP, Pod Identity, alarms",
        description="Check the deployed stack from here, one line per check, each saying what "
        "to fix: its outputs, the email subscriptions confirmed, start-run reaching KFP (a dry "
        "run that starts nothing), the Pod Identity association and access entries, the alarms "
        "able to notify. Exit 0 when all pass, 1 otherwise.",
    )
    check.add_argument(
        "--stack", default=contracts.STACK_NAME, help=f"the stack (default {contracts.STACK_NAME})"
    )
    _aws_options(check)
    check.set_defaults(func=_verify)

    from core.settings import BY_KEY

    stable = BY_KEY["endpoint_name"].default
    tidy = commands.add_parser(
        "cleanup",
        help="delete the product's SageMaker resources that nothing needs (by their tag)",
        description="List the endpoints, endpoint configs, models and promoted artifacts that "
        "carry the mnistflow:run-key tag; delete the configs the stable endpoint superseded "
        "beyond the kept N, per-run endpoints past their time to live, and what finished runs "
        "left behind; say for each what stays and why. Never touches a resource without the "
        "tag, nor anything of a run in flight. Exit 1 when SageMaker refused a delete.",
    )
    tidy.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    tidy.add_argument(
        "--endpoint", default=stable, help=f"the stable endpoint (default {stable or 'none'})"
    )
    tidy.add_argument(
        "--keep",
        type=_setting("kept_endpoint_configs"),
        default=BY_KEY["kept_endpoint_configs"].default,
        help="endpoint configs kept for rollback, the serving one included (default %(default)s)",
    )
    tidy.add_argument(
        "--ttl-hours",
        type=_setting("endpoint_ttl_hours"),
        default=BY_KEY["endpoint_ttl_hours"].default,
        help="per-run endpoints older than this go (default %(default)s)",
    )
    tidy.add_argument(
        "--bucket", default="", help="the data bucket (default mnistflow-data-<account>-<region>)"
    )
    _aws_options(tidy)
    tidy.set_defaults(func=_cleanup)

    undo = commands.add_parser(
        "rollback",
        help="point the stable endpoint back at the previous kept endpoint config",
        description="Update the stable endpoint to the newest kept endpoint config older than "
        "the one it serves, wait until it is InService, and say which run now serves. Refuses "
        "while the endpoint is changing, or when no earlier config is kept.",
    )
    undo.add_argument(
        "--endpoint", default=stable, help=f"the stable endpoint (default {stable or 'none'})"
    )
    undo.add_argument("--no-wait", action="store_true", help="return once the update started")
    _aws_options(undo)
    undo.set_defaults(func=_rollback)

    k8s = commands.add_parser(
        "kubernetes-manifest",
        help="the Role, RoleBinding and service account to apply in KFP's namespace",
        description="Print, for cdk.json's context with any -c overrides (as cdk deploy takes "
        "them), the Kubernetes objects cluster mode needs: start-run's access to KFP's API "
        "through the service proxy, and the pipeline pods' service account bound to KFP's "
        "runner Role. Apply with: mnistflow kubernetes-manifest | kubectl apply -f -",
    )
    k8s.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a context value, as for cdk deploy (repeatable)",
    )
    k8s.set_defaults(func=_kubernetes_manifest)

    comp = commands.add_parser("compile", help="write the pipeline's IR YAML")
    comp.add_argument("--output", type=Path, default=DEFAULT_SPEC_PATH)
    comp.set_defaults(func=_compile)
    return parser


LOCAL_STACK_HINT = (
    "to look at the local stack instead, start it with ./dev demo --keep-running and run the"
    " export line it prints"
)


def aws_problem(error: Exception, args: argparse.Namespace) -> str | None:
    """One line for an AWS error a user causes (configuration, credentials, a stack that is not
    there or not running); None for anything else, which keeps its traceback."""
    from botocore import exceptions as aws

    region = getattr(args, "region", None)
    if isinstance(error, aws.NoRegionError):
        return (
            f"no AWS region configured: pass --region or set AWS_DEFAULT_REGION; {LOCAL_STACK_HINT}"
        )
    if isinstance(error, aws.ProfileNotFound):
        return f"{error}: check AWS_PROFILE (aws configure list-profiles lists them)"
    if isinstance(error, aws.NoCredentialsError | aws.PartialCredentialsError):
        return (
            "no AWS credentials found: configure a profile (aws configure, AWS_PROFILE) or set"
            f" AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; {LOCAL_STACK_HINT}"
        )
    if isinstance(
        error, aws.TokenRetrievalError | aws.UnauthorizedSSOTokenError | aws.SSOTokenLoadError
    ):
        return f"the AWS SSO session has expired or is missing ({error}): run aws sso login"
    if isinstance(error, aws.EndpointConnectionError | aws.ConnectTimeoutError):
        where = getattr(error, "kwargs", {}).get("endpoint_url", "the AWS endpoint")
        return (
            f"cannot reach {where}: if it is the local stack, it is not running"
            f" (./dev demo --keep-running starts it); otherwise check the network and --region"
        )
    if isinstance(error, aws.ReadTimeoutError):
        return f"AWS did not answer in time ({error}): try again, or check the network"
    if isinstance(error, aws.ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        message = error.response.get("Error", {}).get("Message", str(error))
        if code == "ResourceNotFoundException" and hasattr(args, "table"):
            return (
                f"{message} (table {args.table}, region {region or 'from your AWS config'}):"
                " is the stack deployed in this account and region? (--table, --region)"
            )
        if code in (
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "InvalidSignatureException",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "ExpiredTokenException",
            "AccessDenied",
            "AccessDeniedException",
        ):
            return f"AWS refused the call ({code}): {message}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except Exception as error:
        problem = None if args.debug else aws_problem(error, args)
        if problem is None:
            raise
        invoked_as = os.environ.get(INVOKED_AS_VARIABLE) or "mnistflow"
        print(
            f"{args.command}: {problem} ({invoked_as} --debug {args.command} ... shows the"
            " traceback)",
            file=sys.stderr,
        )
        return 1
