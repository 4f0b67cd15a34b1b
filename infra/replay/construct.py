"""The failed-messages bucket and the replay Lambda that alone may read it."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from celery_fleet.contract import kept_messages as km
from celery_fleet.contract import replay_env as env
from celery_fleet.contract import worker_env
from constructs import Construct

from infra.broker import Broker
from infra.functions import broker_function
from infra.nag import acknowledge
from infra.workers.service import WorkerService

# Lambda's longest. The CLI sends at most 1,000 failures per invocation (100 s at its default 10 a
# second); at a slower rate the function hands back what it did not reach, and the CLI sends it again.
REPLAY_TIMEOUT = Duration.minutes(15)


class FailedMessageReplay(Construct):
    """Keeps every final failure's message for `retention_days` and puts chosen ones back.

    Workers put one object per failed task into an S3 bucket encrypted with the construct's KMS key
    (rotated yearly), which deletes objects after `retention_days`. Workers may only write
    `messages/`; a bucket policy refuses every read of an object to every principal but the replay
    Lambda's role, whatever their IAM policies say. The Lambda runs in the VPC, where the broker
    is, and is started by `celery-fleet replay` with the operator's credentials.

    Attributes:
        bucket, key: the failed-messages bucket and its KMS key.
        function: the replay Lambda.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        broker: Broker,
        retention_days: int,
        log_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="celery-fleet: encrypts kept failed-task messages",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # One data key per bucket rather than per object: far fewer KMS calls, same protection.
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(id="Retention", expiration=Duration.days(retention_days)),
                s3.LifecycleRule(id="AbortUploads", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.bucket,
            "AwsSolutions-S1",
            "Only two roles can touch this bucket (workers write, the replay Lambda reads); every replay "
            "is audited in the Lambda's log group, and CloudTrail data events can be turned on for S3.",
        )

        self.function = broker_function(
            self,
            broker=broker,
            package="replay",
            description="celery-fleet: puts kept failed-task messages back on their queues",
            purpose="Failed-task replay",
            memory_size=512,
            timeout=REPLAY_TIMEOUT,
            vpc=vpc,
            subnets=subnets,
            log_retention_days=log_retention_days,
            # Every name the function reads (celery_fleet.contract.replay_env), and only those: the
            # broker's are added by broker_function.
            environment={
                env.FAILED_MESSAGES_BUCKET: self.bucket.bucket_name,
                env.POWERTOOLS_SERVICE_NAME: "replay",
            },
        )
        role = self.function.role
        assert role is not None
        self.bucket.grant_read(self.function, f"{km.MESSAGES_PREFIX}*")
        # Markers: read to tell a replayed message (dry runs), written to claim one, removed again
        # when the push that follows fails.
        self.bucket.grant_read(self.function, f"{km.REPLAYS_PREFIX}*")
        self.bucket.grant_put(self.function, f"{km.REPLAYS_PREFIX}*")
        self.bucket.grant_delete(self.function, f"{km.REPLAYS_PREFIX}*")
        self.bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="OnlyReplayReadsObjects",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[self.bucket.arn_for_objects("*")],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": role.role_arn}},
            )
        )

        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole]",
            "AWS's managed policy for VPC-attached Lambdas: creating and deleting the function's network "
            "interfaces and writing its logs; nothing else.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            "AWS's managed policy for writing the function's own logs.",
        )
        self._acknowledge_grant_wildcards(role)
        for action, reason in {
            "s3:GetObject*": "object reads and their versions' metadata",
            "s3:GetBucket*": "the bucket's location and settings",
            "s3:List*": "listing within the granted prefixes",
            "s3:DeleteObject*": "removing a replay marker whose push failed",
        }.items():
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Action::{action}]",
                f"CDK's S3 grant on this bucket only, limited to its prefixes: {reason}.",
            )

    def keep_from(self, worker: WorkerService) -> None:
        """Let `worker` keep its failed messages here: the bucket's name, and write-only access."""
        worker.container.add_environment(worker_env.FAILED_MESSAGES_BUCKET_ENV, self.bucket.bucket_name)
        task_role = worker.task_definition.task_role
        # Narrower than bucket.grant_put, which adds kms:Decrypt and object-lock actions: a single
        # PutObject (boto3 never splits one into a multipart upload) needs only these two.
        iam.Grant.add_to_principal(
            grantee=task_role,
            actions=["s3:PutObject"],
            resource_arns=[self.bucket.arn_for_objects(f"{km.MESSAGES_PREFIX}*")],
        )
        self.key.grant(task_role, "kms:GenerateDataKey")
        acknowledge(
            task_role,
            f"AwsSolutions-IAM5[Resource::<{self._bucket_id()}.Arn>/{km.MESSAGES_PREFIX}*]",
            "One object per failed task under this prefix: workers may put there, nothing else.",
        )

    def _bucket_id(self) -> str:
        return Stack.of(self).get_logical_id(self.bucket.node.default_child)  # type: ignore[arg-type]

    def _acknowledge_grant_wildcards(self, role: iam.IRole) -> None:
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",
            "CDK's S3 grant: writing an SSE-KMS object needs a data key from the bucket's own key only.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::kms:ReEncrypt*]",
            "CDK's S3 grant on the bucket's own key only.",
        )
        acknowledge(
            role,
            "AwsSolutions-IAM5[Action::s3:Abort*]",
            "CDK's S3 grant: aborting the role's own uploads, within the granted prefix.",
        )
        bucket_id = self._bucket_id()
        for prefix in (km.MESSAGES_PREFIX, km.REPLAYS_PREFIX):
            acknowledge(
                role,
                f"AwsSolutions-IAM5[Resource::<{bucket_id}.Arn>/{prefix}*]",
                "One object per failed task under this prefix: the grant is limited to the prefix.",
            )
