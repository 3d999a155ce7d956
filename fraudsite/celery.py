"""The Celery application: model retraining and other background work."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fraudsite.settings")

app = Celery("fraudsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
