"""URL root: the device API at the top level (as upstream), the admin under /admin/ (its
live apply page at /admin/apply/), the API's OpenAPI schema at /openapi.json and its
Swagger UI at /docs/."""

from django.contrib import admin
from django.contrib.auth.decorators import permission_required
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView

from apps_api.admin_login import throttled_login
from apps_api.apply_page import apply_page

urlpatterns = [
    # The device API first: its polled reads are resolved before anything else is tried.
    path("", include("apps_api.api.urls")),
    # The apply page shows what the step journal holds: it needs the right to read it.
    path(
        "admin/apply/",
        admin.site.admin_view(
            permission_required("apps_api.view_steprecord", raise_exception=True)(apply_page)
        ),
        name="admin-apply",
    ),
    path("admin/login/", throttled_login, name="admin-login"),
    path("admin/", admin.site.urls),
    # Keyed like the API they describe (SPECTACULAR_SETTINGS: SERVE_PERMISSIONS).
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="openapi-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema"), name="openapi-docs"),
    path("", include("localmode.urls")),
]
