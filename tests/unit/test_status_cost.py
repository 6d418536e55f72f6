"""`mnistflow status <run key>` shows the run's cost: priced on AWS, "nothing is billed" on the
local stack, "price unknown" when the Price List has none."""

from __future__ import annotations

from core.run_record import RunRecord
from lambdas.logic.track_progress import TrackProgress
from mnistflow.status import describe_run
from tests.conftest import load_event
from tests.fakes import InMemoryRunProgress, RecordingNotifier, slot_fakes
from tests.fakes.progress import RUN_KEY, start_run_record


def _record() -> RunRecord:
    settings = {"endpoint_instance_type": "ml.m5.large", "endpoint_instance_count": 1}
    runs = InMemoryRunProgress({RUN_KEY: start_run_record(run_settings=settings)})
    service = TrackProgress(runs, RecordingNotifier(), **slot_fakes(runs))
    for name in (
        "sagemaker_training_completed",
        "sagemaker_transform_completed",
        "sagemaker_endpoint_in_service",
    ):
        service.handle(load_event(name))
    return RunRecord.from_item(runs.items[RUN_KEY])


def test_status_prices_the_run_on_aws():
    text = describe_run(_record(), lambda region, component, instance: 0.115, "us-east-1")
    assert "  cost\n" in text
    assert "Run cost: $0.0390 (on-demand prices, AWS Price List)" in text  # 1220 s x $0.115/h
    assert (
        "Endpoint: 1 ml.m5.large instance while in service: $0.1150 an hour, $83.95 a month" in text
    )


def test_status_without_a_price_says_unknown():
    text = describe_run(_record(), lambda *_: None, "us-east-1")
    assert "Run cost: price unknown" in text


def test_status_on_the_local_stack_says_nothing_is_billed():
    text = describe_run(_record(), billed=False)
    assert "Run cost: nothing is billed on the local stack" in text
    assert "$" not in text.split("  cost\n", 1)[1].split("  steps\n", 1)[0]
