"""Detection endpoints: health, predict (score and record), validate (what-if)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.db import IntegrityError, connection
from django.db import transaction as db_transaction
from django.db.models import Count, Q
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema_view
from rest_framework import generics, mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, Throttled, ValidationError
from rest_framework.permissions import AllowAny, DjangoModelPermissions
from rest_framework.response import Response
from rest_framework.views import APIView

from detection.backtest import DraftError, draft_config, ledger_backtest
from detection.events import VerdictsPublisher
from detection.models import (
    BacktestJob,
    DecisionThresholds,
    ListEntry,
    ModelVersion,
    Rule,
)
from detection.profiles import OrmStateStore
from detection.registry import MIN_TRAINING_SAMPLES, TooFewToTrain
from detection.scoring import (
    scoring_config_current,
    scoring_config_from_db,
    scoring_provider,
)
from detection.serializers import (
    BacktestJobSerializer,
    BacktestRequestSerializer,
    BacktestResultSerializer,
    DecisionThresholdsSerializer,
    ListEntrySerializer,
    ModelVersionSerializer,
    RuleSerializer,
    TransactionIdConflictSerializer,
    TransactionMessageSerializer,
    VerdictSerializer,
    WhatIfSerializer,
    WhatIfVerdictSerializer,
)
from detection.services import (
    transaction_batch_score_record,
    transaction_id_conflicts,
    transaction_what_if,
)
from detection.state import UserState
from detection.tasks import backtest_job_task
from fraudsite.openapi import (
    SIGNED_IN_WRITE,
    api_operation,
    request_body,
)
from fraudsite.permissions import READ_PERMISSION, CanRead, permission_required
from fraudsite.throttling import AnonThrottle, PredictThrottle
from transactions.filters import query_params_check
from transactions.messages import ID_PATH_REGEX
from transactions.models import Transaction
from transactions.selectors import transaction_get, user_transactions_recent
from transactions.serializers import TransactionSerializer

logger = logging.getLogger(__name__)


_publisher: VerdictsPublisher | None = None
_publisher_lock = threading.Lock()


def _verdicts_push(rows) -> None:
    """Show API-scored verdicts on the live dashboard without delaying the response.

    The same coalescing publisher as the stream's runs on a background thread of
    this process: the request only appends to its window (a Redis round trip per
    request cost about 8 ms of p50 in `bench_scoring`), and an outage is logged
    there, never raised here.
    """
    global _publisher
    if _publisher is None:
        with _publisher_lock:
            if _publisher is None:
                _publisher = VerdictsPublisher().start()
    _publisher.batches_add(rows)


class HealthView(APIView):
    """Report whether the database answers and which model scores here."""

    permission_classes = [AllowAny]
    authentication_classes: list = []

    # Without credentials: only the per-address request limit applies.
    @api_operation(responses={200: dict, 503: dict}, errors=[400, 429])
    def get(self, request):
        """Return {"status", "database", "model_version"}; 503 when the DB is down."""
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            provider = scoring_provider()
            config = provider.current()
        except Exception:  # any driver error means "not healthy"
            # The error names hosts and users: it goes to the log, not to this
            # unauthenticated endpoint.
            logger.exception("health check: database unreachable")
            return Response(
                {"status": "error", "database": "unreachable (see the server log)"},
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return Response(
            {
                "status": "ok",
                "service": "fraudsite",
                "database": "ok",
                # What this process scores with (a model that fails to load is
                # not in use, whatever the registry says), and why not, if so.
                "model_version": config.model_version or None,
                "scoring": (
                    "rules only"
                    if config.model is None
                    else "rules + model + classifier"
                    if config.model.classifier is not None
                    and config.learned_fraud_enabled
                    else "rules + model"
                ),
                "model_error": provider.model_error,
                "time": datetime.now(UTC).isoformat(),
            }
        )


class PredictView(APIView):
    """Score one transaction and record it (an HTTP ingestion path).

    Idempotent on transaction_id: posting the same payment again returns the
    stored verdict with 200 instead of 201, and changes nothing; the same id for
    another payment (user, amount or currency differ) is a 409. Recording moves the
    card's profile, so it takes the "add transaction" permission.
    """

    # Its own limit (API_THROTTLE_PREDICT_RATE, off by default), not the general
    # per-user one: payments scored here are not a script to slow down.
    throttle_classes = [PredictThrottle, AnonThrottle]

    permission_classes = permission_required("transactions.add_transaction")

    @api_operation(
        request=request_body(TransactionMessageSerializer),
        responses={
            201: TransactionSerializer,
            200: TransactionSerializer,
            409: OpenApiResponse(
                TransactionIdConflictSerializer,
                description="The transaction_id is stored for another payment "
                "(user_id, amount or currency differ); nothing was scored.",
            ),
        },
        errors=SIGNED_IN_WRITE,
        error_descriptions={
            403: "Needs the 'add transaction' permission (or, signed in by "
            "session, the CSRF token).",
            429: "Over API_THROTTLE_PREDICT_RATE (off by default); Retry-After "
            "says in how many seconds to try again.",
        },
    )
    def post(self, request):
        """Return the verdict, 201 when new, 200 when already stored."""
        serializer = TransactionMessageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = serializer.validated_data
        message.received_at = datetime.now(UTC)
        stored = transaction_get(transaction_id=message.transaction_id)
        if stored is None:
            try:
                result = transaction_batch_score_record(
                    messages=[message],
                    store=OrmStateStore(use_cache=False),
                    config=scoring_config_current(),
                    source="api",
                )
            except IntegrityError:
                # Another writer (the stream, a retried request) stored this id
                # between the check above and the insert; nothing of ours stayed.
                stored = transaction_get(transaction_id=message.transaction_id)
                if stored is None:
                    raise
            else:
                if result.created:
                    _verdicts_push(result.created)
                    row = result.created[0]
                    body = TransactionSerializer(Transaction(**row)).data
                    return Response(body, status=status.HTTP_201_CREATED)
                # Lost a race with another writer of the same id: return theirs.
                stored = transaction_get(transaction_id=message.transaction_id)
        # What is stored is shown to those who may read the ledger; a gateway
        # (Scoring client) learns no more than a first answer told it.
        reader = request.user.has_perm(READ_PERMISSION)
        (conflict,) = transaction_id_conflicts([message], reveal=reader)
        if conflict:
            return Response(
                {"transaction_id": [conflict]}, status=status.HTTP_409_CONFLICT
            )
        body = TransactionSerializer(stored).data
        if not reader:
            # The analysts' label came after the verdict the 201 gave.
            body["label"] = None
        return Response(body, status=status.HTTP_200_OK)


def _backtest_request(request, *, maximum: int, setting: str, beyond: str = ""):
    """Return the checked request of a backtest (POST /api/backtest and
    /api/backtest/jobs alike), its scoring configs and the window's count.

    Refuse (a 400 naming it) a bad field or draft, more than `maximum`
    transactions in the window (`setting` names the limit; `beyond` says what
    else to do), and a window with nothing before or after train_until.
    """
    params = BacktestRequestSerializer(data=request.data)
    params.is_valid(raise_exception=True)
    data = params.validated_data
    since, until, train_until = data["since"], data["until"], data["train_until"]
    config = scoring_config_from_db(model=None)
    draft = None
    if "draft" in data:
        try:
            draft = draft_config(data["draft"], live=config)
        except DraftError as exc:
            raise ValidationError({"draft": [str(exc)]}) from exc
    counts = Transaction.objects.filter(
        timestamp__gte=since, timestamp__lt=until
    ).aggregate(
        before=Count("pk", filter=Q(timestamp__lt=train_until)),
        after=Count("pk", filter=Q(timestamp__gte=train_until)),
    )
    matching = counts["before"] + counts["after"]
    if matching > maximum:
        raise ValidationError(
            {
                "detail": f"{matching:,} transactions are between since and "
                f"until; a backtest replays at most {maximum:,} ({setting}). "
                f"Narrow the window{beyond}."
            }
        )
    if not counts["before"] or not counts["after"]:
        raise ValidationError(
            {
                "train_until": [
                    "Stored transactions are needed on both sides of it: "
                    "before (to train) and after (to score)."
                ]
            }
        )
    if counts["before"] < MIN_TRAINING_SAMPLES:
        # Refused here, not by a job that fails later (the training itself
        # may still find too few: it leaves the frauds out).
        too_few = TooFewToTrain(counts["before"], " before it")
        raise ValidationError({"train_until": [str(too_few)]})
    return data, config, draft, matching


class BacktestView(APIView):
    """Replay stored transactions with isolated state: train a model on those
    before `train_until`, score the rest with the live rules and thresholds
    and, with a `draft`, with the draft's too (same model, same card states),
    and answer both sets of figures. Nothing live changes.

    As `manage.py backtest --compare`, over the ledger instead of a file: the
    ground truth is each transaction's latest label; merchant_fraud and the
    lists are left out (today's knowledge of the past). At most
    API_BACKTEST_MAX_ROWS transactions; the answer comes when it is done.

    Kept as it was for small windows (its clients wait for the answer, a few
    seconds); a larger window, up to API_BACKTEST_JOB_MAX_ROWS, is a job
    (POST /api/backtest/jobs: BacktestJobViewSet), whose answer is this one's,
    from the same streamed replay (`ledger_backtest`).
    """

    def get_view_name(self):
        """Return the browsable API's title for this page."""
        return "Backtest"

    @api_operation(
        request=request_body(BacktestRequestSerializer),
        responses={200: BacktestResultSerializer},
        errors=(400, 401, 403, 413, 429),
        error_descriptions={
            400: "A bad field or draft (named), more than API_BACKTEST_MAX_ROWS "
            "transactions (a job takes more: POST /api/backtest/jobs), or "
            "nothing to train on or to score."
        },
    )
    def post(self, request):
        """Backtest the live rule set, and a draft of it, on stored transactions."""
        data, config, draft, _ = _backtest_request(
            request,
            maximum=settings.API_BACKTEST_MAX_ROWS,
            setting="API_BACKTEST_MAX_ROWS",
            beyond=", or run it as a job (POST /api/backtest/jobs, at most "
            f"{settings.API_BACKTEST_JOB_MAX_ROWS:,})",
        )
        try:
            body = ledger_backtest(
                since=data["since"],
                until=data["until"],
                train_until=data["train_until"],
                config=config,
                draft=draft,
                label_maturity_seconds=data["label_maturity_days"] * 86400,
            )
        except TooFewToTrain as exc:
            # Fewer to train on than stored before train_until (the training
            # leaves out the frauds among them).
            raise ValidationError({"train_until": [str(exc)]}) from exc
        return Response(BacktestResultSerializer(body).data)


def backtest_job_enqueue(job: BacktestJob) -> None:
    """Queue a job's task on CELERY_BACKTEST_QUEUE (its own worker's: see
    settings); when the broker cannot take it, fail the job with the reason."""
    try:
        backtest_job_task.apply_async((job.pk,), queue=settings.CELERY_BACKTEST_QUEUE)
    except Exception as exc:  # the broker's errors are many; all mean "not queued"
        logger.exception("backtest job %s: could not queue it", job.pk)
        BacktestJob.objects.filter(pk=job.pk).update(
            status=BacktestJob.Status.FAILED,
            error=f"Could not queue the job: {exc}",
            finished_at=datetime.now(UTC),
        )


_JOB_NOT_FOUND = {404: "No backtest job has this id."}


@extend_schema_view(
    list=api_operation(
        responses={200: BacktestJobSerializer(many=True)},
        error_descriptions={400: "It takes no parameters; one given is named."},
    ),
    retrieve=api_operation(
        responses={200: BacktestJobSerializer}, error_descriptions=_JOB_NOT_FOUND
    ),
    create=api_operation(
        request=request_body(BacktestRequestSerializer),
        responses={
            202: OpenApiResponse(
                BacktestJobSerializer,
                description="Queued: GET its `url` (also in Location) until "
                "`status` is done (`result`) or failed (`error`).",
            )
        },
        errors=SIGNED_IN_WRITE,
        error_descriptions={
            400: "A bad field or draft (named), more than "
            "API_BACKTEST_JOB_MAX_ROWS transactions, or nothing to train on or "
            "to score.",
            429: "Over a request limit, or API_BACKTEST_JOB_ACTIVE_PER_USER jobs "
            "of this user are queued or running already.",
        },
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                location=OpenApiParameter.HEADER,
                description="The job's address (its `url`).",
                response=[202],
            )
        ],
    ),
)
@extend_schema_view(
    cancel=api_operation(
        request=None,
        responses={200: BacktestJobSerializer},
        errors=(400, 401, 403, 429),
        error_descriptions={
            **_JOB_NOT_FOUND,
            403: 'Not its requester, nor one who may "Change backtest job".',
            409: "It is done, failed or cancelled already.",
        },
    )
)
class BacktestJobViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet
):
    """Backtests of the stored ledger run in the background, for windows up to
    API_BACKTEST_JOB_MAX_ROWS (a million by default) transactions.

    POST takes what POST /api/backtest takes, refuses what it refuses (but
    past the larger limit), and answers 202 at once with the job (queued) and
    its address in Location; a Celery worker runs it (detection.tasks.
    backtest_job_task), writing `rows_done` of `rows_total` at most once a
    second. GET the job until `status` is done, with `result` (the answer POST
    /api/backtest gives) or failed, with `error`. A worker that dies leaves
    its job running: once no progress was written for
    API_BACKTEST_JOB_STALE_SECONDS it shows `stale: true` and will not finish
    (start it again). The list is the newest LIST_LIMIT jobs, everyone's.
    Every role that reads may start and read them (as POST /api/backtest), at
    most API_BACKTEST_JOB_ACTIVE_PER_USER queued or running at once each (the
    backtest worker runs one at a time: one reader must not hold it for the
    day). POST .../cancel stops one: its requester's, or any with "Can change
    backtest job" (Risk admin); queued, it never starts; running, it stops at
    its next progress write.
    """

    LIST_LIMIT = 100

    serializer_class = BacktestJobSerializer
    lookup_value_regex = r"[0-9]+"
    filter_backends: list = []
    pagination_class = None

    def get_view_name(self):
        """Return the browsable API's title for these pages."""
        return "Backtest jobs"

    def get_queryset(self):
        return BacktestJob.objects.select_related("requested_by").with_queue_activity()

    def list(self, request, *args, **kwargs):
        """Return the newest LIST_LIMIT jobs; it takes no filters, and says so."""
        query_params_check(request, {"format"})
        jobs = self.get_queryset()[: self.LIST_LIMIT]
        return Response(self.get_serializer(jobs, many=True).data)

    def create(self, request, *args, **kwargs):
        """Check the backtest as POST /api/backtest does, store it, queue it."""
        active = BacktestJob.objects.filter(
            requested_by=request.user, status__in=BacktestJob.ACTIVE
        ).count()
        allowed = settings.API_BACKTEST_JOB_ACTIVE_PER_USER
        if active >= allowed:
            raise Throttled(
                detail=f"You have {active} backtest jobs queued or running, the "
                f"most one user may (API_BACKTEST_JOB_ACTIVE_PER_USER): wait for "
                "one to finish, or cancel one (POST /api/backtest/jobs/<id>/cancel)."
            )
        data, _, _, matching = _backtest_request(
            request,
            maximum=settings.API_BACKTEST_JOB_MAX_ROWS,
            setting="API_BACKTEST_JOB_MAX_ROWS",
        )
        job = BacktestJob.objects.create(
            requested_by=request.user,
            since=data["since"],
            train_until=data["train_until"],
            until=data["until"],
            draft=data.get("draft"),
            label_maturity_days=data["label_maturity_days"],
            rows_total=matching,
        )
        # Queued once the row is committed, so the worker finds it.
        db_transaction.on_commit(lambda: backtest_job_enqueue(job))
        job.refresh_from_db()
        body = self.get_serializer(job).data
        return Response(
            body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]}
        )

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Cancel a queued or running job (see the class)."""
        job = self.get_object()
        if job.requested_by_id != request.user.pk and not request.user.has_perm(
            "detection.change_backtestjob"
        ):
            raise PermissionDenied(
                'Only its requester, or a user who may "Change backtest job" '
                "(Risk admin), may cancel it."
            )
        cancelled = BacktestJob.objects.filter(
            pk=job.pk, status__in=BacktestJob.ACTIVE
        ).update(
            status=BacktestJob.Status.CANCELLED,
            error=f"Cancelled by {request.user.get_username()}.",
            finished_at=timezone.now(),
            updated_at=timezone.now(),
        )
        if not cancelled:
            return Response(
                {
                    "detail": f"It is {job.status} already; only a queued or running "
                    "job can be cancelled."
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(self.get_serializer(self.get_object()).data)


def _history(state: UserState, features: dict) -> dict:
    # The window counts are the scoring core's own features of this what-if, so
    # the context shown is exactly what the rules and the model saw.
    recent = user_transactions_recent(user_id=state.user_id, limit=10)
    return {
        "user_id": state.user_id,
        "transaction_count": state.count,
        "typical_amount": round(state.typical_amount, 2),
        "last_location": state.last_location,
        "last_transaction_at": (
            datetime.fromtimestamp(state.last_epoch, tz=UTC)
            if state.last_epoch
            else None
        ),
        "home_location": state.home_location,
        # typical_amount and amount_24h are in the base currency.
        "base_currency": settings.BASE_CURRENCY,
        **{key: features[key] for key in ("count_10m", "count_1h", "count_24h")},
        "amount_24h": features["amount_24h"],
        "recent_transactions": [
            {
                "transaction_id": txn.transaction_id,
                "amount": txn.amount_shown,
                "currency": txn.currency,
                "timestamp": txn.timestamp.isoformat(),
                "location": txn.location,
                "status": txn.status,
                "risk_score": txn.risk_score,
                "reason_codes": txn.reason_codes.split(),
            }
            for txn in recent
        ],
    }


class ValidateTransactionView(APIView):
    """Score a hypothetical transaction against the user's history; store nothing."""

    @api_operation(
        request=request_body(WhatIfSerializer),
        responses={200: WhatIfVerdictSerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions={403: "Signed in by session, without the CSRF token."},
    )
    def post(self, request):
        """Return the what-if verdict and the user's history context."""
        serializer = WhatIfSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = serializer.validated_data
        verdict, before = transaction_what_if(
            message=message,
            config=scoring_config_current(),
            timed=request.data.get("timestamp") not in (None, ""),
        )
        features = verdict.features
        body = {
            **VerdictSerializer(verdict).data,
            "features": features,
            "history": _history(before, features),
        }
        return Response(body)


def _shown(value) -> str:
    """A value as a change log line shows it (times as ISO 8601, UTC)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return repr(value)


class ListEntryFilter(filters.FilterSet):
    """The lists' filters; `value` is read as an entry's value is written
    (spaces trimmed; a country in capitals), so "is ng blocked?" finds NG."""

    value = filters.CharFilter(method="value_filter")

    class Meta:
        model = ListEntry
        fields = ["kind", "action", "value"]

    def value_filter(self, queryset, name, value):
        value = value.strip()
        return queryset.filter(
            Q(value=value) | Q(kind=ListEntry.Kind.COUNTRY, value=value.upper())
        )


class ChangeLogged:
    """API changes land in the admin's change log beside those made in admin
    (who, when, old -> new), as every decision about scoring should."""

    def perform_update(self, serializer):
        before = {f: getattr(serializer.instance, f) for f in serializer.validated_data}
        saved = serializer.save()
        changes = [
            f"{name}: {_shown(before[name])} \u2192 {_shown(getattr(saved, name))}"
            for name in before
            if before[name] != getattr(saved, name)
        ]
        if changes:  # a PATCH that changes nothing is no change to audit
            message = f"Changed {self._through()}: " + "; ".join(changes)
            self._log(saved, CHANGE, message)

    def _through(self) -> str:
        """Return where the change was made, for the log: the dashboard's
        buttons (which say so in a header) or the API. Wording only: who made
        it is the authenticated user either way."""
        if self.request.headers.get("X-Fraudsite-Client") == "dashboard":
            return "in the dashboard"
        return "through the API"

    def _log(self, saved, flag: int, message: str) -> None:
        LogEntry.objects.log_actions(
            user_id=self.request.user.pk,
            queryset=type(saved).objects.filter(pk=saved.pk),
            action_flag=flag,
            change_message=message,
            single_object=True,
        )


_LIST_ENTRY_NOT_FOUND = {404: "No list entry has this id."}
_LIST_ENTRY_WRITE = {
    403: "Needs the list entry permission of the change (add, change or delete; "
    "or, signed in by session, the CSRF token)."
}


@extend_schema_view(
    list=api_operation(
        responses={200: ListEntrySerializer(many=True)},
        error_descriptions={400: "An unknown filter, or a bad value of one, named."},
    ),
    create=api_operation(
        request=request_body(ListEntrySerializer),
        responses={201: ListEntrySerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions=_LIST_ENTRY_WRITE,
    ),
    retrieve=api_operation(
        responses={200: ListEntrySerializer},
        error_descriptions=_LIST_ENTRY_NOT_FOUND,
    ),
    update=api_operation(
        request=request_body(ListEntrySerializer),
        responses={200: ListEntrySerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions={**_LIST_ENTRY_WRITE, **_LIST_ENTRY_NOT_FOUND},
    ),
    partial_update=api_operation(
        request=request_body(ListEntrySerializer(partial=True)),
        responses={200: ListEntrySerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions={**_LIST_ENTRY_WRITE, **_LIST_ENTRY_NOT_FOUND},
    ),
    destroy=api_operation(
        responses={204: None},
        errors=(400, 401, 403, 429),
        error_descriptions={**_LIST_ENTRY_WRITE, **_LIST_ENTRY_NOT_FOUND},
    ),
)
class ListEntryViewSet(ChangeLogged, viewsets.ModelViewSet):
    """The block and allow lists: cards, merchants and countries.

    Reading takes a role that reads (Viewer and up); adding, changing and removing
    entries take the "list entry" model permissions (admin: Users or Groups).
    Scorers apply a change within DETECTION_CONFIG_REFRESH_SECONDS.
    """

    def get_view_name(self):
        """Return the browsable API's title for these pages."""
        return "Block and allow lists"

    queryset = ListEntry.objects.select_related("created_by")
    serializer_class = ListEntrySerializer
    permission_classes = [CanRead, DjangoModelPermissions]
    filterset_class = ListEntryFilter
    pagination_class = None

    def list(self, request, *args, **kwargs):
        """Return the entries; an unknown (misspelt) filter is a 400, not every
        entry as if it had matched ("is this card blocked?")."""
        query_params_check(request, {*ListEntryFilter.base_filters, "format"})
        return super().list(request, *args, **kwargs)

    def perform_create(self, serializer):
        expired = getattr(serializer, "replaces", None)
        if expired is not None:
            self._log(expired, DELETION, f"Expired; replaced {self._through()}.")
            expired.delete()
        entry = serializer.save(created_by=self.request.user)
        self._log(entry, ADDITION, f"Added {self._through()}.")

    def perform_destroy(self, instance):
        self._log(instance, DELETION, f"Deleted {self._through()}.")
        instance.delete()


_RULE_NOT_FOUND = {404: "No rule has this code."}
_RULE_WRITE = {403: 'Needs "Can change rule" (Risk admin).'}


@extend_schema_view(
    list=api_operation(
        responses={200: RuleSerializer(many=True)},
        error_descriptions={400: "A query parameter: this list has no filters."},
    ),
    retrieve=api_operation(
        responses={200: RuleSerializer}, error_descriptions=_RULE_NOT_FOUND
    ),
    update=api_operation(
        request=request_body(RuleSerializer),
        responses={200: RuleSerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions={**_RULE_WRITE, **_RULE_NOT_FOUND},
    ),
    partial_update=api_operation(
        request=request_body(RuleSerializer(partial=True)),
        responses={200: RuleSerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions={**_RULE_WRITE, **_RULE_NOT_FOUND},
    ),
)
class RuleViewSet(
    ChangeLogged,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The detection rules: weight, parameters (with their meaning and range in
    `params_schema`) and whether each is enabled.

    Reading takes a role that reads (Viewer and up); changing a rule takes the "change
    rule" permission (Risk admin). Rules are not added or deleted: each is code,
    and `enabled` switches one off keeping its tuned parameters. Changes are in
    the admin's change log and reach scorers within
    DETECTION_CONFIG_REFRESH_SECONDS.
    """

    queryset = Rule.objects.all()
    serializer_class = RuleSerializer
    permission_classes = [CanRead, DjangoModelPermissions]
    lookup_field = "code"
    filter_backends: list = []
    pagination_class = None

    def get_view_name(self):
        """Return the browsable API's title for these pages."""
        return "Detection rules"

    def list(self, request, *args, **kwargs):
        """Return every rule; a query parameter is a 400 (there are no filters)."""
        query_params_check(request, {"format"})
        return super().list(request, *args, **kwargs)


_THRESHOLDS_WRITE = {403: 'Needs "Can change decision thresholds" (Risk admin).'}


@extend_schema_view(
    get=api_operation(responses={200: DecisionThresholdsSerializer}),
    patch=api_operation(
        request=request_body(DecisionThresholdsSerializer(partial=True)),
        responses={200: DecisionThresholdsSerializer},
        errors=SIGNED_IN_WRITE,
        error_descriptions=_THRESHOLDS_WRITE,
    ),
)
class DecisionThresholdsView(ChangeLogged, generics.RetrieveUpdateAPIView):
    """The risk cut-offs: `suspicious` from the first, `fraud` from the second.

    Reading takes a role that reads (Viewer and up); changing them takes the "change
    decision thresholds" permission (Risk admin), is in the admin's change log
    and reaches scorers within DETECTION_CONFIG_REFRESH_SECONDS.
    """

    queryset = DecisionThresholds.objects.all()
    serializer_class = DecisionThresholdsSerializer
    permission_classes = [CanRead, DjangoModelPermissions]
    # Read and changed field by field: no PUT (a 405), as README lists.
    http_method_names = ["get", "patch", "head", "options"]

    def get_view_name(self):
        """Return the browsable API's title for this page."""
        return "Decision thresholds"

    def get_object(self):
        """Return the one row (made with the defaults scoring uses if missing)."""
        query_params_check(self.request, {"format"})
        thresholds, _ = DecisionThresholds.objects.get_or_create(pk=1)
        self.check_object_permissions(self.request, thresholds)
        return thresholds


@extend_schema_view(
    list=api_operation(
        responses={200: ModelVersionSerializer(many=True)},
        error_descriptions={400: "It takes no parameters; one given is named."},
    ),
    retrieve=api_operation(
        responses={200: ModelVersionSerializer},
        error_descriptions={404: "No model version has this name."},
    ),
)
class ModelVersionViewSet(viewsets.ReadOnlyModelViewSet):
    """The stored model versions, newest first: training window, the retrain's
    activation decision and figures, and what its classifier learned from.

    Read-only, for every role that reads; activating a version is the
    admin's "Activate" action (the "change model version" permission).
    """

    queryset = ModelVersion.objects.defer("artifact", "classifier_artifact")
    serializer_class = ModelVersionSerializer
    permission_classes = [CanRead]
    lookup_field = "version"
    lookup_value_regex = ID_PATH_REGEX
    pagination_class = None

    def list(self, request, *args, **kwargs):
        """Return every version, newest first; it takes no filters, and says so."""
        query_params_check(request, {"format"})
        return super().list(request, *args, **kwargs)
