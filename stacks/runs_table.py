"""The runs table: one item per run key, the record every Lambda reads and moves forward."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from core.contracts import RUNS_TABLE_NAME
from core.run_record import ATTR


class RunsTable(Construct):
    """On-demand DynamoDB table keyed by `run_key`, with point-in-time recovery."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Table",
            table_name=RUNS_TABLE_NAME,
            partition_key=dynamodb.Attribute(name=ATTR.run_key, type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            # The run history is the product's audit trail: kept if the stack goes, but removed
            # if the deploy that created it rolls back (RetainExceptOnCreate), so a failed first
            # deploy leaves nothing behind under the table's fixed name.
            removal_policy=RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
        )
