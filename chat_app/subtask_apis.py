"""Endpoints a running agent (its per-run token) uses to make subtasks and wait for them."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response

from chat_app import subtasks
from chat_app.apis import AgentApi


class SubtaskCreateInput(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="At most AGENTVINE_MAX_PROMPT_CHARS with the title."
    )
    depends_on = serializers.ListField(
        child=serializers.UUIDField(),
        required=False,
        default=list,
        max_length=100,
        help_text="Other subtasks of this task that must complete first.",
    )


class SubtaskOutput(serializers.Serializer):
    id = serializers.UUIDField()
    title = serializers.CharField()
    status = serializers.CharField()


class AgentSubtaskCreateApi(AgentApi):
    """POST {title, description, depends_on}: a subtask of the agent's task."""

    @extend_schema(request=SubtaskCreateInput, responses={201: SubtaskOutput}, operation_id="agent_subtask_create")
    def post(self, request):
        data = SubtaskCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        child = subtasks.subtask_create(
            work_order=request.user.work_order, execution=request.user.execution, **data.validated_data
        )
        return Response(SubtaskOutput(child).data, status=status.HTTP_201_CREATED)


class AgentSubtasksWaitApi(AgentApi):
    """POST: wait for this task's subtasks. ``waiting``: end the turn now; the
    agent is resumed with their summaries once every one has ended."""

    @extend_schema(
        request=None,
        responses=inline_serializer(
            "AgentSubtasksWait",
            {
                "waiting": serializers.BooleanField(),
                "pending": serializers.IntegerField(),
                "summary": serializers.CharField(),
            },
        ),
        operation_id="agent_subtasks_wait",
    )
    def post(self, request):
        return Response(subtasks.subtasks_wait(work_order=request.user.work_order))
