"""Project wiring: settings, URLs, ASGI/WSGI, the Celery app and embedded services."""

from fraudsite.celery import app as celery_app

__all__ = ["celery_app"]
