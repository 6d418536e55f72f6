"""The runs table."""

from __future__ import annotations


def test_runs_table_is_keyed_by_run_key_on_demand_with_pitr_and_encryption(template):
    # Given the synthesized stack, then the runs table has the run key, PITR and SSE
    template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "KeySchema": [{"AttributeName": "run_key", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "run_key", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        },
    )
    template.resource_count_is("AWS::DynamoDB::Table", 1)
