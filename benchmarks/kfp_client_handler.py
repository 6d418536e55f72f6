"""Comparison only (benchmarks): the start-run job done the SDK way, with kfp.Client.

Not shipped. It imports the whole kfp SDK, as a Lambda using kfp.Client would.
"""

from __future__ import annotations

import json
import os
from urllib.parse import unquote_plus

import boto3
import kfp

from core import contracts


def handler(event, context):
    token = boto3.client("secretsmanager").get_secret_value(
        SecretId=os.environ["KFP_TOKEN_SECRET_ARN"]
    )["SecretString"]
    client = kfp.Client(host=os.environ["KFP_URL"], existing_token=token)
    experiment = client.create_experiment(os.environ["KFP_EXPERIMENT_NAME"])
    started = []
    for record in event.get("Records", []):
        bucket = record["s3"]["bucket"]["name"]
        obj = record["s3"]["object"]
        key = unquote_plus(obj["key"])
        run_key = contracts.run_key(bucket, key, obj.get("versionId") or obj["eTag"])
        name_filter = json.dumps(
            {"predicates": [{"key": "display_name", "operation": 1, "stringValue": run_key}]}
        )
        existing = client.list_runs(experiment_id=experiment.experiment_id, filter=name_filter)
        if existing.runs:
            continue
        run = client.run_pipeline(
            experiment_id=experiment.experiment_id,
            job_name=run_key,
            pipeline_package_path=os.environ["PIPELINE_SPEC_PATH"],
            params={"dataset_uri": f"s3://{bucket}/{key}", "run_key": run_key},
        )
        started.append(run.run_id)
    return {"started": started}
