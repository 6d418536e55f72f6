"""The concurrency limit's plumbing: the run-slots queue ("a slot is free"), consumed by
start-run alone through an SQS event source mapping (so only start-run creates KFP runs), its
dead-letter queue and alarm, and the runs-table reads the slot moves need.

The slots themselves live in the runs table (lambdas.dal.runs_table.DynamoRunSlots): each move
is a TransactWriteItems, which IAM authorizes per action in it (DynamoDB developer guide, "Using
IAM with DynamoDB transactions": dynamodb:UpdateItem for an Update, dynamodb:ConditionCheckItem
for a ConditionCheck).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda_event_sources as event_sources
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from core import contracts
from stacks.alarms import waiting_messages_alarm
from stacks.product_function import ProductFunction
from stacks.queues import RETENTION_DAYS, last_stop_queue

# AWS Lambda developer guide, "Using Lambda with Amazon SQS": set the queue's visibility
# timeout to at least six times the function's timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
# Messages all mean the same: one invocation takes up to a batch of them.
BATCH_SIZE = 10


class RunSlotsQueue(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        consumer_timeout_seconds: int,
        operations_topic: sns.ITopic,
    ) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = last_stop_queue(
            self, "DeadLetters", holds="'a slot is free' messages start-run failed on"
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(RETENTION_DAYS),
            visibility_timeout=Duration.seconds(
                consumer_timeout_seconds * VISIBILITY_TIMEOUT_FACTOR
            ),
            dead_letter_queue=sqs.DeadLetterQueue(
                max_receive_count=contracts.RUN_SLOTS_MAX_RECEIVES, queue=self.dead_letters
            ),
        )
        self.alarm = waiting_messages_alarm(
            self,
            "DeadLettersAlarm",
            queue=self.dead_letters,
            name="run-slots-dead-letters",
            what=(
                "start-run failed on 'a slot is free' (queued uploads wait for the watchdog's"
                " next pass)"
            ),
            topic=operations_topic,
        )

    def consumed_by(self, function: ProductFunction) -> None:
        """start-run: the event source mapping, and the reads that starting queued runs does
        (the QUEUED records, the slot count and a record after a lost race)."""
        function.function.add_event_source(
            event_sources.SqsEventSource(self.queue, batch_size=BATCH_SIZE)
        )

    def sent_by(self, *functions: ProductFunction) -> None:
        for function in functions:
            self.queue.grant_send_messages(function.role)


def grant_slot_moves(function: ProductFunction, table: dynamodb.ITable, *actions: str) -> None:
    """The runs-table calls a function's slot moves make besides UpdateItem: start-run reads
    the QUEUED records (Scan), a record after a lost race and the slot count (GetItem), and
    queues an upload with a ConditionCheck on the count; the watchdog's recount reads the
    count (GetItem; its pass already scans)."""
    function.role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="MoveRunSlots",
            actions=[f"dynamodb:{action}" for action in actions],
            resources=[table.table_arn],
        )
    )
