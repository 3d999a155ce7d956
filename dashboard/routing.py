"""Websocket routes of the dashboard."""

from django.urls import path

from dashboard.consumers import VerdictsConsumer

websocket_urlpatterns = [
    path("ws/verdicts/", VerdictsConsumer.as_asgi(), name="ws-verdicts"),
]
