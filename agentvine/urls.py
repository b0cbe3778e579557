from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path, re_path
from django.views.generic import RedirectView

from agentvine import health
from agentvine import metrics as metrics_views
from chat_app import views as chat_views
from tasks_app import changes_views, graph_views, review_views
from tasks_app import views as task_views
from workers_app import views as worker_views

UUID_PATTERN = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

urlpatterns = [
    # Probes and Prometheus: agentvine/health.py (answered before host validation), agentvine/metrics.py.
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_views.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # Browsers ask for it on every page without a <link rel="icon"> (the admin's).
    path("favicon.ico", RedirectView.as_view(url=static("agentvine/favicon.svg"), permanent=True)),
    path("api/v1/chat/", include("chat_app.urls")),
    path("api/v1/", include("agentvine.api_urls")),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", task_views.overview, name="overview"),
    path("tasks/", task_views.task_list, name="task-list"),
    path("tasks/bulk/", task_views.task_bulk, name="task-bulk"),
    path("tasks/<uuid:task_id>/", task_views.task_detail, name="task-detail"),
    path("tasks/<uuid:task_id>/answer/<uuid:question_id>/", chat_views.question_answer, name="question-answer"),
    path("tasks/<uuid:task_id>/message/", chat_views.task_message, name="task-message"),
    path("messages/", chat_views.message_list, name="message-list"),
    path("tasks/<uuid:task_id>/graph/", graph_views.task_graph, name="task-graph"),
    path("tasks/<uuid:task_id>/changes/", changes_views.task_changes_page, name="task-changes"),
    path("tasks/<uuid:task_id>/changes/patch/", changes_views.task_changes_patch, name="task-changes-patch"),
    path("tasks/<uuid:task_id>/skip/<uuid:parent_id>/", graph_views.dependency_skip, name="dependency-skip"),
    path("schedules/", graph_views.schedule_list, name="schedule-list"),
    path("schedules/<int:schedule_id>/<str:action>/", graph_views.schedule_action, name="schedule-action"),
    path("tasks/<uuid:task_id>/review/", review_views.task_review, name="task-review"),
    path("tasks/<uuid:task_id>/<str:action>/", task_views.task_action, name="task-action"),
    re_path(rf"^git/(?P<task_id>{UUID_PATTERN})\.git/(?P<git_path>.+)$", task_views.results_git, name="results-git"),
    path("workers/", worker_views.worker_list, name="worker-list"),
    path("sessions/", worker_views.session_list, name="session-list"),
    path("sessions/<uuid:session_id>/terminate/", worker_views.session_terminate, name="session-terminate"),
]
