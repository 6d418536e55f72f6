"""Issue 14's table, "what the user saw" against "expected": each row's exact output, run as the
user runs it, with no traceback and no library warning.

Each row, and where it is shown:

- first `./dev`, minutes of silence while installing: here,
  test_the_first_dev_says_what_it_installs_and_how_long_it_took;
- library warnings and Lambda log lines among the demo's lines, the timeline out of causal
  order, demo hints that do not work after `./dev`, emails true for where the run happened
  (training in words, nothing billed): test_demo.py,
  test_the_sample_ends_in_one_endpoint_email_and_leaves_nothing_behind;
- the demo's last line cut, "fix the file and upload again" (no rerun): test_demo.py,
  test_a_pickle_that_runs_code_ends_in_a_run_failed_email_not_a_traceback;
- `status`, `predict`, `rerun` without AWS configuration: here,
  test_the_cli_without_aws_configuration_says_what_is_missing_in_one_line;
- `status` after a demo: test_notebook.py,
  test_demo_keep_running_prints_what_the_readmes_five_lines_need;
- `--data <a directory>`: test_demo.py, test_a_bad_data_argument_is_refused_before_anything_starts;
- a bad `-c` value at synth: here, test_synth_with_a_bad_context_value_prints_the_message_alone;
- README commands as written: the first `./dev` here; test_deploy_guide.py runs the guide's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
INSTALL_DEADLINE_SECONDS = 600  # uv from its cache takes seconds; a cold cache downloads
CLEAN_PATH = "/usr/local/bin:/usr/bin:/bin"


def _tracked_files_copied_to(target: Path) -> None:
    """The checkout as a fresh clone has it: the tracked files, as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_the_first_dev_says_what_it_installs_and_how_long_it_took(tmp_path):
    # Given a fresh clone: no .venv
    clone = tmp_path / "clone"
    _tracked_files_copied_to(clone)
    assert not (clone / ".venv").exists()
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}  # the user's own (CAs)
    # When the README's first command runs (./dev --help is the cheapest that installs)
    started = time.monotonic()
    first = subprocess.run(
        ["./dev", "--help"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=INSTALL_DEADLINE_SECONDS,
    )
    took = time.monotonic() - started
    # Then, before the command's own output, one line says what is happening and for about how
    # long, and one how long it took; nothing else (no pip or uv chatter, no warning)
    assert first.returncode == 0, first.stderr[-2000:]
    lines = first.stderr.splitlines()
    assert lines[0] == "dev: installing the locked requirements into .venv with uv (about 15 s)..."
    assert re.fullmatch(r"dev: installed in (\d+) s", lines[1]), lines
    assert len(lines) == 2, lines
    assert int(re.fullmatch(r"dev: installed in (\d+) s", lines[1])[1]) <= took
    assert first.stdout.startswith("usage: mnistflow")
    # And the next run installs nothing and says nothing
    again = subprocess.run(
        ["./dev", "--help"], cwd=clone, env=env, capture_output=True, text=True, timeout=120
    )
    assert (again.returncode, again.stderr) == (0, "")


def _cdk_app(context: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """What `cdk synth -c key=value ...` runs: cdk.json's `app` command through the shell, with
    cdk.json's context and the -c values (strings) in CDK_CONTEXT_JSON, and an output folder."""
    cdk_json = json.loads((REPO / "cdk.json").read_text())
    env = {
        "PATH": CLEAN_PATH,
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "CDK_CONTEXT_JSON": json.dumps({**cdk_json["context"], **context}),
        "CDK_OUTDIR": str(tmp_path / "cdk.out"),
        # README: outside ./dev, jsii's switches for Node 20's end-of-life banner
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "20",
        "JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION": "1",
    }
    # cdk.json's own command, through the shell as the CDK CLI runs it
    return subprocess.run(  # noqa: S602
        cdk_json["app"], shell=True, cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (
            {"eks_cluster_name": "prod", "kfp_mode": "ssh"},
            "error: CDK context 'kfp_mode': must be one of cluster, url (got 'ssh')",
        ),
        (
            {"eks_cluster_name": "prod", "kfp_mod": "url"},
            "error: CDK context 'kfp_mod': unknown context key; did you mean 'kfp_mode'?",
        ),
        (
            {},
            "error: CDK context 'eks_cluster_name': is still cdk.json's placeholder"
            " 'REPLACE-WITH-YOUR-EKS-CLUSTER': set it in cdk.json or with `-c <key>=<value>`",
        ),
    ],
)
def test_synth_with_a_bad_context_value_prints_the_message_alone(tmp_path, context, message):
    done = _cdk_app(context, tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (2, "", message + "\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["predict", "--endpoint", "mnist-0123456789ab-endpoint", "--sample", "1"],
        ["rerun", "mnist-0123456789ab"],
    ],
)
def test_the_cli_without_aws_configuration_says_what_is_missing_in_one_line(tmp_path, argv):
    # Given a machine with no AWS configuration at all (no region, no credentials, no profile)
    # (and no instance metadata service to find a role on, should this machine have one)
    env = {"PATH": CLEAN_PATH, "HOME": str(tmp_path), "AWS_EC2_METADATA_DISABLED": "true"}
    # When the data scientist runs the CLI as the README says
    done = subprocess.run(
        ["./dev", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    # Then one line says what is missing and how to look at the local stack instead
    command = argv[0]
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"{command}: no AWS region configured: pass --region or set AWS_DEFAULT_REGION; to look"
        " at the local stack instead, start it with ./dev demo --keep-running and run the export"
        f" line it prints (./dev --debug {command} ... shows the traceback)\n"
    )
    # And the hint works as printed: the traceback, with --debug
    debug = subprocess.run(
        ["./dev", "--debug", *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "NoRegionError" in debug.stderr
    # And with a region but no credentials, the same for credentials
    done = subprocess.run(
        ["./dev", *argv],
        cwd=REPO,
        env={**env, "AWS_DEFAULT_REGION": "eu-west-1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"{command}: no AWS credentials found: configure a profile (aws configure, AWS_PROFILE)"
        " or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; to look at the local stack"
        " instead, start it with ./dev demo --keep-running and run the export line it prints"
        f" (./dev --debug {command} ... shows the traceback)\n"
    )
