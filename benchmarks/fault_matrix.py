"""The fault matrix as a table: runs tests/integration/test_fault_matrix.py, collecting each case,
and prints the counts (cases, lost, doubled, false emails, duplicate emails) per function and
per fault, in markdown for benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/fault_matrix.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MATRIX = "tests/integration/test_fault_matrix.py"
REPORT_VARIABLE = "MNISTFLOW_FAULT_MATRIX_REPORT"  # tests/integration/test_fault_matrix.py


def main() -> int:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "rows.jsonl"
        done = subprocess.run(
            [sys.executable, "-m", "pytest", MATRIX, "-q", "-p", "no:cacheprovider"],
            cwd=REPO,
            env={**os.environ, REPORT_VARIABLE: str(report)},
            capture_output=True,
            text=True,
            check=False,
        )
        rows = [json.loads(line) for line in report.read_text().splitlines()]
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["function"], row["fault"])].append(row)
    print("| function | fault | cases | lost | doubled | false emails | duplicate emails |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for (function, fault), cases in sorted(groups.items()):
        print(
            f"| {function} | {fault} | {len(cases)} | {sum(c['lost'] for c in cases)} |"
            f" {sum(c['doubled'] for c in cases)} | {sum(c['false_emails'] for c in cases)} |"
            f" {sum(c['duplicate_emails'] for c in cases)} |"
        )
    total = len(rows)
    bad = sum(not r["ok"] for r in rows)
    print(f"\n{total} cases, {bad} outside the invariant; pytest exit {done.returncode}")
    return 0 if bad == 0 and done.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
