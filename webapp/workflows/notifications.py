"""Notification delivery: each message reaches each active channel once.

    send_notifications(messages)               inside the caller's workflow
      per message and active channel: enqueue <Channel>.deliver on the channel's queue
      under the workflow id "notify:<dedup key>", so a replay or a second call attaches
      to the delivery that exists instead of starting another
    <Channel>.deliver(message)                 one workflow per delivery
      1. record_notification   transaction: the Notification row, status queued
      2. send                  step, retried with backoff (NOTIFY_* settings); each try
                               first adds one to the row's attempts (count_attempt), so
                               tries before a crash count too
      3. mark_sent             transaction: status sent, sent_at
         or mark_failed        transaction: status failed, last_error, an ErrorRecord;
                               the workflow still completes, so a dead channel never
                               blocks the access workflow that asked for the message

The dedup key is (channel, request, event, recipient). A step's result is checkpointed
after it returns, so one window stays open that no sender can close: the process dies
after the remote server accepted the message and before the checkpoint. The resend then
carries the same `Message-ID` (email) or `dedup_key` / `X-Gatehouse-Dedup-Key` (Slack),
so the receiver can tell.

Channels are DBOS configured instances made once, at import: DBOS's registry outlives
`DBOS.destroy()` and refuses a second instance under the same name, so each start hands
the same instances its settings through `configure_channels` before launch.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from email.utils import formatdate
from typing import ClassVar

import httpx
import sqlalchemy as sa
from dbos import DBOS, DBOSConfiguredInstance, SetWorkflowID, StepOptions

from webapp.config import Settings
from webapp.core.models import ErrorRecord, Notification, NotificationStatus, utcnow
from webapp.services.decision_links import decision_urls
from webapp.services.notifications import (
    SUBJECT_MAX,
    Message,
    clip,
    dedup_key,
    email_message,
    one_line,
    outbox_text,
    request_url,
    slack_payload,
)
from webapp.workflows.datasource import datasource
from webapp.workflows.runtime import MaxStepRetriesExceeded

__all__ = [
    "DEDUP_HEADER",
    "Channel",
    "DeliveryError",
    "Message",
    "configure_channels",
    "decision_links",
    "delivery_workflow_id",
    "request_link",
    "send_notifications",
]

log = logging.getLogger(__name__)
DEDUP_HEADER = "X-Gatehouse-Dedup-Key"
LAST_ERROR_MAX = 2000


class DeliveryError(Exception):
    """One send attempt failed.

    Holds plain values only: DBOS records a step's exception and raises it again on
    replay, and the original (an httpx or smtplib error) may not survive that trip.
    """

    def __init__(self, error_type: str, detail: str, attempt: int, transient: bool) -> None:
        super().__init__(error_type, detail, attempt, transient)
        self.error_type = error_type
        self.detail = detail
        self.attempt = attempt
        self.transient = transient

    def __str__(self) -> str:
        return f"{self.error_type}: {self.detail}"


def is_transient(error: BaseException) -> bool:
    """Whether trying again may help: network trouble, timeouts, HTTP 5xx/408/429, SMTP 4xx.
    A bad URL, a refused address or bad credentials fail the same way every time."""
    if isinstance(error, httpx.HTTPStatusError):
        code = error.response.status_code
        return code >= 500 or code in (408, 429)
    if isinstance(error, httpx.InvalidURL | httpx.UnsupportedProtocol):
        return False
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return any(code < 500 for code, _ in error.recipients.values())
    if isinstance(error, smtplib.SMTPResponseException):
        return error.smtp_code < 500
    if isinstance(error, smtplib.SMTPNotSupportedError):  # e.g. STARTTLS on a server without it
        return False
    return True


def _should_retry(error: BaseException) -> bool:
    return not isinstance(error, DeliveryError) or error.transient


def current_attempt() -> int:
    """Which try of the running step this is, counting from 1."""
    status = DBOS.step_status
    if status is None or status.current_attempt is None:
        return 1
    return status.current_attempt + 1


def failure_of(error: DeliveryError | MaxStepRetriesExceeded) -> DeliveryError:
    """The last attempt's error, whether retries ran out or a permanent error stopped them."""
    if isinstance(error, DeliveryError):
        return error
    last = error.errors[-1] if error.errors else error
    if isinstance(last, DeliveryError):
        return last
    return DeliveryError(type(last).__name__, str(last), len(error.errors), True)


# Transports: one attempt each, raising whatever the library raises.


_http_client: httpx.Client | None = None


def http_client() -> httpx.Client:
    """One pooled client per process: building one per message loads the CA bundle each
    time (about 18 ms of CPU, measured in bench/request_throughput.py)."""
    global _http_client
    if _http_client is None:
        _http_client = httpx.Client()
    return _http_client


def post_to_slack(url: str, message: Message, key: str, *, timeout: float) -> None:
    response = http_client().post(
        url, json=slack_payload(message, key), headers={DEDUP_HEADER: key}, timeout=timeout
    )
    response.raise_for_status()


def send_email(settings: Settings, message: Message, key: str) -> None:
    if not settings.smtp_host:
        raise RuntimeError("SMTP_HOST is not set")
    email = email_message(message, sender=settings.smtp_from, key=key)
    email["Date"] = formatdate(usegmt=True)
    with smtplib.SMTP(
        settings.smtp_host, settings.smtp_port, timeout=settings.notify_timeout_seconds
    ) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password or "")
        smtp.send_message(email)


# The Notification rows: each change is a datasource transaction, recorded with its output,
# so a replayed delivery workflow never writes twice.


@datasource.transaction()
def record_notification(channel: str, message: Message, key: str, status: str) -> tuple[int, str]:
    """The row for this delivery, inserted once: a later run under the same dedup key (a
    fork, a wiped system database) finds it and learns whether it was already sent."""
    session = datasource.session()
    row = session.execute(
        sa.select(Notification).where(Notification.dedup_key == key)
    ).scalar_one_or_none()
    if row is None:
        sent = status == NotificationStatus.sent
        row = Notification(
            channel=channel,
            recipient=message.recipient,
            subject=clip(one_line(message.subject), SUBJECT_MAX),
            body=outbox_text(message),
            status=status,
            dedup_key=key,
            request_id=message.request_id,
            attempts=1 if sent else 0,
            sent_at=utcnow() if sent else None,
        )
        session.add(row)
        session.flush()
    assert row.id is not None
    return row.id, str(row.status)


def count_attempt(notification_id: int) -> None:
    """One more real try of this delivery, committed before the try is made: a try cut short
    by a crash still counts, and a resend after a crash adds to the count instead of starting
    again at 1 (DBOS's own count of a step's tries restarts with the step)."""
    with datasource.bound.engine.begin() as conn:
        conn.execute(sa.update(Notification).where(Notification.id == notification_id)
                     .values(attempts=Notification.attempts + 1))


@datasource.transaction()
def mark_sent(notification_id: int) -> None:
    row = datasource.session().get_one(Notification, notification_id)
    row.status = NotificationStatus.sent
    row.sent_at = utcnow()
    row.last_error = None


@datasource.transaction()
def mark_failed(
    notification_id: int,
    channel: str,
    message: Message,
    key: str,
    failure: DeliveryError,
    workflow_id: str | None,
) -> None:
    """The row says failed, and the error log says why, beside the request it concerns."""
    session = datasource.session()
    row = session.get_one(Notification, notification_id)
    row.status = NotificationStatus.failed
    row.last_error = clip(str(failure), LAST_ERROR_MAX)
    session.add(
        ErrorRecord(
            source=f"notify.{channel}",
            workflow_id=workflow_id,
            request_id=message.request_id,
            message={
                "error_type": failure.error_type,
                "error": failure.detail,
                "channel": channel,
                "recipient": message.recipient,
                "event": message.event,
                "dedup_key": key,
                "attempts": row.attempts,
                "transient": failure.transient,
            },
        )
    )


# Channels.


def delivery_workflow_id(channel: str, message: Message) -> str:
    return f"notify:{dedup_key(channel, message)}"


class Channel(DBOSConfiguredInstance):
    """A route for messages, with its own queue. Subclasses name it, say when it is
    active, send one message, and declare the `deliver` workflow (DBOS registers
    workflows per decorated class)."""

    name: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(self.name)
        self._settings: Settings | None = None

    def configure(self, settings: Settings) -> None:
        self._settings = settings

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            raise RuntimeError(f"the {self.name} channel is used before configure_channels()")
        return self._settings

    @property
    def queue_name(self) -> str:
        return self.name

    def is_active(self) -> bool:
        return True

    def send(self, message: Message, key: str) -> None:
        raise NotImplementedError

    def deliver(self, message: Message) -> str:
        raise NotImplementedError

    def enqueue(self, message: Message) -> str:
        """Start this message's delivery on the channel's queue, once: the workflow id is
        the dedup key, and DBOS hands back the existing workflow for an id it knows."""
        workflow_id = delivery_workflow_id(self.name, message)
        with SetWorkflowID(workflow_id):
            DBOS.enqueue_workflow(self.queue_name, self.deliver, message)
        return workflow_id

    def step_options(self) -> StepOptions:
        settings = self.settings
        return {
            "name": f"notify.{self.name}.send",
            "retries_allowed": True,
            "max_attempts": settings.notify_max_attempts,
            "interval_seconds": settings.notify_retry_interval_seconds,
            "backoff_rate": settings.notify_backoff_rate,
            "should_retry": _should_retry,
        }

    def attempt_send(self, notification_id: int, message: Message, key: str) -> int:
        """One try, as the step runs it, counted on the row first; returns this run's try number."""
        attempt = current_attempt()
        count_attempt(notification_id)
        try:
            self.send(message, key)
        except Exception as error:
            raise DeliveryError(
                type(error).__name__, str(error), attempt, is_transient(error)
            ) from error
        return attempt

    def run_delivery(self, message: Message) -> str:
        """The body of a delivery workflow: record, send with retries, record the outcome.
        Returns the final status and never raises for a failed send."""
        key = dedup_key(self.name, message)
        notification_id, status = record_notification(
            self.name, message, key, NotificationStatus.queued
        )
        if status == NotificationStatus.sent:
            return status
        try:
            DBOS.run_step(self.step_options(), self.attempt_send, notification_id, message, key)
        except (DeliveryError, MaxStepRetriesExceeded) as error:
            failure = failure_of(error)
            mark_failed(notification_id, self.name, message, key, failure, DBOS.workflow_id)
            log.warning(
                "notification failed",
                extra={"channel": self.name, "dedup_key": key, "error": str(failure)},
            )
            return NotificationStatus.failed.value
        mark_sent(notification_id)
        return NotificationStatus.sent.value


@DBOS.dbos_class()
class SlackChannel(Channel):
    """Slack incoming webhook: one POST of JSON per message."""

    name = "slack"

    def is_active(self) -> bool:
        return bool(self.settings.slack_webhook_url)

    def send(self, message: Message, key: str) -> None:
        url = self.settings.slack_webhook_url
        if not url:
            raise RuntimeError("SLACK_WEBHOOK_URL is not set")
        post_to_slack(url, message, key, timeout=self.settings.notify_timeout_seconds)

    @DBOS.workflow()
    def deliver(self, message: Message) -> str:
        return self.run_delivery(message)


@DBOS.dbos_class()
class EmailChannel(Channel):
    """Email over SMTP, with STARTTLS and login when configured."""

    name = "email"

    def is_active(self) -> bool:
        return bool(self.settings.smtp_host)

    def send(self, message: Message, key: str) -> None:
        send_email(self.settings, message, key)

    @DBOS.workflow()
    def deliver(self, message: Message) -> str:
        return self.run_delivery(message)


@DBOS.dbos_class()
class OutboxChannel(Channel):
    """The built-in outbox: storing the message is delivering it (admins read it at
    /notifications), so its workflow is one transaction."""

    name = "outbox"

    @DBOS.workflow()
    def deliver(self, message: Message) -> str:
        key = dedup_key(self.name, message)
        _, status = record_notification(self.name, message, key, NotificationStatus.sent)
        return status


SLACK = SlackChannel()
EMAIL = EmailChannel()
OUTBOX = OutboxChannel()
CHANNELS: dict[str, Channel] = {channel.name: channel for channel in (SLACK, EMAIL, OUTBOX)}


def configure_channels(settings: Settings) -> None:
    """Give every channel this start's settings; call before `DBOS.launch()` so recovered
    deliveries see them too."""
    for channel in CHANNELS.values():
        channel.configure(settings)


def active_channel_names() -> list[str]:
    """Slack when a webhook is set, email when an SMTP host is set, the outbox always."""
    return [name for name, channel in CHANNELS.items() if channel.is_active()]


def request_link(request_id: int) -> str:
    """The absolute link to a request's page under this start's BASE_URL."""
    return request_url(OUTBOX.settings.base_url, request_id)


def decision_links(request_id: int | None, approver: str, expires_at: float) -> tuple[tuple[str, str], ...]:
    """An approver's signed approve and reject links for a request, under this start's
    BASE_URL and secret; the same for the same inputs, so a replayed workflow's message is unchanged."""
    if request_id is None:
        return ()
    settings = OUTBOX.settings
    return decision_urls(settings.session_secret, settings.base_url, request_id, approver, expires_at)


def send_notifications(messages: list[Message]) -> list[str]:
    """Enqueue the delivery of each message on each active channel; returns the delivery
    workflow ids at once, without waiting for any delivery.

    Call it from a (sync) DBOS workflow. The active channels are read in a step, so a
    replay enqueues on the channels the first run chose even if the settings changed
    since; each delivery's id comes from its dedup key, so replays and repeated calls
    never enqueue a message twice.
    """
    names = DBOS.run_step({"name": "notify.active_channels"}, active_channel_names)
    return [CHANNELS[name].enqueue(message) for message in messages for name in names]
