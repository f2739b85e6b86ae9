"""URL root: the device API at the top level (as upstream), the admin under /admin/, the
API's OpenAPI schema at /openapi.json and its Swagger UI at /docs/."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny

# The description of the API is public, like /ping: it needs no key even on a managed device.
PUBLIC: dict[str, list[object]] = {"authentication_classes": [], "permission_classes": [AllowAny]}

urlpatterns = [
    path("admin/", admin.site.urls),
    path("openapi.json", SpectacularJSONAPIView.as_view(**PUBLIC), name="openapi-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="openapi-schema", **PUBLIC), name="openapi-docs"),
    path("", include("apps_api.api.urls")),
    path("", include("localmode.urls")),
]
