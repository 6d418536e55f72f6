"""Benchmark: `demo` on the sample from start to the announcement, and the start-run trigger.

Measured side by side in one run:
- the whole `demo` command (a fresh process, as a user runs it), against a baseline: the same
  compiled pipeline run alone by KFP's local runner (no handlers, no KFP API, no watcher);
- the start-run handler from the S3 notification to the KFP run created, against a baseline:
  one bare HTTP round trip to the same local KFP API;
- where the pipeline's time goes, step by step (from the local runner's own log).

Run: .venv/bin/python benchmarks/bench_demo.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from core.contracts import KIND_ENDPOINT_READY, run_key
from mnistflow.local.stack import LocalStack

REPO = Path(__file__).resolve().parents[1]

SAMPLE = REPO / "mnistflow" / "data" / "mnist-sample.pkl.gz"
DEMO_TIMEOUT_SECONDS = 300
_TASK_LINE = re.compile(
    r"(?P<at>\d\d:\d\d:\d\d\.\d+) - \w+ - (?:Executing task '(?P<start>[\w-]+)'|"
    r"Task '(?P<end>[\w-]+)' finished)"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def time_demo() -> tuple[float, float]:
    """(seconds for the whole command, seconds from upload to announcement it reports)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mnistflow", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=True,
    )
    total = time.perf_counter() - started
    reported = float(re.search(r"Finished in ([\d.]+) s", done.stdout).group(1))
    return total, reported


def time_pipeline_alone() -> float:
    """The baseline: the compiled pipeline by kfp.local, in a fresh process, nothing else."""
    script = f"""
import tempfile, time
from pathlib import Path
from tests.integration.pipeline_harness import run_dataset
from mnistflow.local.emulator import AwsEmulator
started = time.perf_counter()
with AwsEmulator() as emu, tempfile.TemporaryDirectory() as work:
    run = run_dataset(emu, Path({str(SAMPLE)!r}), Path(work))
    assert run.result.succeeded, run.result.error
print(time.perf_counter() - started)
"""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def step_seconds(log_file: Path) -> dict[str, float]:
    starts, spent = {}, {}
    for line in _ANSI.sub("", log_file.read_text()).splitlines():
        match = _TASK_LINE.search(line)
        if not match:
            continue
        at = datetime.strptime(match["at"], "%H:%M:%S.%f")
        if match["start"]:
            starts[match["start"]] = at
        elif match["end"] in starts:
            spent[match["end"]] = (at - starts[match["end"]]).total_seconds()
    return spent


def time_trigger() -> dict:
    """start-run from the notification to the KFP run created, and a bare KFP API call."""
    with tempfile.TemporaryDirectory() as work, LocalStack(Path(work)) as stack:
        key, version = stack.upload(SAMPLE)
        this_run = run_key(stack.names.data_bucket, key, version)
        emails = []
        stack.run_until(
            lambda: emails.extend(stack.inbox())
            or any(e.kind == KIND_ENDPOINT_READY for e in emails),
            DEMO_TIMEOUT_SECONDS,
        )
        start_runs = [
            call.seconds
            for call in stack.invocations
            if call.function == "start-run" and "Records" in call.event
        ]
        tracks = [call.seconds for call in stack.invocations if call.function == "track-progress"]
        bare = []
        for _ in range(20):
            request = urllib.request.Request(  # noqa: S310 (loopback http)
                f"{stack.kfp.url}/apis/v2beta1/experiments",
                headers={"Authorization": "Bearer x"},
            )
            started = time.perf_counter()
            urllib.request.urlopen(request, timeout=10).read()  # noqa: S310 (loopback)
            bare.append(time.perf_counter() - started)
        [run] = [r for r in stack.kfp.runs.values() if r["display_name"] == this_run]
        # The announcement comes when the endpoint is in service; the run ends a little later.
        stack.run_until(lambda: run["state"] in ("SUCCEEDED", "FAILED"), DEMO_TIMEOUT_SECONDS)
        return {
            "start_run_seconds": start_runs[0],
            "kfp_round_trip_seconds": statistics.median(bare),
            "track_progress_median_seconds": statistics.median(tracks),
            "steps": step_seconds(Path(run["log_file"])),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    demos = [time_demo() for _ in range(args.repeat)]
    alone = [time_pipeline_alone() for _ in range(args.repeat)]
    trigger = time_trigger()
    demo_total = statistics.median(d[0] for d in demos)
    demo_reported = statistics.median(d[1] for d in demos)
    pipeline = statistics.median(alone)
    print(f"demo, whole command (median of {args.repeat}):  {demo_total:6.2f} s")
    print(f"demo, upload -> ENDPOINT_READY:               {demo_reported:6.2f} s")
    print(f"baseline: pipeline alone under kfp.local:     {pipeline:6.2f} s")
    print(f"ratio demo / pipeline alone:                  {demo_total / pipeline:6.2f}")
    print(f"start-run, notification -> KFP run created:   {trigger['start_run_seconds']:6.3f} s")
    print(
        f"baseline: one local KFP API round trip:       {trigger['kfp_round_trip_seconds']:6.4f} s"
    )
    print(
        "ratio start-run / round trip:                 "
        f"{trigger['start_run_seconds'] / trigger['kfp_round_trip_seconds']:6.1f}"
    )
    print(
        f"track-progress per event (median):            "
        f"{trigger['track_progress_median_seconds']:6.3f} s"
    )
    print("pipeline steps (seconds, from the local runner's log):")
    for step, seconds in trigger["steps"].items():
        print(f"  {step:<22} {seconds:6.2f}")
    print(json.dumps({"demo": demos, "pipeline_alone": alone, **trigger}))


if __name__ == "__main__":
    main()
