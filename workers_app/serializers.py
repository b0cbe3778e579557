"""Explicit input and output shapes of the workers, sessions and token APIs."""

from rest_framework import serializers

from agentvine.serializers import ModelOutputSerializer
from workers_app.models import AgentSession, SessionStatus, Worker, WorkerStatus


class WorkerRegisterInput(serializers.Serializer):
    name = serializers.RegexField(r"^[\w.@:+-]+$", max_length=200)
    hostname = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")


class WorkerOutput(ModelOutputSerializer):
    class Meta:
        model = Worker
        fields = ["id", "name", "hostname", "status", "last_heartbeat_at", "current_work_order", "created_at"]
        read_only_fields = fields


class WorkerRegisteredOutput(WorkerOutput):
    token = serializers.SerializerMethodField(help_text="The worker's API token. Shown only once.")

    class Meta(WorkerOutput.Meta):
        fields = [*WorkerOutput.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, worker) -> str:
        return self.context["token"]


class WorkerListParams(serializers.Serializer):
    status = serializers.ChoiceField(choices=WorkerStatus.choices, required=False)
    limit = serializers.IntegerField(min_value=1, max_value=10**6, required=False)
    offset = serializers.IntegerField(min_value=0, max_value=10**9, required=False)


class HeartbeatOutput(serializers.Serializer):
    ok = serializers.BooleanField()
    status = serializers.CharField()
    leases = serializers.DictField(
        child=serializers.DateTimeField(),
        help_text="Execution id → lease expiry of each live run of this worker; a run missing here is fenced.",
    )
    fence_seconds = serializers.FloatField()


class SessionCreateInput(serializers.Serializer):
    session_id = serializers.CharField(max_length=200)
    task = serializers.UUIDField(required=False, allow_null=True)
    worker = serializers.UUIDField(required=False, allow_null=True, help_text="Operators only; a worker is itself.")


class SessionListParams(serializers.Serializer):
    status = serializers.ChoiceField(choices=SessionStatus.choices, required=False)
    task = serializers.UUIDField(required=False)
    limit = serializers.IntegerField(min_value=1, max_value=10**6, required=False)
    offset = serializers.IntegerField(min_value=0, max_value=10**9, required=False)


class SessionActivityInput(serializers.Serializer):
    session_id = serializers.CharField(
        max_length=200,
        required=False,
        help_text="The id the agent gave its own conversation (codex picks one): the next run resumes that one.",
    )
    execution = serializers.UUIDField(
        required=False, allow_null=True, help_text="The run reporting it: refused (409 fenced) once not live."
    )


class SessionTerminateInput(serializers.Serializer):
    reason = serializers.CharField(max_length=200, required=False, default="terminated")


class SessionOutput(ModelOutputSerializer):
    class Meta:
        model = AgentSession
        fields = [
            "id",
            "session_id",
            "task",
            "worker",
            "status",
            "last_activity_at",
            "created_at",
            "terminated_at",
            "termination_reason",
        ]
        read_only_fields = fields


class ApiTokenCreateInput(serializers.Serializer):
    name = serializers.CharField(max_length=100)


class ApiTokenOutput(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    token = serializers.CharField(help_text="The token. Shown only once.")
