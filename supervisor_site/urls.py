"""URL root: the device API at the top level (as upstream), the admin under /admin/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("apps_api.api.urls")),
]
