"""Prometheus metrics at /metrics, read from the database (and Kafka) per scrape.

Every process of the deployment writes to the same database, so one web process
answers for all of them: verdicts by status and reasons fired (the tallies kept
with every write), dead letters, alert deliveries, the active model, list sizes,
how fresh the newest verdict is and, when KAFKA_BROKER is set, the consumer
group's lag. Nothing is counted in process memory, so no multiprocess setup.

Access: `Authorization: Bearer <METRICS_TOKEN>` (set it for Prometheus'
`authorization` config), or a signed-in staff user in a browser.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db.models import Count, Q, Sum
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector


class FraudsiteCollector(Collector):
    """Collect the deployment's figures from the database on each scrape."""

    def collect(self):
        from detection.kafka import group_lag
        from detection.models import AlertDelivery, DeadLetter, ListEntry, ModelVersion
        from transactions.models import ReasonTally, Transaction, VerdictTally

        verdicts = CounterMetricFamily(
            "fraudsite_verdicts", "Verdicts stored, by status.", labels=["status"]
        )
        sums = VerdictTally.objects.aggregate(
            legit=Sum("legit"), suspicious=Sum("suspicious"), fraud=Sum("fraud")
        )
        for status, value in sums.items():
            verdicts.add_metric([status], value or 0)
        yield verdicts

        reasons = CounterMetricFamily(
            "fraudsite_reasons_fired",
            "Times each reason (rule code) was given in a verdict.",
            labels=["code"],
        )
        for code, fired in (
            ReasonTally.objects.values("code")
            .annotate(fired=Sum("fired"))
            .values_list("code", "fired")
        ):
            reasons.add_metric([code], fired)
        yield reasons

        letters = DeadLetter.objects.aggregate(
            total=Count("id"), unresolved=Count("id", filter=_unresolved())
        )
        yield CounterMetricFamily(
            "fraudsite_dead_letters", "Records the stream could not score.",
            value=letters["total"],
        )  # fmt: skip
        yield GaugeMetricFamily(
            "fraudsite_dead_letters_unresolved",
            "Dead letters no redrive has scored or matched yet.",
            value=letters["unresolved"],
        )

        deliveries = GaugeMetricFamily(
            "fraudsite_alert_deliveries",
            "Alert webhook deliveries, by state.",
            labels=["state"],
        )
        counted = dict(
            AlertDelivery.objects.values("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        for state in AlertDelivery.State.values:
            deliveries.add_metric([state], counted.get(state, 0))
        yield deliveries

        entries = GaugeMetricFamily(
            "fraudsite_list_entries",
            "Block and allow list entries in force (not expired).",
            labels=["kind", "action"],
        )
        in_force = Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        for kind, action, n in (
            ListEntry.objects.filter(in_force)
            .values("kind", "action")
            .annotate(n=Count("id"))
            .values_list("kind", "action", "n")
        ):
            entries.add_metric([kind, action], n)
        yield entries

        newest = Transaction.objects.order_by("-id").values_list("scored_at").first()
        if newest is not None:
            yield GaugeMetricFamily(
                "fraudsite_last_verdict_timestamp_seconds",
                "When the newest verdict was stored (Unix time).",
                value=newest[0].timestamp(),
            )

        model = ModelVersion.objects.filter(is_active=True).first()
        info = GaugeMetricFamily(
            "fraudsite_model_active", "The active model (1), by version.",
            labels=["version"],
        )  # fmt: skip
        if model is not None:
            info.add_metric([model.version], 1)
            yield GaugeMetricFamily(
                "fraudsite_model_trained_timestamp_seconds",
                "When the active model was trained (Unix time).",
                value=model.trained_at.timestamp(),
            )
        yield info

        if settings.KAFKA_BROKER:
            topic = settings.KAFKA_TRANSACTIONS_TOPIC
            group = settings.KAFKA_CONSUMER_GROUP
            lag = group_lag(settings.KAFKA_BROKER, group, topic)
            if lag is not None:
                gauge = GaugeMetricFamily(
                    "fraudsite_consumer_lag_records",
                    "Records of the topic the consumer group has not committed.",
                    labels=["group", "topic"],
                )
                gauge.add_metric([group, topic], lag)
                yield gauge


def _unresolved():
    from django.db.models import Q

    return Q(resolved_at__isnull=True)


_registry = CollectorRegistry(auto_describe=False)
_registry.register(FraudsiteCollector())


def _authorised(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer "):
        return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())
    return request.user.is_authenticated and request.user.is_staff


@require_GET
def metrics_view(request):
    """Return the metrics in Prometheus' text format (401 without access)."""
    if not _authorised(request):
        response = HttpResponse(
            "Metrics need Authorization: Bearer <METRICS_TOKEN>, or a staff sign-in.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(generate_latest(_registry), content_type=CONTENT_TYPE_LATEST)
