"""The app reads its context through the settings schema: a bad or unknown key fails at synth,
before anything is built, with one line naming the key (tests/unit/test_settings.py covers the
schema's every rule)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import SettingError
from stacks.app_factory import create_app

REPO = Path(__file__).resolve().parents[2]


def test_the_app_refuses_bad_context_before_building_anything(tmp_path):
    with pytest.raises(SettingError, match="^CDK context 'kfp_mode': must be one of"):
        create_app({"kfp_mode": "ssh"}, outdir=str(tmp_path))


def test_the_app_refuses_an_unknown_key_naming_the_closest(tmp_path):
    with pytest.raises(SettingError, match="did you mean 'train_instance_count'"):
        create_app({"train_instances_count": 2}, outdir=str(tmp_path))


@pytest.mark.parametrize(
    ("context", "line"),
    [
        ({"kfp_mode": "ssh"}, "error: CDK context 'kfp_mode': must be one of cluster, url"),
        ({"kfp_mod": "url"}, "error: CDK context 'kfp_mod': unknown context key; did you mean"),
    ],
)
def test_synth_with_a_bad_value_prints_one_line_and_exits_2(tmp_path, context, line):
    # Given the context the CDK CLI passes (`cdk synth -c ...` sets CDK_CONTEXT_JSON)
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps(context), "CDK_OUTDIR": str(tmp_path)}
    # When the app runs as `cdk synth` runs it
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    # Then it says what is wrong in one line, with no traceback
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(line)
