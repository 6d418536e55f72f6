"""Plain-text accounts of what a run did, for people."""

from __future__ import annotations

from mnistflow.local.run_once import LocalRun


def describe_local_run(run: LocalRun) -> str:
    lines = [f"Run {run.run_key} on {run.dataset_uri}"]
    result = run.result
    if result.succeeded:
        lines.append("Pipeline: SUCCEEDED")
    else:
        lines.append(f"Pipeline: FAILED at step {result.failed_task or '?'}")
        lines.append(f"  reason: {result.error}")
    stock = run.inventory
    lines.append(f"Files under runs/{run.run_key}/: {len(stock['objects'])}")
    for key, size in sorted(stock["objects"].items()):
        lines.append(f"  {key} ({size:,} bytes)")
    job = stock["training_job"]
    if job:
        hp = job.get("HyperParameters", {})
        lines.append(
            f"Training job {job['TrainingJobName']}: {job['TrainingJobStatus']}, "
            f"k={hp.get('k')} feature_dim={hp.get('feature_dim')} "
            f"mini_batch_size={hp.get('mini_batch_size')}, "
            f"{job['ResourceConfig']['InstanceType']} x{job['ResourceConfig']['InstanceCount']}"
        )
        lines.append(f"  image {job['AlgorithmSpecification']['TrainingImage']}")
    model = stock["model"]
    if model:
        lines.append(f"Model {model['ModelName']} from {model['PrimaryContainer']['ModelDataUrl']}")
    transform = stock["transform_job"]
    if transform:
        lines.append(
            f"Batch transform {transform['TransformJobName']}: {transform['TransformJobStatus']}"
            f" -> {transform['TransformOutput']['S3OutputPath']}"
        )
    endpoint = stock["endpoint"]
    if endpoint:
        lines.append(f"Endpoint {endpoint['EndpointName']}: {endpoint['EndpointStatus']}")
    else:
        lines.append("Endpoint: none deployed")
    for event in run.final_events:
        detail = event["detail"]
        lines.append(f"Final-state event: {detail['state']}")
        if detail["failed_step"]:
            lines.append(f"  failed step {detail['failed_step']}: {detail['error']}")
    return "\n".join(lines)
