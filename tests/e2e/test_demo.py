"""End to end: the CLI and the local stack, from an upload to the email, on 127.0.0.1 only."""

import gzip
import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import contracts
from core.contracts import (
    KIND_DATA_REJECTED,
    KIND_ENDPOINT_READY,
    KIND_MODEL_REJECTED,
    KIND_RUN_FAILED,
    run_key,
)
from mnistflow.demo import LOCK_FILE_VARIABLE
from mnistflow.local.stack import LOCAL_STEP_IMAGE, LocalStack
from tests.conftest import SAMPLE_DIR

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
DEMO_DEADLINE_SECONDS = 240
LEFTOVER_MARKERS = ("mnistflow.local.pipeline_runner", "kfp.dsl.executor_main")


def _cli(*args, timeout=DEMO_DEADLINE_SECONDS, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "mnistflow", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def _leftover_processes() -> list[str]:
    """Pipeline processes started by this test session: they inherit its own demo lock path
    (tests/e2e/conftest.py), so another checkout's demo on the same machine is not counted."""
    ours = f"{LOCK_FILE_VARIABLE}={os.environ[LOCK_FILE_VARIABLE]}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(pid) == os.getpid() or ours not in environ:
            continue
        if any(marker in cmdline for marker in LEFTOVER_MARKERS):
            found.append(cmdline)
    return found


def _port_is_closed(url: str) -> bool:
    host, port = re.search(r"http://([\d.]+):(\d+)", url).groups()
    with socket.socket() as probe:
        return probe.connect_ex((host, int(port))) != 0


def test_the_sample_ends_in_one_endpoint_email_and_leaves_nothing_behind():
    # Given a fresh machine state, when the README's demo runs on the sample
    done = _cli("demo")
    # Then it says the endpoint is ready, exactly once, and exits 0
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("--- email (ENDPOINT_READY) ---") == 1
    assert "Run mnist-" in done.stdout and ": SUCCEEDED" in done.stdout
    for step in ("training", "transform", "endpoint"):
        assert re.search(rf"^    {step}\s+(COMPLETED|IN_SERVICE)", done.stdout, re.M), step
    # and its email's commands name the emulator, and say that nothing bills
    assert re.search(
        r"mnistflow predict --endpoint-url http://127\.0\.0\.1:\d+ --endpoint", done.stdout
    )
    assert "nothing is billed" in done.stdout and "bills by the hour" not in done.stdout
    # and training's figures in words, not the algorithm's metric names
    assert "Training:  mean squared distance to the nearest centre " in done.stdout
    assert "train:progress" not in done.stdout
    # and the timeline in causal order: each step's IN_PROGRESS before its end
    timeline = done.stdout.split("  timeline\n")[1].split("\n\n")[0].splitlines()
    for step, end in (("training", "COMPLETED"), ("transform", "COMPLETED"),
                      ("endpoint", "IN_SERVICE")):  # fmt: skip
        began = next(i for i, line in enumerate(timeline) if f" {step} IN_PROGRESS " in line)
        ended = next(i for i, line in enumerate(timeline) if f" {step} {end} " in line)
        assert began < ended, timeline
    # and the run's cost: the local SageMaker's billable seconds, and that nothing is billed
    # (status and the email both; no price is asked on the local stack)
    assert done.stdout.count("Run cost: nothing is billed on the local stack") == 2
    assert re.search(r"^ +\d+ s billable x 1 ml\.m5\.large \(training\)", done.stdout, re.M)
    assert "price unknown" not in done.stdout
    # and it ends with five digits read through the local endpoint, with the hint as it works
    # from the repository
    assert re.search(r"accuracy on these 5: [345]/5", done.stdout)
    assert "./dev predict --endpoint mnist-" in done.stdout
    # and only the product's own lines: the functions' logs and library warnings are in the
    # file it names
    assert "Warning" not in done.stdout + done.stderr
    assert not [line for line in done.stdout.splitlines() if line.startswith("{")]
    [log] = re.findall(r"^The functions' logs \(as CloudWatch would hold them\): (\S+)$",
                       done.stdout, re.M)  # fmt: skip
    assert "No application metrics to publish" in Path(log).read_text()
    # and the stack is gone: no step process, no listening port
    assert _leftover_processes() == []
    urls = re.findall(r"http://127\.0\.0\.1:\d+", done.stdout.splitlines()[0])
    assert len(urls) == 2 and all(_port_is_closed(url) for url in urls)


def test_the_same_upload_delivered_twice_gives_one_run(tmp_path):
    with LocalStack(tmp_path) as stack:
        # Given one upload whose notification S3 delivers twice
        key, version = stack.upload(SAMPLE_DIR / "mnist-sample.npz")
        sqs = stack.emulator.client("sqs")
        queue = sqs.get_queue_url(QueueName=stack.names.uploads_queue)["QueueUrl"]
        deadline = time.monotonic() + 10
        messages = []
        while not messages and time.monotonic() < deadline:
            messages = [
                m
                for m in sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get(
                    "Messages", []
                )
                if "Records" in m["Body"]
            ]
        assert messages, "S3 never notified the queue"
        for _ in range(2):
            sqs.send_message(QueueUrl=queue, MessageBody=messages[0]["Body"])
        # When the stack runs until the endpoint is announced
        this_run = run_key(stack.names.data_bucket, key, version)
        emails = []
        assert stack.run_until(
            lambda: emails.extend(stack.inbox())
            or any(e.kind == KIND_ENDPOINT_READY for e in emails),
            DEMO_DEADLINE_SECONDS,
        )
        # Then there was one KFP run, one record, one announcement
        assert [r["display_name"] for r in stack.kfp.runs.values()] == [this_run]
        assert [r.run_key for r in stack.runs.scan()] == [this_run]
        assert [e.kind for e in emails].count(KIND_ENDPOINT_READY) == 1


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickle_that_runs_code_ends_in_a_run_failed_email_not_a_traceback(tmp_path):
    data = tmp_path / "evil.pkl.gz"
    data.write_bytes(gzip.compress(pickle.dumps(_RunsCode())))
    done = _cli("demo", "--data", str(data))
    assert done.returncode == 1, done.stdout[-2000:]
    assert f"--- email ({KIND_RUN_FAILED}) ---" in done.stdout
    assert "preprocess" in done.stdout and "evil.pkl.gz" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    assert not (REPO / "PWNED").exists() and not (tmp_path / "PWNED").exists()
    # and the last line gives the whole reason, the dataset's full URI included
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("demo: no endpoint: DatasetError: s3://"), last
    assert f"{data.name}: pickle refers to" in last and "which a dataset may not use" in last
    # and the email says to fix the file, not to rerun what can never pass
    email = done.stdout.split(f"--- email ({KIND_RUN_FAILED}) ---")[1]
    assert "The dataset file is the problem: fix it and upload it again under incoming/." in email
    assert "rerun" not in email


def test_a_file_that_is_not_a_dataset_is_rejected_with_an_email():
    done = _cli("demo", "--data", "README.md")
    assert done.returncode == 1
    assert f"--- email ({KIND_DATA_REJECTED}) ---" in done.stdout
    assert "unsupported file type" in done.stdout


def test_an_empty_dataset_is_rejected_with_an_email(tmp_path):
    data = tmp_path / "empty.npz"
    data.write_bytes(b"")
    done = _cli("demo", "--data", str(data))
    assert done.returncode == 1
    assert f"--- email ({KIND_DATA_REJECTED}) ---" in done.stdout
    assert "REJECTED" in done.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "/nonexistent/mnist.npz"), "/nonexistent/mnist.npz: no such file"),
        (("--data", "/tmp"), "/tmp: is a directory; --data takes one .pkl.gz or .npz file"),
    ],
)
def test_a_bad_data_argument_is_refused_before_anything_starts(args, message):
    done = _cli("demo", *args, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"demo: {message}\n")


def test_a_port_already_in_use_is_refused_clearly():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _cli("demo", "--port", str(port), timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr


def test_a_second_demo_while_one_runs_is_refused_and_ctrl_c_stops_the_first_cleanly():
    # Given a demo that is running
    first = subprocess.Popen(
        [sys.executable, "-m", "mnistflow", "demo"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        header = first.stdout.readline()
        assert "Local stack up" in header, header + first.stderr.read()
        # When a second one starts
        second = _cli("demo", timeout=60)
        # Then it is refused, naming the first
        assert second.returncode == 2
        assert f"another demo is running (pid {first.pid})" in second.stderr
        # When the first gets Ctrl-C in the middle of its run
        first.stdout.readline()  # the upload
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    # Then it stops cleanly, with no step process or port left behind
    assert first.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert _leftover_processes() == []
    assert all(_port_is_closed(url) for url in re.findall(r"http://127\.0\.0\.1:\d+", header))


def test_status_of_an_unknown_run_key_says_so(tmp_path):
    with LocalStack(tmp_path) as stack:
        done = _cli(
            "status",
            "mnist-000000000000",
            "--endpoint-url",
            stack.emulator.endpoint_url,
            "--region",
            stack.emulator.region,
            timeout=60,
            env={**os.environ, **stack.emulator.environment()},
        )
    assert done.returncode == 1
    assert "no run 'mnist-000000000000' in table mnistflow-runs" in done.stderr


def test_rerun_starts_a_new_run_on_the_same_dataset_and_status_lists_both(tmp_path):
    from mnistflow.rerun import rerun
    from mnistflow.status import describe_run, describe_runs

    with LocalStack(tmp_path) as stack:
        # Given a dataset that already ran to its endpoint, with a per-upload setting
        key, version = stack.upload(SAMPLE_DIR / "mnist-sample.npz", metadata={"k": "16"})
        first = run_key(stack.names.data_bucket, key, version)
        emails = []

        def announced(n):
            return (
                lambda: emails.extend(stack.inbox())
                or [e.kind for e in emails].count(KIND_ENDPOINT_READY) >= n
            )

        assert stack.run_until(announced(1), DEMO_DEADLINE_SECONDS)
        # When it is rerun
        bucket, same_key, new_version = rerun(stack.runs, stack.emulator.client("s3"), first)
        assert (bucket, same_key) == (stack.names.data_bucket, key) and new_version != version
        # Then a second run, with its own key, goes all the way too
        assert stack.run_until(announced(2), DEMO_DEADLINE_SECONDS)
        second = run_key(bucket, key, new_version)
        assert sorted(r["display_name"] for r in stack.kfp.runs.values()) == sorted([first, second])
        # and status lists both, newest first, and shows one run's timeline
        listing = describe_runs(stack.runs.scan()).splitlines()
        assert [line.split()[0] for line in listing] == [second, first]
        assert all("SUCCEEDED" in line for line in listing)
        detail = describe_run(stack.runs.get(second))
        assert "endpoint    IN_SERVICE" in detail and "RUN_STARTED" in detail
        # and the rerun trained with the first upload's own setting
        for run in (first, second):
            record = stack.runs.get(run)
            assert record.run_settings["k"] == 16 and record.overridden == ("k",), record


def test_each_function_of_the_local_stack_keeps_its_own_settings(tmp_path):
    # Given the local stack, which hosts both functions in one process
    with LocalStack(tmp_path) as stack:
        start, track = (
            stack.environments[f] for f in (contracts.START_RUN, contracts.TRACK_PROGRESS)
        )
        # Then each has its own service name, and only start-run knows how to reach KFP
        assert start["POWERTOOLS_SERVICE_NAME"] == contracts.START_RUN
        assert track["POWERTOOLS_SERVICE_NAME"] == contracts.TRACK_PROGRESS
        assert start["KFP_URL"] == stack.kfp.url and "KFP_URL" not in track
        # And the process environment carries neither function's settings
        assert "RUNS_TABLE_NAME" not in os.environ and "KFP_MODE" not in os.environ


def test_the_run_ends_on_the_current_backends_complete(tmp_path):
    # Given the local stack, whose runner reports final states as KFP >= 2.14.0 does
    with LocalStack(tmp_path) as stack:
        key, version = stack.upload(SAMPLE_DIR / "mnist-sample.npz")
        this_run = run_key(stack.names.data_bucket, key, version)
        emails = []

        def finished() -> bool:
            emails.extend(stack.inbox())
            record = stack.runs.get(this_run)
            return record is not None and record.entry("pipeline", "SUCCEEDED") is not None

        assert stack.run_until(finished, DEMO_DEADLINE_SECONDS)
        # Then the pipeline's final state came as COMPLETE, and the endpoint was announced
        record = stack.runs.get(this_run)
        assert record.entry("pipeline", "SUCCEEDED").event_status == "COMPLETE"
        assert [e.kind for e in emails].count(KIND_ENDPOINT_READY) == 1
        # And the steps ran without installing anything, in the image start-run named
        [run] = stack.kfp.runs_named(this_run)
        executors = run["pipeline_spec"]["deploymentSpec"]["executors"].values()
        assert {e["container"]["image"] for e in executors} == {LOCAL_STEP_IMAGE}
        assert "pip install" not in Path(run["log_file"]).read_text()


def test_an_old_kfp_backend_ends_in_start_failed_with_the_version_needed(tmp_path):
    # Given a KFP backend older than 2.14.0
    with LocalStack(tmp_path, kfp_backend_version="2.5.0") as stack:
        key, version = stack.upload(SAMPLE_DIR / "mnist-sample.npz")
        this_run = run_key(stack.names.data_bucket, key, version)
        emails = []
        assert stack.run_until(
            lambda: emails.extend(stack.inbox()) or any(e.kind == KIND_RUN_FAILED for e in emails),
            DEMO_DEADLINE_SECONDS,
        )
        # Then the run never started, and the one email names the KFP version needed
        assert stack.runs.get(this_run).status == "START_FAILED"
        [failed] = [e for e in emails if e.kind == KIND_RUN_FAILED]
        assert "2.14.0 or later" in failed.message and not stack.kfp.runs


# A run's last email: since champion/challenger, a second model of the same data may end
# MODEL_REJECTED, not better than the one the stable endpoint serves.
OUTCOME_KINDS = (KIND_ENDPOINT_READY, KIND_RUN_FAILED, KIND_MODEL_REJECTED)


def _run_to_an_email(stack: LocalStack, key: str, version: str) -> list:
    this_run = run_key(stack.names.data_bucket, key, version)
    emails = []
    assert stack.run_until(
        lambda: emails.extend(stack.inbox())
        or any(e.run_key == this_run and e.kind in OUTCOME_KINDS for e in emails),
        DEMO_DEADLINE_SECONDS,
    )
    return [e for e in emails if e.run_key == this_run]


def test_a_key_with_every_awkward_character_goes_all_the_way(tmp_path):
    # Given an upload whose key holds what S3 allows and URLs mangle
    key = "incoming/ünï côdé #1 ?v=2 100% a+b.npz"
    with LocalStack(tmp_path) as stack:
        _, version = stack.upload(SAMPLE_DIR / "mnist-sample.npz", key=key)
        # When the stack runs it, Then the endpoint is announced for that very object
        emails = _run_to_an_email(stack, key, version)
        assert [e.kind for e in emails if e.kind != "RUN_STARTED"] == [KIND_ENDPOINT_READY]
        record = stack.runs.get(run_key(stack.names.data_bucket, key, version))
        assert record.dataset.key == key and record.dataset.version == version


def test_two_quick_uploads_of_one_key_each_train_on_their_own_version(tmp_path):
    # Given the sample and a smaller dataset, uploaded one after the other under the same key
    import numpy as np

    with np.load(SAMPLE_DIR / "mnist-sample.npz") as sample:
        arrays = {name: sample[name] for name in sample.files}
    smaller = tmp_path / "smaller.npz"
    np.savez(smaller, **{**arrays, "x_train": arrays["x_train"][:1500],
                         "y_train": arrays["y_train"][:1500]})  # fmt: skip
    key = "incoming/mnist.npz"
    with LocalStack(tmp_path) as stack:
        _, first = stack.upload(SAMPLE_DIR / "mnist-sample.npz", key=key)
        _, second = stack.upload(smaller, key=key)
        # When both runs go through
        for version in (first, second):
            _run_to_an_email(stack, key, version)
        # Then each trained on the rows of its own upload
        s3 = stack.emulator.client("s3")
        counts = []
        for version in (first, second):
            this_run = run_key(stack.names.data_bucket, key, version)
            manifest = s3.get_object(
                Bucket=stack.names.data_bucket, Key=f"runs/{this_run}/manifest.json"
            )
            counts.append(json.loads(manifest["Body"].read())["counts"]["train"])
        # (the .npz layout has no validation split: preprocess takes the train split's last
        # sixth for it)
        assert counts == [2500, 1250]
