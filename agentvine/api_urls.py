"""Routes of the REST API, mounted under /api/v1/."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from agentvine.headers import API_DOCS_CONTENT_SECURITY_POLICY, with_content_security_policy
from queue_app import apis as queue_apis
from tasks_app import apis as tasks_apis
from tasks_app import changes_apis, schedule_apis
from workers_app import apis as workers_apis

urlpatterns = [
    path("tasks/", tasks_apis.TaskListCreateApi.as_view(), name="api-tasks"),
    path("tasks/batch/", tasks_apis.TaskBatchCreateApi.as_view(), name="api-tasks-batch"),
    path("tasks/<uuid:task_id>/", tasks_apis.TaskDetailApi.as_view(), name="api-task"),
    path("tasks/<uuid:task_id>/cancel/", tasks_apis.TaskCancelApi.as_view(), name="api-task-cancel"),
    path("tasks/<uuid:task_id>/retry/", tasks_apis.TaskRetryApi.as_view(), name="api-task-retry"),
    path("tasks/<uuid:task_id>/dependencies/", tasks_apis.TaskDependenciesApi.as_view(), name="api-task-dependencies"),
    path(
        "tasks/<uuid:task_id>/dependencies/<uuid:parent_id>/skip/",
        tasks_apis.TaskDependencySkipApi.as_view(),
        name="api-task-dependency-skip",
    ),
    path("tasks/<uuid:task_id>/review/", tasks_apis.TaskReviewApi.as_view(), name="api-task-review"),
    path("tasks/<uuid:task_id>/tree/", tasks_apis.TaskTreeApi.as_view(), name="api-task-tree"),
    path("tasks/<uuid:task_id>/changes/", changes_apis.TaskChangesApi.as_view(), name="api-task-changes"),
    path("schedules/", schedule_apis.ScheduleListCreateApi.as_view(), name="api-schedules"),
    path("schedules/<int:schedule_id>/", schedule_apis.ScheduleDetailApi.as_view(), name="api-schedule"),
    path("workers/", workers_apis.WorkerListRegisterApi.as_view(), name="api-workers"),
    path("workers/<uuid:worker_id>/", workers_apis.WorkerDetailApi.as_view(), name="api-worker"),
    path("workers/<uuid:worker_id>/heartbeat/", workers_apis.WorkerHeartbeatApi.as_view(), name="api-worker-heartbeat"),
    path("sessions/", workers_apis.SessionListCreateApi.as_view(), name="api-sessions"),
    path("sessions/<uuid:session_pk>/", workers_apis.SessionDetailApi.as_view(), name="api-session"),
    path(
        "sessions/<uuid:session_pk>/activity/", workers_apis.SessionActivityApi.as_view(), name="api-session-activity"
    ),
    path(
        "sessions/<uuid:session_pk>/terminate/",
        workers_apis.SessionTerminateApi.as_view(),
        name="api-session-terminate",
    ),
    path("queue/", queue_apis.QueueStatusApi.as_view(), name="api-queue"),
    path("spend/", queue_apis.SpendApi.as_view(), name="api-spend"),
    path("queue/claim/", queue_apis.WorkOrderClaimApi.as_view(), name="api-queue-claim"),
    path("queue/work-orders/", queue_apis.WorkOrderEnqueueApi.as_view(), name="api-work-orders"),
    path("queue/work-orders/<uuid:work_order_id>/", queue_apis.WorkOrderDetailApi.as_view(), name="api-work-order"),
    path(
        "queue/work-orders/<uuid:work_order_id>/start/",
        queue_apis.WorkOrderStartApi.as_view(),
        name="api-work-order-start",
    ),
    path(
        "queue/work-orders/<uuid:work_order_id>/complete/",
        queue_apis.WorkOrderCompleteApi.as_view(),
        name="api-work-order-complete",
    ),
    path(
        "queue/work-orders/<uuid:work_order_id>/fail/",
        queue_apis.WorkOrderFailApi.as_view(),
        name="api-work-order-fail",
    ),
    path(
        "queue/work-orders/<uuid:work_order_id>/interrupted/",
        queue_apis.WorkOrderInterruptedApi.as_view(),
        name="api-work-order-interrupted",
    ),
    path(
        "queue/work-orders/<uuid:work_order_id>/usage/",
        queue_apis.WorkOrderUsageApi.as_view(),
        name="api-work-order-usage",
    ),
    path(
        "queue/work-orders/<uuid:work_order_id>/output/",
        queue_apis.WorkOrderOutputApi.as_view(),
        name="api-work-order-output",
    ),
    path(
        "executions/<uuid:execution_id>/bundle/",
        tasks_apis.ExecutionBundleApi.as_view(),
        name="api-execution-bundle",
    ),
    path("executions/<uuid:execution_id>/diff/", tasks_apis.ExecutionDiffApi.as_view(), name="api-execution-diff"),
    path("auth/tokens/", workers_apis.ApiTokenCreateApi.as_view(), name="api-tokens"),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "docs/",
        with_content_security_policy(API_DOCS_CONTENT_SECURITY_POLICY)(
            SpectacularSwaggerSplitView.as_view(url_name="api-schema")
        ),
        name="api-docs",
    ),
]
