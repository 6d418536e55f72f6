"""The locks hold what the hand-pinned requirement files say, with hashes for every package."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)


def _pins(path: Path) -> dict[str, str]:
    return {
        name.lower().replace("_", "-"): version for name, version in _PIN.findall(path.read_text())
    }


def _locked_packages(path: Path) -> list[str]:
    """Each package block of a hashed lock (`name==version \\` then its hash lines)."""
    return re.split(r"\n(?=[A-Za-z0-9])", path.read_text())


@pytest.mark.parametrize(
    "requirements", ["requirements.txt", "requirements-dev.txt", "lambdas/requirements.txt"]
)
def test_every_hand_pinned_package_is_locked_at_its_pin(requirements):
    locked = _pins(REPO / "requirements.lock")
    pinned = _pins(REPO / requirements)
    assert pinned, requirements
    assert {name: locked.get(name) for name in pinned} == pinned


@pytest.mark.parametrize(
    "lock", ["requirements.lock", "requirements-uv.lock", "pipeline/image/requirements.txt"]
)
def test_every_locked_package_carries_its_hashes(lock):
    blocks = [b for b in _locked_packages(REPO / lock) if _PIN.search(b)]
    # (a universal lock may list a package twice, once per environment marker)
    assert len(blocks) == len(_PIN.findall((REPO / lock).read_text())) > 0
    for block in blocks:
        assert "--hash=sha256:" in block, block


def test_the_uv_that_dev_installs_is_the_one_locked_with_hashes():
    wanted = re.search(r"^UV_VERSION=(\S+)", (REPO / "dev").read_text(), re.MULTILINE)[1]
    assert _pins(REPO / "requirements-uv.lock") == {"uv": wanted}
