"""Every status SageMaker can report for the resources a run creates is known to the tracker and
to the steps that wait on them: the enums are read from botocore's own service model (the API's
definition), so a status AWS adds fails this test instead of a run."""

from __future__ import annotations

import botocore.session
import pytest

from core import sagemaker_events
from core.run_record import STATUS_RANK
from core.sagemaker_events import RESOURCES


def _enum(shape: str) -> list[str]:
    model = botocore.session.get_session().get_service_model("sagemaker")
    return list(model.shape_for(shape).enum)


@pytest.mark.parametrize("resource", RESOURCES, ids=lambda r: r.noun)
def test_every_status_in_botocores_model_is_known(resource):
    statuses = _enum(resource.status_field)
    # The tracker normalizes each one, in the API's spelling and the events' spelling
    assert set(resource.statuses) == set(statuses)
    for status in statuses:
        assert resource.normalized(status) in STATUS_RANK
        assert resource.normalized(resource.event_status(status)) in STATUS_RANK
    # And a step waiting on the resource either ends on it or waits through it, knowingly
    assert resource.done | resource.failed <= set(statuses)
    assert not resource.done & resource.failed


def test_an_endpoint_deploy_waits_only_through_creating_and_updating():
    endpoint = sagemaker_events.ENDPOINT
    waiting = set(_enum("EndpointStatus")) - endpoint.done - endpoint.failed
    assert waiting == {"Creating", "Updating", "SystemUpdating"}


def test_update_rollback_failed_is_a_failure_the_tracker_announces():
    from lambdas.logic.progress_events import parse_event
    from tests.fakes.progress import event

    payload = event("sagemaker_endpoint_failed")
    payload["detail"]["EndpointStatus"] = "UPDATE_ROLLBACK_FAILED"
    result = parse_event(payload)
    assert result.normalized == "FAILED" and result.announces == "FAILED"
