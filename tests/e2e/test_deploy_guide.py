"""docs/deploy.md's commands: those that can run here are run; those that need an account or a
cluster are each in the guide's reviewed appendix (a command added without its line fails)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
GUIDE = (REPO / "docs" / "deploy.md").read_text()
APPENDIX_TITLE = "## Appendix: the guide's commands against AWS and the cluster"
OUTSIDE = ("aws ", "kubectl ", "npx ")
# ./dev commands that need a deployed stack: in the appendix too (tests/integration/
# test_verify.py runs verify against the emulator).
NEEDS_A_DEPLOYED_STACK = ("./dev verify",)


def _normal(command: str) -> str:
    return " ".join(command.split())


def _guide_commands() -> set[str]:
    """Every command of the guide above the appendix: code-block lines (continuations joined,
    comments dropped) and inline commands."""
    body = GUIDE.split(APPENDIX_TITLE)[0]
    commands = set()
    for block in re.findall(r"```(?:sh|bash)?\n(.*?)```", body, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            command = _normal(line.split("  #")[0])
            if command:
                commands.add(command)
    prose = re.sub(r"```.*?```", "", body, flags=re.S).replace("\n", " ")
    for inline in re.findall(r"`([^`]+)`", prose):
        if inline.startswith(OUTSIDE):
            commands.add(_normal(inline))
    return commands


def _appendix_commands() -> set[str]:
    appendix = GUIDE.split(APPENDIX_TITLE)[1]
    rows = [line for line in appendix.splitlines() if line.startswith("| `")]
    return {_normal(re.match(r"\| `(.*?)` \|", row)[1].replace("\\|", "|")) for row in rows}


def test_every_command_that_needs_aws_or_a_cluster_is_in_the_reviewed_appendix():
    needs_outside = {
        c
        for c in _guide_commands()
        if c.startswith((*OUTSIDE, *NEEDS_A_DEPLOYED_STACK)) or "| kubectl" in c
    }
    assert needs_outside, "the guide's commands were not found"
    missing = needs_outside - _appendix_commands()
    assert not missing, f"add these to the guide's appendix: {sorted(missing)}"
    stale = _appendix_commands() - needs_outside
    assert not stale, f"the appendix lists commands the guide no longer gives: {sorted(stale)}"


def test_the_guides_dev_commands_that_can_run_here_run():
    dev_commands = {c for c in _guide_commands() if c.startswith("./dev ") and "|" not in c}
    # ./dev status and ./dev predict need a stack: tests/e2e/test_notebook.py runs them
    # against a kept-running local stack; ./dev cleanup runs against the local stack's emulator
    # in tests/integration/test_cleanup_cli.py.
    needs_a_stack = ("./dev status", "./dev predict", "./dev cleanup", *NEEDS_A_DEPLOYED_STACK)
    runnable = {c for c in dev_commands if not c.startswith(needs_a_stack)}
    assert runnable == {"./dev --help"}, runnable
    done = subprocess.run(
        ["./dev", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and "kubernetes-manifest" in done.stdout, done.stderr


def test_the_manifest_the_guide_pipes_to_kubectl_is_what_cluster_mode_needs():
    # Given the guide's `./dev kubernetes-manifest | kubectl apply -f -`, with the cluster's
    # name as the deploy command gives it
    assert "./dev kubernetes-manifest | kubectl apply -f -" in _guide_commands()
    done = subprocess.run(
        ["./dev", "kubernetes-manifest", "-c", "eks_cluster_name=my-cluster"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    kinds = [doc["kind"] for doc in yaml.safe_load_all(done.stdout) if doc]
    assert sorted(kinds) == sorted(["Role", "RoleBinding", "ServiceAccount", "RoleBinding"]), kinds
    # and without the cluster's name it says what to set, in one line
    bare = subprocess.run(
        ["./dev", "kubernetes-manifest"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert bare.returncode == 2 and "Traceback" not in bare.stderr
    assert "eks_cluster_name" in bare.stderr.strip().splitlines()[-1]
