"""What a notebook user does: the walkthrough notebook, executed top to bottom, and the README's
five lines against `demo --keep-running`, as printed."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from core.contracts import STABLE_ENDPOINT_NAME
from mnistflow.demo import LOCK_FILE_VARIABLE
from tests.e2e.test_demo import _leftover_processes

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"
DEADLINE_SECONDS = 360  # the demo's own run deadline is 300 s, plus its start
CELL_TIMEOUT_SECONDS = 300


def _kill_leftovers() -> None:
    """Step processes of this session that outlived their stack (each leads its own group)."""
    for pid in _leftover_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def _leftover_pids() -> list[int]:
    from tests.e2e.test_demo import LEFTOVER_MARKERS

    ours = f"{LOCK_FILE_VARIABLE}={os.environ[LOCK_FILE_VARIABLE]}".encode()
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            int(pid) != os.getpid()
            and ours in environ
            and any(m in cmdline for m in LEFTOVER_MARKERS)
        ):
            pids.append(int(pid))
    return pids


def _venv_first_on_path() -> str:
    """The kernel spec runs `python` from PATH: make it this interpreter (the venv's)."""
    return f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def test_the_notebook_is_kept_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code"
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


def test_the_walkthrough_notebook_runs_top_to_bottom(monkeypatch):
    # Given the notebook as a reader finds it in the repository
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("PATH", _venv_first_on_path())
    # When it is executed top to bottom in a fresh kernel, from its own folder (a cell's own
    # deadline, 240 s, comes before the client's)
    try:
        NotebookClient(
            notebook,
            timeout=CELL_TIMEOUT_SECONDS,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOK.parent)}},
        ).execute()
    finally:
        _kill_leftovers()  # a failed cell never reached stack.stop(): its step processes
    # Then every step printed what the reader is told to expect
    text = "\n".join(
        output.get("text", "") + "".join(output.get("data", {}).get("text/html", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert re.search(r"run key: mnist-[0-9a-f]{12}", text)
    assert ": SUCCEEDED" in text and "endpoint    IN_SERVICE" in text
    states = r"run [\w-]+: mnist-[0-9a-f]{12} SUCCEEDED\n.*PENDING\n.*RUNNING\n.*SUCCEEDED"
    assert re.search(states, text)
    assert re.search(r"test accuracy \d+\.\d% \(gate 60%\), k=32", text)
    assert "Confusion matrix" in text and "cluster 0: digit" in text
    assert re.search(r"[345] of 5 read right", text)
    assert "stopped" in text
    assert _leftover_processes() == []


def _lines_of(process: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _readme_five_lines() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Notebooks and the KFP SDK") :]
    [snippet] = re.findall(r"```python\n(.*?)```", section.split("\n## ")[0], re.S)
    assert len(snippet.strip().splitlines()) == 5, snippet
    return snippet


def test_demo_keep_running_prints_what_the_readmes_five_lines_need(tmp_path):
    # Given `demo --keep-running`, as the README says to start it
    errors = tmp_path / "demo.stderr"
    demo = subprocess.Popen(
        [sys.executable, "-m", "mnistflow", "demo", "--keep-running"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=errors.open("w"),  # a file: a full pipe would stall the demo
        text=True,
    )
    try:
        lines = _lines_of(demo)
        printed: list[str] = []
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not any(line.lstrip().startswith("export ") for line in printed):
            assert time.monotonic() < deadline, "".join(printed)
            try:
                printed.append(lines.get(timeout=1))
            except queue.Empty:
                assert demo.poll() is None, "".join(printed) + errors.read_text()
        text = "".join(printed)
        # Then it names the KFP API with its token, and the emulator
        assert re.search(r"KFP API:  http://127\.0\.0\.1:\d+  \(bearer token \S+\)", text)
        assert re.search(r"AWS:      http://127\.0\.0\.1:\d+", text)
        [export] = [line for line in printed if line.lstrip().startswith("export ")]
        environment = dict(word.split("=", 1) for word in shlex.split(export)[1:])
        [demo_run] = re.findall(r"-> run (mnist-[0-9a-f]{12})", text)
        # When the README's five lines run in another process with that export
        tried = subprocess.run(
            [sys.executable, "-c", _readme_five_lines()],
            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **environment},
            capture_output=True,
            text=True,
            timeout=120,
        )
        # Then kfp.Client lists the demo's run and boto3 the demo's upload
        assert tried.returncode == 0, tried.stderr[-3000:]
        assert demo_run in tried.stdout and "incoming/mnist-sample.pkl.gz" in tried.stdout
        # And the deploy guide's "Verify it works" commands work with the same export
        for command, expected in (
            (["status"], f"{demo_run}  SUCCEEDED"),
            (["status", demo_run], "  accuracy  0.7"),
            (["predict", "--endpoint", STABLE_ENDPOINT_NAME, "--sample", "5"], "accuracy on"),
            # and the deploy guide's teardown's first command, which deletes nothing
            (["cleanup", "--dry-run"], "(dry run: nothing was deleted)"),
        ):
            done = subprocess.run(
                [sys.executable, "-m", "mnistflow", *command],
                cwd=REPO,
                env={
                    "PATH": os.environ["PATH"],
                    "HOME": os.environ.get("HOME", "/"),
                    **environment,
                },  # fmt: skip
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0 and expected in done.stdout, (command, done)
            assert not done.stderr, done.stderr
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=60)
        except subprocess.TimeoutExpired:
            demo.kill()
    assert demo.returncode == 130
    assert _leftover_processes() == []
