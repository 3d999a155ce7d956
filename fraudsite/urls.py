"""URL configuration: admin, API (with OpenAPI schema), auth pages and dashboard."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path
from django.views.defaults import page_not_found
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularSwaggerView,
)

from fraudsite.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("api/", include("detection.urls")),
    path("api/", include("transactions.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Interactive API docs (try requests signed in, or with a token).
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema"),
        name="api-docs",
    ),
    path("api-auth/", include("rest_framework.urls")),
    # Only sign-in and sign-out: password reset would mail links from a site
    # with no mail set up; admins set passwords in the admin.
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Browsers ask for /favicon.ico on every page without an icon link (admin).
    path(
        "favicon.ico",
        lambda request: redirect(static("dashboard/favicon.svg"), permanent=True),
    ),
    path("", include("dashboard.urls")),
]


def not_found(request, exception=None):
    """Answer an unrouted /api/ path in JSON, as routed API 404s are; pages get
    Django's 404 page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found."}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
