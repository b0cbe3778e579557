"""Notifications leave the browser, through a real Celery worker (the
``guardians`` queue) to servers on this machine: a webhook receiver (a local
HTTP server that fails its first request), Slack and Discord stand-ins (local
HTTP servers receiving what their incoming webhooks receive) and a real SMTP
server (aiosmtpd). Replies come back through the Discord relay and a Slack
slash command signed as Slack signs it."""

import email
import hashlib
import hmac
import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from chat_app import notifications, selectors
from chat_app.apis import ERR_SLACK_SIGNATURE
from chat_app.models import ChannelKind, NotificationDelivery, NotificationEvent, NotificationStatus
from chat_app.services import question_ask
from queue_app import lifecycle
from tasks_app.services import task_create
from tests.api.conftest import token_client
from tests.conftest import TestDatabaseProcess as DatabaseProcess
from tests.conftest import wait_for
from tests.faults.services import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Receiver:
    """A local HTTP server that records every POST; the first ``fail_first``
    requests get a 500."""

    def __init__(self, fail_first=0):
        self.requests = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                receiver.requests.append({"headers": headers, "body": body})
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def servers():
    made = {"webhook": Receiver(fail_first=1), "slack": Receiver(), "discord": Receiver()}
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    made["smtp"], made["mailbox"] = smtp, mailbox
    yield made
    smtp.stop()
    for name in ("webhook", "slack", "discord"):
        made[name].close()


@pytest.fixture
def notifier(transactional_db, clean_broker, tmp_path, servers):
    process = DatabaseProcess(
        ["celery", "-A", "agentvine", "worker", "-Q", "guardians", "-c", "1", "-n", "notify@%h"]
        + ["--without-gossip", "--without-mingle", "-l", "info"],
        log_path=tmp_path / "notifier.log",
        extra_env={
            "AGENTVINE_NOTIFY_BACKOFF_SECONDS": "0.2",
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(servers["smtp"].port),
            "AGENTVINE_PUBLIC_URL": "https://agentvine.example",
        },
    )
    wait_for(lambda: "ready." in process.output(), message="the notification worker")
    yield process
    process.stop()


def test_question_and_failure_reach_webhook_slack_discord_and_email_and_replies_answer(
    notifier, servers, operator, worker, settings
):
    settings.AGENTVINE_PUBLIC_URL = "https://agentvine.example"
    channels = {
        kind: notifications.notification_channel_create(
            owner=operator,
            name=kind,
            kind=kind,
            target=servers[kind].url if kind != ChannelKind.EMAIL else "ops@example.com",
            events=[NotificationEvent.QUESTION_ASKED, NotificationEvent.TASK_FAILED],
        )
        for kind in (ChannelKind.WEBHOOK, ChannelKind.SLACK, ChannelKind.DISCORD, ChannelKind.EMAIL)
    }
    task = task_create(title="Migrate <the> database", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    question = question_ask(work_order=work_order, execution=execution, text="Drop table @everyone <!here>?")
    link = f"https://agentvine.example/tasks/{task.id}/"

    # Webhook: refused once (500), delivered on the retry, signed both times.
    webhook = wait_for(lambda: len(servers["webhook"].requests) >= 2 and servers["webhook"].requests)
    for request in webhook:
        headers, body = request["headers"], request["body"]
        signed = f"{headers['x-agentvine-timestamp']}.".encode() + body
        expected = "sha256=" + hmac.new(channels["webhook"].secret.encode(), signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-agentvine-signature"], expected)
        assert headers["x-agentvine-event"] == "question_asked"
    payload = json.loads(webhook[-1]["body"])
    assert payload["text"] == "Drop table @everyone <!here>?"
    assert payload["question_id"] == str(question.id) and payload["link"] == link
    delivery = wait_for(
        lambda: NotificationDelivery.objects.filter(
            channel=channels["webhook"], event="question_asked", status=NotificationStatus.DELIVERED
        ).first()
    )
    assert delivery.attempts == 2
    assert [entry["status_code"] for entry in delivery.log] == [500, 200]

    # Discord and Slack get the text and a link, with no mention or link injected.
    discord = json.loads(wait_for(lambda: servers["discord"].requests)[0]["body"])
    assert "Drop table @everyone <!here>?" in discord["content"] and link in discord["content"]
    assert discord["allowed_mentions"] == {"parse": []}
    slack = json.loads(wait_for(lambda: servers["slack"].requests)[0]["body"])
    assert "Drop table @everyone &lt;!here&gt;?" in slack["text"] and f"<{link}|Open in AgentVine>" in slack["text"]

    # Email through Django's SMTP backend.
    mail = wait_for(lambda: servers["mailbox"].messages)[0]
    assert mail["Subject"] == "An agent asks: Migrate <the> database" and mail["To"] == "ops@example.com"
    assert link in mail.get_payload()

    # A reply in Discord, relayed by the bot, answers as the Discord person.
    from workers_app.services import api_token_create

    bot = token_client(api_token_create(user=operator, name="discord bot")[1])
    reply = bot.post(
        "/api/v1/chat/discord/",
        {
            "discord_user_id": "4242",
            "discord_username": "ada",
            "conversation_id": str(task.id),
            "text": "keep it",
            "question_id": str(question.id),
        },
        format="json",
    )
    assert reply.status_code == 201, reply.content
    question.refresh_from_db()
    assert question.answer_text == "keep it" and question.answered_by.display_name == "ada"
    assert question.answered_by.key == "discord:4242"

    # The run fails for good: every channel hears of it.
    lifecycle.work_order_fail(work_order=work_order, worker=worker, execution=execution, error="boom", retryable=False)
    wait_for(lambda: NotificationDelivery.objects.filter(event="task_failed", status="delivered").count() == 4)


def _slack_signed(secret, body, timestamp=None):
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": timestamp, "HTTP_X_SLACK_SIGNATURE": signature}


def test_a_signed_slack_command_answers_as_the_slack_person_and_a_forged_one_is_refused(
    client, operator, worker, settings
):
    settings.AGENTVINE_SLACK_SIGNING_SECRET = "slack-signing-secret"
    task = task_create(title="ask", created_by=operator)
    work_order = lifecycle.work_order_claim(worker=worker, work_order_id=task.work_orders.get().id)
    work_order, execution = lifecycle.work_order_start(work_order=work_order, worker=worker)
    question = question_ask(work_order=work_order, execution=execution, text="Ship it?")
    body = urllib.parse.urlencode({"user_id": "U123", "user_name": "grace", "text": f"{question.id} yes, ship"})
    form = "application/x-www-form-urlencoded"

    forged = client.post("/api/v1/chat/slack/", body, content_type=form, **_slack_signed("wrong", body))
    stale = client.post(
        "/api/v1/chat/slack/",
        body,
        content_type=form,
        **_slack_signed(settings.AGENTVINE_SLACK_SIGNING_SECRET, body, 1),
    )
    assert forged.status_code == stale.status_code == 403
    assert forged.json() == {"detail": ERR_SLACK_SIGNATURE}
    assert selectors.pending_questions().filter(pk=question.pk).exists()

    signed = _slack_signed(settings.AGENTVINE_SLACK_SIGNING_SECRET, body)
    answered = client.post("/api/v1/chat/slack/", body, content_type=form, **signed)

    assert answered.status_code == 200, answered.content
    assert answered.json()["text"] == "Answered as grace."
    question.refresh_from_db()
    assert question.answer_text == "yes, ship" and question.answered_by.key == "slack:U123"
