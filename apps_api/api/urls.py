from django.urls import path

from apps_api.api import v1

urlpatterns = [
    path("ping", v1.PingView.as_view()),
    path("v1/healthy", v1.HealthyView.as_view()),
    path("v1/blink", v1.BlinkView.as_view()),
]
