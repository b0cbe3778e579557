from django.urls import path

from chat_app import apis, subtask_apis

app_name = "chat"

urlpatterns = [
    path("messages/", apis.MessageListCreateApi.as_view(), name="messages"),
    path("batches/", apis.BatchCreateApi.as_view(), name="batches"),
    path("questions/pending/", apis.PendingQuestionsApi.as_view(), name="questions-pending"),
    path("questions/<uuid:question_id>/answer/", apis.QuestionAnswerApi.as_view(), name="question-answer"),
    path("conversations/<str:conversation_id>/read/", apis.ConversationReadApi.as_view(), name="conversation-read"),
    path("discord/", apis.DiscordInboundApi.as_view(), name="discord-inbound"),
    path("slack/", apis.SlackCommandApi.as_view(), name="slack-command"),
    path("notification-channels/", apis.NotificationChannelListCreateApi.as_view(), name="notification-channels"),
    path(
        "notification-channels/<uuid:channel_id>/",
        apis.NotificationChannelDeleteApi.as_view(),
        name="notification-channel",
    ),
    path("agents/", apis.AgentsActivityApi.as_view(), name="agents-activity"),
    path("agent/questions/", apis.AgentQuestionCreateApi.as_view(), name="agent-question-create"),
    path("agent/questions/<uuid:question_id>/", apis.agent_question_wait, name="agent-question-wait"),
    path("agent/progress/", apis.AgentProgressApi.as_view(), name="agent-progress"),
    path("agent/subtasks/", subtask_apis.AgentSubtaskCreateApi.as_view(), name="agent-subtask-create"),
    path("agent/subtasks/wait/", subtask_apis.AgentSubtasksWaitApi.as_view(), name="agent-subtasks-wait"),
]
