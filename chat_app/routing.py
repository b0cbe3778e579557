from django.urls import path

from chat_app import consumers

websocket_urlpatterns = [
    path("ws/activity/", consumers.ActivityConsumer.as_asgi()),
    path("ws/attention/", consumers.AttentionConsumer.as_asgi()),
    path("ws/tasks/<uuid:task_id>/", consumers.TaskConsumer.as_asgi()),
    path("ws/conversations/<str:conversation_id>/", consumers.ConversationConsumer.as_asgi()),
]
