"""Monitoring of one stage: the alarm topic, every alarm, the paging composite and the dashboard."""

from __future__ import annotations

from aws_cdk import CfnOutput
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.broker import Broker
from infra.config.monitoring import MonitoringConfig
from infra.monitoring.alarms import AlarmBook
from infra.monitoring.broker_alarms import BrokerAlarms
from infra.monitoring.dashboard import FleetDashboard
from infra.monitoring.notifications import AlarmTopic
from infra.monitoring.pipeline_alarms import PipelineAlarms
from infra.monitoring.queue_alarms import QueueAlarms
from infra.monitoring.worker_alarms import WorkerAlarms
from infra.queue_depth import QueueDepthPublisher
from infra.task_events import TaskEventIngester
from infra.workers import WorkerFleet


class Monitoring(Construct):
    """Alarms a person can act on, the topic that carries them, and the stage's dashboard.

    Two severities, decided by each alarm's runbook section. Pages (the sections listed in
    `infra.monitoring.runbooks.PAGES`, and in docs/alarms.md) have no action of their own: they feed
    one composite alarm, the only paging notification, so one incident pages once however many
    signals it trips. Warnings notify the topic directly, on ALARM and on OK. Every description says
    what is wrong, the first thing to check and its section of docs/runbooks.md.

    It takes the monitored constructs and reads everything else from them: the broker's node metrics
    and node type, the queue and task metrics (and so the stage's namespace), the worker groups and
    their services. The alarm groups and the dashboard receive those metric objects.

    Attributes:
        notifications: the alarm topic (`notifications.topic`) and its key and subscribers.
        book: every alarm, by severity (`book.pages`, `book.warnings`).
        paging: the composite alarm.
        broker, queues, workers, pipeline: the alarm groups.
        dashboard: the stage's dashboard.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        config: MonitoringConfig,
        broker: Broker,
        fleet: WorkerFleet,
        publisher: QueueDepthPublisher,
        ingester: TaskEventIngester,
    ) -> None:
        super().__init__(scope, construct_id)
        self.notifications = AlarmTopic(
            self, "Notifications", stage=stage, emails=config.notify_emails, slack=config.slack
        )
        self.book = AlarmBook(stage=stage, topic=self.notifications.topic)

        self.broker = BrokerAlarms(self, "Broker", book=self.book, metrics=broker.metrics, config=config)
        self.queues = QueueAlarms(
            self,
            "Queues",
            book=self.book,
            metrics=publisher.metrics,
            workers=fleet.services,
            publisher=publisher.function,
            config=config,
        )
        self.workers = WorkerAlarms(
            self, "Workers", book=self.book, tasks=ingester.metrics, workers=fleet.services, config=config
        )
        self.pipeline = PipelineAlarms(
            self,
            "Pipeline",
            book=self.book,
            tasks=ingester.metrics,
            ingester=ingester.function,
            on_failure_queue=ingester.on_failure_queue,
        )
        self.paging = self.book.composite(self, "Paging")

        alarms: list[cloudwatch.IAlarm] = [self.paging, *self.book.pages, *self.book.warnings]
        self.dashboard = FleetDashboard(
            self,
            "Dashboard",
            stage=stage,
            alarms=alarms,
            broker=broker.metrics,
            queues=publisher.metrics,
            tasks=ingester.metrics,
            workers=fleet.services,
            publisher=publisher.function,
            ingester=ingester.function,
            on_failure_queue=ingester.on_failure_queue,
            failed_tasks=ingester.failed_tasks,
            config=config,
        ).dashboard

        CfnOutput(
            self,
            "AlarmTopicArn",
            value=self.notifications.topic.topic_arn,
            description="SNS topic of every alarm of the stage; subscribe more endpoints here",
        )
        CfnOutput(
            self,
            "DashboardName",
            value=self.dashboard.dashboard_name,
            description="CloudWatch dashboard of the stage",
        )
