"""Chat HTTP API under /api/v1/chat/: history, sending, batches, questions,
Discord and Slack relays, and the endpoints a running agent calls with its token.

Operator views use the default authentication classes from settings; agent
views accept only the per-work-order agent token.
"""

import hashlib
import hmac
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_serializer, inline_serializer
from rest_framework import serializers, status
from rest_framework.generics import ListAPIView
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from agentvine import shutdown, wakeups
from agentvine.api import IdempotentWritesMixin
from agentvine.errors import NotFound
from agentvine.serializers import ModelOutputSerializer
from chat_app import notifications, selectors, services
from chat_app.authentication import ERR_BAD_AGENT_TOKEN, AgentTokenAuthentication, IsAgent, agent_from_header
from chat_app.models import (
    ChannelKind,
    ChatMessage,
    DeliveryStatus,
    MessageKind,
    NotificationChannel,
    NotificationEvent,
    SenderProfile,
)
from queue_app.models import ACTIVE_STATUSES

ERR_ONE_DESTINATION = "give either conversation_id or to"
ERR_ONE_TASK = "give either task_id or to"
ERR_QUESTION_NOT_YOURS = "question belongs to another work order"
ERR_WORK_ENDED = "the work order ended before the question was answered"
ERR_SERVER_STOPPING = "the server is restarting: ask again"
MAX_WAIT_SECONDS = 60.0
# A waiting agent's question is looked at again when its answer is announced
# (agentvine/wakeups.py), or this often when no signal comes.
ANSWER_LOOK_SECONDS = 1.0
STOPPING_CHECK_SECONDS = 0.1
# What a waiting agent is told to wait before asking again when the server stops.
STOPPING_RETRY_AFTER_SECONDS = 2


class SenderSerializer(ModelOutputSerializer):
    class Meta:
        model = SenderProfile
        fields = ["id", "key", "kind", "display_name", "discord_username", "discord_user_id"]


class MessageOutputSerializer(ModelOutputSerializer):
    sender = SenderSerializer()
    recipient = SenderSerializer(allow_null=True)
    answered_by = SenderSerializer(allow_null=True)

    class Meta:
        model = ChatMessage
        fields = [
            "id",
            "conversation_id",
            "kind",
            "text",
            "sender",
            "recipient",
            "task_id",
            "work_order_id",
            "parent_message_id",
            "inbox_position",
            "batch_id",
            "status",
            "failure_reason",
            "created_at",
            "queued_at",
            "delivered_at",
            "failed_at",
            "answered_at",
            "answered_by",
            "answer_text",
        ]


class HistoryFilterSerializer(serializers.Serializer):
    sender = serializers.CharField(required=False)
    recipient = serializers.CharField(required=False)
    task = serializers.UUIDField(required=False)
    work_order = serializers.UUIDField(required=False)
    conversation = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=DeliveryStatus.choices, required=False)
    kind = serializers.ChoiceField(choices=MessageKind.choices, required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    q = serializers.CharField(required=False)


class MessageListCreateApi(IdempotentWritesMixin, ListAPIView):
    """GET: filtered, paginated history (oldest first). POST: an operator writes.

    POST takes ``conversation_id``, or ``to``: a task id, an agent session or a
    worker name, resolved to that agent's task conversation.
    """

    serializer_class = MessageOutputSerializer

    @extend_schema_serializer(component_name="MessageCreateInput")
    class InputSerializer(serializers.Serializer):
        conversation_id = serializers.CharField(max_length=200, required=False)
        to = serializers.CharField(max_length=200, required=False)
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)

        def validate(self, attrs):
            if bool(attrs.get("conversation_id")) == bool(attrs.get("to")):
                raise serializers.ValidationError(ERR_ONE_DESTINATION)
            return attrs

    def get_queryset(self):
        filters = HistoryFilterSerializer(data=self.request.query_params)
        filters.is_valid(raise_exception=True)
        data = dict(filters.validated_data)
        data["text"] = data.pop("q", None)
        return selectors.message_history(**data)

    @extend_schema(request=InputSerializer, responses={201: MessageOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        target = values.pop("to", None)
        if target:
            values["conversation_id"] = str(selectors.task_for_target(target=target).pk)
        message = services.operator_message_send(user=request.user, **values)
        return Response(MessageOutputSerializer(message).data, status=status.HTTP_201_CREATED)


class BatchCreateApi(IdempotentWritesMixin, APIView):
    """POST {task_id or to, texts: [...]}: delivered to the task's agent whole and in order."""

    @extend_schema_serializer(component_name="MessageBatchInput")
    class InputSerializer(serializers.Serializer):
        task_id = serializers.UUIDField(required=False)
        to = serializers.CharField(max_length=200, required=False)
        texts = serializers.ListField(child=serializers.CharField(trim_whitespace=False, allow_blank=True))

        def validate(self, attrs):
            if bool(attrs.get("task_id")) == bool(attrs.get("to")):
                raise serializers.ValidationError(ERR_ONE_TASK)
            return attrs

    @extend_schema(request=InputSerializer, responses={201: MessageOutputSerializer(many=True)})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if data.validated_data.get("to"):
            task = selectors.task_for_target(target=data.validated_data["to"])
        else:
            task = selectors.task_get(task_id=data.validated_data["task_id"])
        messages = services.operator_batch_send(user=request.user, task=task, texts=data.validated_data["texts"])
        return Response(MessageOutputSerializer(messages, many=True).data, status=status.HTTP_201_CREATED)


class QuestionAnswerApi(IdempotentWritesMixin, APIView):
    """POST {text}: answer a pending question; 409 if someone answered first."""

    @extend_schema_serializer(component_name="QuestionAnswerInput")
    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)

    @extend_schema(request=InputSerializer, responses={201: MessageOutputSerializer})
    def post(self, request, question_id):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        question = selectors.question_get(question_id=question_id)
        answer = services.question_answer(
            question=question,
            answer_text=data.validated_data["text"],
            answered_by=services.operator_profile(user=request.user),
        )
        return Response(MessageOutputSerializer(answer).data, status=status.HTTP_201_CREATED)


class PendingQuestionsApi(APIView):
    """GET: questions waiting for a human, oldest first, and their count."""

    @extend_schema(
        responses=inline_serializer(
            "PendingQuestions",
            {"count": serializers.IntegerField(), "results": MessageOutputSerializer(many=True)},
        )
    )
    def get(self, request):
        questions = list(selectors.pending_questions()[:200])
        return Response(
            {
                "count": selectors.pending_question_count(),
                "results": MessageOutputSerializer(questions, many=True).data,
            }
        )


class ConversationReadApi(IdempotentWritesMixin, APIView):
    @extend_schema(
        request=None,
        responses=inline_serializer(
            "ConversationState",
            {
                "unread": serializers.IntegerField(),
                "pending_questions": serializers.IntegerField(),
                "needs_answer": serializers.BooleanField(),
            },
        ),
    )
    def post(self, request, conversation_id):
        services.conversation_mark_read(conversation_id=conversation_id)
        return Response(selectors.conversation_state(conversation_id=conversation_id))


class DiscordInboundApi(IdempotentWritesMixin, APIView):
    """POST a message relayed by a Discord bot, attributed to the Discord person."""

    @extend_schema_serializer(component_name="DiscordMessageInput")
    class InputSerializer(serializers.Serializer):
        discord_user_id = serializers.CharField(max_length=32)
        discord_username = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        conversation_id = serializers.CharField(max_length=200)
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)
        # A reply to a question's notification: the text answers it.
        question_id = serializers.UUIDField(required=False, allow_null=True, default=None)

    @extend_schema(request=InputSerializer, responses={201: MessageOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.discord_message_receive(**data.validated_data)
        return Response(MessageOutputSerializer(message).data, status=status.HTTP_201_CREATED)


class SlackCommandApi(APIView):
    """POST a Slack slash command (``/agentvine <question id> <answer>``),
    signed by Slack with the app's signing secret: the answer, as that Slack
    person. Slack cannot send an AgentVine token: the signature is the
    authentication (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="SlackCommandInput")
    class InputSerializer(serializers.Serializer):
        user_id = serializers.CharField(max_length=32)
        user_name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)

    @extend_schema(
        request={"application/x-www-form-urlencoded": InputSerializer},
        responses={
            200: inline_serializer(
                "SlackCommandReply", {"response_type": serializers.CharField(), "text": serializers.CharField()}
            )
        },
    )
    def post(self, request):
        if not slack_request_verified(request):
            return Response({"detail": ERR_SLACK_SIGNATURE}, status=status.HTTP_403_FORBIDDEN)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        answer = services.slack_command_receive(
            slack_user_id=data.validated_data["user_id"],
            slack_username=data.validated_data["user_name"],
            text=data.validated_data["text"],
        )
        return Response({"response_type": "in_channel", "text": f"Answered as {answer.sender.display_name}."})


class NotificationChannelOutputSerializer(ModelOutputSerializer):
    class Meta:
        model = NotificationChannel
        fields = ["id", "name", "kind", "target", "events", "enabled", "secret", "created_at"]


class NotificationChannelListCreateApi(APIView):
    """GET: the signed-in operator's notification channels. POST {name, kind,
    target, events}: subscribe (``secret`` signs webhook deliveries)."""

    @extend_schema_serializer(component_name="NotificationChannelInput")
    class InputSerializer(serializers.Serializer):
        name = serializers.CharField(max_length=100)
        kind = serializers.ChoiceField(choices=ChannelKind.choices)
        target = serializers.CharField(max_length=500)
        events = serializers.ListField(child=serializers.ChoiceField(choices=NotificationEvent.choices))

    @extend_schema(responses={200: NotificationChannelOutputSerializer(many=True)})
    def get(self, request):
        channels = NotificationChannel.objects.filter(owner=request.user)
        return Response(NotificationChannelOutputSerializer(channels, many=True).data)

    @extend_schema(request=InputSerializer, responses={201: NotificationChannelOutputSerializer})
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        channel = notifications.notification_channel_create(owner=request.user, **data.validated_data)
        return Response(NotificationChannelOutputSerializer(channel).data, status=status.HTTP_201_CREATED)


class NotificationChannelDeleteApi(APIView):
    """DELETE: unsubscribe one of the signed-in operator's channels."""

    @extend_schema(responses={204: None})
    def delete(self, request, channel_id):
        notifications.notification_channel_delete(owner=request.user, channel_id=channel_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


ERR_SLACK_SIGNATURE = "not signed by Slack with this installation's signing secret"
# Slack's replay window for a signed request.
SLACK_MAX_AGE_SECONDS = 300


def slack_request_verified(request):
    """Slack's signing scheme: ``v0=`` + HMAC-SHA256(secret, ``v0:<timestamp>:<raw body>``)."""
    secret = settings.AGENTVINE_SLACK_SIGNING_SECRET
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not secret or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > SLACK_MAX_AGE_SECONDS:
        return False
    expected = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:".encode() + request.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


class AgentsActivityApi(APIView):
    """GET: every agent slot, what it is doing, since when, its last output."""

    @extend_schema(responses={200: OpenApiResponse(description="{results: [agent activity entries]}")})
    def get(self, request):
        return Response({"results": selectors.agents_activity()})


# --- endpoints for the running agent (per-work-order token) ---------------------------


class AgentApi(APIView):
    authentication_classes = [AgentTokenAuthentication]
    permission_classes = [IsAgent]

    @extend_schema_serializer(component_name="AgentTextInput")
    class InputSerializer(serializers.Serializer):
        text = serializers.CharField(trim_whitespace=False, allow_blank=True)


class AgentQuestionCreateApi(AgentApi):
    """POST {text}: the agent asks; poll the wait endpoint for the answer."""

    @extend_schema(
        request=AgentApi.InputSerializer,
        responses={
            201: inline_serializer(
                "AgentQuestionCreated", {"question_id": serializers.UUIDField(), "status": serializers.CharField()}
            )
        },
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        question = services.question_ask(
            work_order=request.user.work_order,
            execution=request.user.execution,
            text=data.validated_data["text"],
            source="command",
        )
        return Response({"question_id": str(question.id), "status": "pending"}, status=status.HTTP_201_CREATED)


class AgentProgressApi(AgentApi):
    @extend_schema(
        request=AgentApi.InputSerializer,
        responses={201: inline_serializer("AgentProgressCreated", {"message_id": serializers.UUIDField()})},
    )
    def post(self, request):
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        message = services.progress_report(work_order=request.user.work_order, text=data.validated_data["text"])
        return Response({"message_id": str(message.id)}, status=status.HTTP_201_CREATED)


def _agent_question_poll(*, principal, question_id):
    """One look at the question for the agent that asked it."""
    try:
        question = selectors.question_get(question_id=question_id)
    except NotFound:
        return 404, {"detail": selectors.ERR_QUESTION_NOT_FOUND}
    if question.work_order_id != principal.work_order.pk:
        return 404, {"detail": ERR_QUESTION_NOT_YOURS}
    answered_at, answer_text, work_order_status = selectors.question_state(question_id=question.pk)
    if answered_at is not None:
        services.answer_mark_delivered(question=question)
        return 200, {"status": "answered", "answer": answer_text}
    if work_order_status not in ACTIVE_STATUSES:
        return 410, {"status": "closed", "detail": ERR_WORK_ENDED}
    return 202, {"status": "pending"}


@csrf_exempt
@require_GET
async def agent_question_wait(request, question_id):
    """GET ?wait=N: long-poll until the question is answered (200), or N seconds pass (202).

    Each look is one short query, between looks the view sleeps in the event
    loop. The middleware chain is synchronous (agentvine/asgi_handler.py), so
    the request's own thread waits for the view meanwhile: a waiting agent
    costs daphne one idle thread. When the server begins to stop
    (agentvine/shutdown.py) the wait ends at once with 503 and Retry-After:
    the question lives in Postgres, the agent asks again after the restart.
    """
    if shutdown.stopping():
        return _server_stopping()
    principal = await sync_to_async(agent_from_header)(request.headers.get("Authorization", ""))
    if principal is None:
        return JsonResponse({"detail": ERR_BAD_AGENT_TOKEN}, status=401)
    try:
        wait = min(max(float(request.GET.get("wait", settings.AGENTVINE_ASK_POLL_SECONDS)), 0.0), MAX_WAIT_SECONDS)
    except ValueError:
        wait = settings.AGENTVINE_ASK_POLL_SECONDS
    deadline = time.monotonic() + wait
    async with wakeups.QuestionSignal(question_id) as answered:
        while True:
            code, body = await sync_to_async(_agent_question_poll)(principal=principal, question_id=question_id)
            if code != 202 or time.monotonic() >= deadline:
                return JsonResponse(body, status=code)
            # Look again as soon as the answer is announced, or after the
            # fallback interval (a lost signal, a closed work order); the
            # short slices keep noticing a server that begins to stop.
            look_at = min(time.monotonic() + ANSWER_LOOK_SECONDS, deadline)
            while (remaining := look_at - time.monotonic()) > 0:
                if shutdown.stopping():
                    return _server_stopping()
                if await answered.wait(min(remaining, STOPPING_CHECK_SECONDS)):
                    break
            if shutdown.stopping():
                return _server_stopping()


def _server_stopping():
    response = JsonResponse({"status": "pending", "detail": ERR_SERVER_STOPPING}, status=503)
    response["Retry-After"] = str(STOPPING_RETRY_AFTER_SECONDS)
    return response
