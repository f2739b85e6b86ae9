from django.urls import path

from apps_api.api import v1, v2

urlpatterns = [
    path("ping", v1.PingView.as_view()),
    path("v1/healthy", v1.HealthyView.as_view()),
    path("metrics", v1.MetricsView.as_view()),
    path("v1/blink", v1.BlinkView.as_view()),
    path("v1/device", v1.DeviceView.as_view()),
    path("v1/regenerate-api-key", v1.RegenerateApiKeyView.as_view()),
    path("v1/update", v1.UpdateView.as_view()),
    path("v1/reboot", v1.RebootView.as_view()),
    path("v1/shutdown", v1.ShutdownView.as_view()),
    path("v1/restart", v1.RestartView.as_view()),
    path("v1/purge", v1.PurgeView.as_view()),
    path("v1/apps/<str:app_id>", v1.AppView.as_view()),
    path("v1/apps/<str:app_id>/stop", v1.AppStopView.as_view()),
    path("v1/apps/<str:app_id>/start", v1.AppStartView.as_view()),
    path("v2/applications/state", v2.ApplicationsStateView.as_view()),
    path("v2/applications/<str:app_id>/state", v2.ApplicationStateView.as_view()),
    path("v2/applications/<str:app_id>/restart-service", v2.RestartServiceView.as_view()),
    path("v2/applications/<str:app_id>/stop-service", v2.StopServiceView.as_view()),
    path("v2/applications/<str:app_id>/start-service", v2.StartServiceView.as_view()),
    path("v2/applications/<str:app_id>/restart", v2.RestartAppView.as_view()),
    path("v2/applications/<str:app_id>/purge", v2.PurgeAppView.as_view()),
    path("v2/state/status", v2.StateStatusView.as_view()),
    path("v2/containerId", v2.ContainerIdView.as_view()),
    path("v2/version", v2.VersionView.as_view()),
    path("v2/device/name", v2.DeviceNameView.as_view()),
    path("v2/device/tags", v2.DeviceTagsView.as_view()),
    path("v2/cleanup-volumes", v2.CleanupVolumesView.as_view()),
    path("v2/journal-logs", v2.JournalLogsView.as_view()),
]
