"""End-to-end fixtures: the demos these tests start hold a lock of their own, so a demo the
person running the tests has open elsewhere on the machine does not make them fail."""

from __future__ import annotations

import pytest

from mnistflow.demo import LOCK_FILE_VARIABLE


@pytest.fixture(autouse=True, scope="session")
def _own_demo_lock(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(LOCK_FILE_VARIABLE, str(tmp_path_factory.mktemp("lock") / "demo.lock"))
        yield
