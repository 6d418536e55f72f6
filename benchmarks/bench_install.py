"""A fresh clone's first `./dev demo`, installed with the lock via uv, side by side with the same
lock via pip, in one run. Needs the package registry: run on demand, not in CI.

    .venv/bin/python benchmarks/bench_install.py            # the machine's caches as they are
    .venv/bin/python benchmarks/bench_install.py --cold     # empty uv and pip caches

Each arm clones the repository's HEAD into a new folder and runs `./dev demo` there (venv,
install, demo), timing the whole command and reading the install time `./dev` reports.
Targets (2 cores): the first demo under 90 s, the install under 30 s.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_DEMO_SECONDS = 90
TARGET_INSTALL_SECONDS = 30
DEMO_TIMEOUT_SECONDS = 1800


def first_demo(installer: str, cold: bool, scratch: Path) -> dict[str, float]:
    clone = scratch / f"clone-{installer}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    env = {**os.environ, "DEV_INSTALLER": installer}
    env.pop("VIRTUAL_ENV", None)
    if cold:
        env["UV_CACHE_DIR"] = str(scratch / f"uv-cache-{installer}")
        env["PIP_CACHE_DIR"] = str(scratch / f"pip-cache-{installer}")
    started = time.perf_counter()
    done = subprocess.run(
        ["./dev", "demo"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        check=True,
    )
    total = time.perf_counter() - started
    install = float(re.search(r"dev: installed in (\d+) s", done.stderr).group(1))
    demo = float(re.search(r"Finished in ([\d.]+) s", done.stdout).group(1))
    return {"total": total, "install": install, "demo": demo}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="empty uv and pip caches")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-install-") as scratch:
        results = {name: first_demo(name, args.cold, Path(scratch)) for name in ("uv", "pip")}
    caches = "empty caches" if args.cold else "the machine's caches"
    print(f"Fresh clone -> `./dev demo` finished ({caches}), {os.cpu_count()} cores:")
    for name, figures in results.items():
        print(
            f"  {name:4s} whole command {figures['total']:6.1f} s"
            f"   install {figures['install']:5.0f} s"
            f"   demo (upload to email) {figures['demo']:5.1f} s"
        )
    uv, pip = results["uv"], results["pip"]
    print(f"  ratio pip / uv: whole command {pip['total'] / uv['total']:.1f}x, "
          f"install {pip['install'] / max(uv['install'], 1):.1f}x")  # fmt: skip
    met_demo = uv["total"] < TARGET_DEMO_SECONDS
    met_install = uv["install"] < TARGET_INSTALL_SECONDS
    print(f"  targets with uv: first demo < {TARGET_DEMO_SECONDS} s "
          f"{'met' if met_demo else 'MISSED'}; install < {TARGET_INSTALL_SECONDS} s "
          f"{'met' if met_install else 'MISSED'}")  # fmt: skip
    return 0 if met_demo and met_install else 1


if __name__ == "__main__":
    raise SystemExit(main())
