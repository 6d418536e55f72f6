"""cdk-nag (AwsSolutions) runs on every synth: no finding may stay unsuppressed."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Annotations, Match

NAG_FINDING = Match.string_like_regexp("AwsSolutions-.*")


@pytest.fixture(params=["default_synth", "no_email_synth", "url_mode_synth"])
def synth(request):
    return request.getfixturevalue(request.param)


def test_no_unsuppressed_errors(synth):
    errors = Annotations.from_stack(synth.stack).find_error("*", NAG_FINDING)
    assert [f"{e.id}: {e.entry.data}" for e in errors] == []


def test_no_unsuppressed_warnings(synth):
    warnings = Annotations.from_stack(synth.stack).find_warning("*", NAG_FINDING)
    assert [f"{w.id}: {w.entry.data}" for w in warnings] == []


def test_suppressions_carry_reasons(default_synth):
    # Given every cdk-nag suppression in the template
    suppressions = [
        rule
        for resource in default_synth.resources.values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    # Then there are some, and each says why in a sentence
    assert suppressions
    for rule in suppressions:
        assert len(rule["reason"]) >= 40, rule
