"""The scoring benchmark's predict timing runs through the real API path."""

from io import StringIO

import pytest

from detection.management.commands.bench_scoring import Command
from transactions.models import Transaction

pytestmark = pytest.mark.django_db


def test_predict_timing_records_through_the_api(settings):
    """The benchmark's user may record (it holds "add transaction", as an API
    client must): every timed request is a 201 and is stored, and the figures
    are printed; a refused request would stop the benchmark with its status."""
    settings.ALLOWED_HOSTS = ["127.0.0.1"]  # the benchmark's client, as make bench
    out = StringIO()
    command = Command(stdout=out)
    command._predict(5)
    assert "POST /api/predict over 5 requests" in out.getvalue()
    assert Transaction.objects.filter(transaction_id__startswith="bench-").count() == 5
