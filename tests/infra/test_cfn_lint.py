"""cfn-lint (CloudFormation's own linter, its resource specs and rules) finds no error in any
variant of the synthesized template."""

from __future__ import annotations

import json

import pytest
from cfnlint.api import ManualArgs, lint

# Where the stack may be deployed; cfn-lint checks resource availability and values per region.
REGIONS = ["us-east-1", "eu-west-1"]


@pytest.fixture(params=["default_synth", "no_email_synth", "url_mode_synth"])
def synth(request):
    return request.getfixturevalue(request.param)


def test_cfn_lint_finds_no_error(synth):
    # Given the template as `cdk synth` writes it
    template = json.dumps(synth.template.to_json())
    # When cfn-lint checks it
    matches = lint(template, config=ManualArgs(regions=REGIONS))
    # Then it reports no error (E rules); warnings are listed, not fatal
    errors = [f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})" for m in matches
              if m.rule.id.startswith("E")]  # fmt: skip
    assert errors == []
