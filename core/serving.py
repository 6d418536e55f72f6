"""The instances an endpoint on instances serves on: one rule for the deploy step
(pipeline.steps.steps.deploy builds the variant with it) and for the cost the run's email and
`mnistflow status` price (lambdas.logic.costs.serving_of), so the two cannot disagree."""

from __future__ import annotations


def serving_instance_count(
    instance_count: int, min_instances: int, max_instances: int, *, stable: bool
) -> int:
    """The stable endpoint (autoscaled between `min_instances` and `max_instances`) starts
    with `instance_count` held within those bounds; a per-run endpoint (no autoscaling) serves
    `instance_count` as it is."""
    if not stable:
        return instance_count
    return min(max(instance_count, min_instances), max_instances)
