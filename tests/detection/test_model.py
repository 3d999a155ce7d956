"""Model lifecycle: train from history, store safely, load, score, hot reload."""

import hashlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from detection.models import ModelVersion, Rule
from detection.profiles import OrmStateStore
from detection.registry import ModelIntegrityError, model_active_row, model_load
from detection.scoring import ScoringConfigProvider, scoring_config_from_db
from detection.services import transaction_batch_score_record
from detection.simulator import simulate_transactions
from detection.state import FEATURE_NAMES
from transactions.messages import TransactionMessage, transaction_message_parse

pytestmark = pytest.mark.django_db


@pytest.fixture
def history():
    """Store ~3,000 simulated transactions scored by the rules alone."""
    messages = [
        transaction_message_parse(record)
        for record in simulate_transactions(users=60, days=14, seed=4)
    ]
    store = OrmStateStore()
    config = scoring_config_from_db(model=None)
    for start in range(0, len(messages), 1000):
        transaction_batch_score_record(
            messages=messages[start : start + 1000],
            store=store,
            config=config,
            source="test",
        )
    return messages


def test_retrain_model_activates_a_verified_skops_model(history, capsys):
    """retrain_model stores a checksummed skops artifact and activates it."""
    call_command("retrain_model")
    row = model_active_row()
    assert row is not None and row.version in capsys.readouterr().out
    assert row.sample_count == len(history)
    assert row.feature_names == list(FEATURE_NAMES)
    assert hashlib.sha256(bytes(row.artifact)).hexdigest() == row.artifact_sha256
    assert len(row.score_quantiles) == 1001
    loaded = model_load(row)
    scores = loaded.anomaly_scores(np.zeros((3, len(FEATURE_NAMES))))
    assert np.all((scores > 0) & (scores <= 1))
    # With its training features' quantiles, for the reasons' "unusual" words;
    # a version stored before they existed still loads, without them.
    assert loaded.feature_quantiles.shape == (17, len(FEATURE_NAMES))
    assert np.all(np.diff(loaded.feature_quantiles, axis=0) >= 0)
    row.feature_quantiles = []
    assert model_load(row).feature_quantiles is None


def test_confirmed_fraud_is_left_out_of_training(history, staff_user):
    """The forest learns normal behaviour: a transaction whose latest label says
    fraud is not trained on; one relabelled legitimate afterwards is."""
    from transactions.models import Transaction
    from transactions.services import label_create

    confirmed, relabelled = Transaction.objects.order_by("id")[:2]
    label_create(transaction=confirmed, is_fraud=True, created_by=staff_user)
    label_create(transaction=relabelled, is_fraud=True, created_by=staff_user)
    label_create(transaction=relabelled, is_fraud=False, created_by=staff_user)
    call_command("retrain_model")
    assert model_active_row().sample_count == len(history) - 1


def test_training_fits_the_feature_vectors_scoring_stored(history, staff_user):
    """Each verdict stores the model input its scoring computed; a retrain fits
    exactly those, whatever the window or the warm-up (cards keep the history
    they had live), and a fraud verdict later found legitimate keeps the
    features it was scored with, where a replay would teach its card at the
    payment's own time."""
    from detection.services import features_replay, training_features
    from detection.state import FEATURE_DTYPE, FEATURE_NAMES
    from transactions.models import Transaction
    from transactions.services import label_create

    rows = list(Transaction.objects.order_by("timestamp", "id"))
    stored = np.array(
        [np.frombuffer(bytes(t.features), FEATURE_DTYPE) for t in rows],
        dtype=np.float64,
    )
    assert stored.shape == (len(history), len(FEATURE_NAMES))
    window = training_features(limit=500, warmup=0)
    assert np.array_equal(window.matrix, stored[-500:])
    assert np.array_equal(
        training_features(limit=500, warmup=2000).matrix, window.matrix
    )
    # Scored in event order, the stored vectors are what a replay computes
    # (to float32's precision).
    by_id = dict(zip((t.transaction_id for t in rows), stored, strict=True))
    learned = {t.transaction_id: t.profile_learned for t in rows}
    replayed, _ = features_replay(
        history,
        rates=scoring_config_from_db(model=None).rates,
        learns=[learned[m.transaction_id] for m in history],
    )
    order = sorted(range(len(history)), key=lambda i: history[i].timestamp)
    expected = np.array([by_id[history[i].transaction_id] for i in order])
    assert np.allclose(replayed, expected, rtol=1e-6, atol=1e-5)
    # A fraud verdict relabelled legitimate: the stored vectors stand (its own
    # as it was scored, before the label taught the card).
    last = history[-1]
    recorded = transaction_batch_score_record(
        messages=[
            TransactionMessage(
                transaction_id="huge-then-legit",
                user_id=last.user_id,
                amount=Decimal("90000.00"),
                timestamp=last.timestamp + timedelta(hours=1),
            )
        ],
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    assert len(recorded.created) == 1
    flagged = Transaction.objects.get(transaction_id="huge-then-legit")
    assert not flagged.profile_learned
    label_create(transaction=flagged, is_fraud=False, created_by=staff_user)
    vector = np.frombuffer(bytes(flagged.features), FEATURE_DTYPE)
    assert np.array_equal(training_features().matrix, np.vstack([stored, vector]))


def test_stored_vectors_give_the_training_set_a_full_replay_gives(history, staff_user):
    """Where nothing differs between live and a replay (labels that teach no
    card afterwards), the stored vectors give the same training set as a
    replay of the whole history: the rows fitted, the gate's labelled rows
    (the warm-up's included) and the classifier's rows. A labelled warm-up row
    without a vector (stored before vectors were) sends it all to the replay,
    so the gate keeps every label after an upgrade."""
    from detection.services import training_features
    from transactions.models import Transaction
    from transactions.services import label_create

    rows = list(Transaction.objects.order_by("timestamp", "id"))
    for row in rows[::97]:
        label_create(transaction=row, is_fraud=True, created_by=staff_user)
    for row in [t for t in rows if t.profile_learned][5::89]:
        label_create(transaction=row, is_fraud=False, created_by=staff_user)
    stored = training_features(limit=1000, warmup=5000)
    Transaction.objects.filter(pk=rows[0].pk).update(features=None)
    upgraded = training_features(limit=1000, warmup=5000)
    Transaction.objects.update(features=None)
    replayed = training_features(limit=1000, warmup=5000)
    assert len(replayed.labelled) > 40 and replayed.labelled_fraud.any()
    for other in (stored, upgraded):
        assert other.timestamps == replayed.timestamps
        assert np.allclose(other.matrix, replayed.matrix, rtol=1e-6, atol=1e-5)
        assert np.array_equal(other.labelled_fraud, replayed.labelled_fraud)
        assert np.allclose(other.labelled, replayed.labelled, rtol=1e-6, atol=1e-5)
        assert np.array_equal(other.supervised_fraud, replayed.supervised_fraud)
        assert other.supervised_timestamps == replayed.supervised_timestamps
    # The stored path was taken first (float32 vectors), the replay after.
    assert not np.array_equal(stored.matrix, replayed.matrix)
    assert np.array_equal(upgraded.matrix, replayed.matrix)


def test_training_replays_older_history_before_its_window(history):
    """Without stored vectors (rows from before they were stored), the training
    window (the newest 500) is replayed after older transactions that build the
    cards' state but are not fitted, so its rows carry the history live rows
    would."""
    from detection.services import training_features
    from detection.state import FEATURE_NAMES
    from transactions.models import Transaction

    Transaction.objects.update(features=None)
    history_column = FEATURE_NAMES.index("log_history_count")
    cold = training_features(limit=500, warmup=0)
    warm = training_features(limit=500, warmup=2000)
    assert len(cold.matrix) == len(warm.matrix) == 500
    assert cold.timestamps == warm.timestamps  # the same window, fitted
    assert (
        warm.matrix[:, history_column].mean()
        > cold.matrix[:, history_column].mean() + 1.0
    )
    call_command("retrain_model", "--limit", "500", "--warmup", "2000")
    assert model_active_row().sample_count == 500


def _label_some(staff_user, frauds: int, legits: int) -> None:
    from transactions.models import Transaction
    from transactions.services import label_create

    rows = list(Transaction.objects.order_by("-amount")[: frauds + legits])
    for row in rows[:frauds]:
        label_create(transaction=row, is_fraud=True, created_by=staff_user)
    for row in rows[frauds:]:
        label_create(transaction=row, is_fraud=False, created_by=staff_user)


def test_a_retrain_that_ranks_labelled_fraud_worse_is_stored_inactive(
    history, staff_user, settings, capsys
):
    """Given enough labels and a gate the challenger cannot pass (it would need an
    average precision 1 above the active model's), the retrain stores the new
    version inactive with both figures and the reason, the old one keeps
    scoring, and the command says how to activate it anyway; --force does."""
    call_command("retrain_model")
    champion = model_active_row()
    _label_some(staff_user, frauds=4, legits=4)
    settings.MODEL_ACTIVATION_MIN_LABELS = 4
    settings.MODEL_ACTIVATION_MAX_AP_DROP = -1.0
    capsys.readouterr()
    call_command("retrain_model")
    out = capsys.readouterr().out
    challenger = ModelVersion.objects.exclude(pk=champion.pk).get()
    assert model_active_row().pk == champion.pk
    assert f"kept {champion.version} active" in out and "--force" in out
    evaluation = challenger.evaluation
    assert evaluation["activate"] is False
    assert evaluation["labelled_fraud"] == evaluation["labelled_legit"] == 4
    assert 0 < evaluation["average_precision"] <= 1
    assert 0 < evaluation["active_average_precision"] <= 1
    assert "below" in evaluation["reason"]

    call_command("retrain_model", "--force")
    forced = model_active_row()
    assert forced.pk not in (champion.pk, challenger.pk)
    assert forced.evaluation["reason"].startswith("forced over: ")


def test_a_retrain_is_activated_when_labels_are_too_few_or_it_ranks_as_well(
    history, staff_user, settings
):
    """With fewer labels of a kind than MODEL_ACTIVATION_MIN_LABELS there is
    nothing to judge by and the new version is activated (and says why); with
    enough, one within MODEL_ACTIVATION_MAX_AP_DROP of the active model is."""
    call_command("retrain_model")
    _label_some(staff_user, frauds=2, legits=6)
    settings.MODEL_ACTIVATION_MIN_LABELS = 3
    call_command("retrain_model")
    second = model_active_row()
    assert "too few labels" in second.evaluation["reason"]
    assert second.evaluation["average_precision"] is None

    _label_some(staff_user, frauds=4, legits=4)  # relabels the same rows: 4 and 4
    settings.MODEL_ACTIVATION_MAX_AP_DROP = 1.0  # any challenger passes
    call_command("retrain_model")
    third = model_active_row()
    assert third.pk != second.pk
    assert third.evaluation["active_version"] == second.version
    assert third.evaluation["average_precision"] is not None


def test_a_model_fitted_on_cold_cards_is_not_activated(history, capsys):
    """On a ledger without stored feature vectors (replayed), `--warmup 0
    --limit 300` fits cards with no history: against the newest transactions,
    featurized with their history as live scoring sees them, it alone would
    flag over twice what the active model flags (MODEL_ACTIVATION_MAX_FLAG_RISE);
    it is stored inactive with both figures, and the active model keeps
    scoring."""
    from transactions.models import Transaction

    Transaction.objects.update(features=None)
    call_command("retrain_model")
    champion = model_active_row()
    assert champion.evaluation["recent_flag_rate"] <= 0.10
    capsys.readouterr()
    call_command("retrain_model", "--warmup", "0", "--limit", "300")
    out = capsys.readouterr().out
    cold = ModelVersion.objects.exclude(pk=champion.pk).get()
    assert model_active_row().pk == champion.pk
    assert not cold.is_active and cold.evaluation["activate"] is False
    rate = cold.evaluation["recent_flag_rate"]
    active_rate = cold.evaluation["active_recent_flag_rate"]
    assert active_rate == champion.evaluation["recent_flag_rate"]
    assert rate > 2 * active_rate
    assert "MODEL_ACTIVATION_MAX_FLAG_RISE" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit", "-1"], "whole number greater than 0"),
        (["--limit", "0"], "whole number greater than 0"),
        (["--warmup", "-1"], "must be a whole number 0 or more"),
        (["--days", "-5"], "days greater than 0"),
        (["--days", "0"], "days greater than 0"),
        (["--days", "soon"], "finite number of days greater than 0"),
        (["--days", "inf"], "and at most 36500"),
        (["--days", "1e9"], "and at most 36500"),
        (["--days", "nan"], "finite number of days greater than 0"),
    ],
)
def test_retrain_refuses_bad_arguments(args, message):
    """Bad numbers are refused with the argument's name, before any work."""
    with pytest.raises(CommandError, match=message):
        call_command("retrain_model", *args)
    assert ModelVersion.objects.count() == 0


def test_challenger_decision_compares_average_precision():
    """The gate's arithmetic on hand-made scores: a challenger that ranks the
    labelled fraud below the legit is refused against one that ranks it above;
    within the allowed drop, or with no active model, it is activated."""
    from detection.registry import challenger_decision

    truth = np.array([True, True, False, False, False])
    good = np.array([0.9, 0.8, 0.1, 0.2, 0.3])
    bad = np.array([0.1, 0.2, 0.9, 0.8, 0.7])
    common = {"truth": truth, "min_labels": 2, "active_version": "v1"}
    refused = challenger_decision(
        candidate_scores=bad, active_scores=good, max_ap_drop=0.05, **common
    )
    assert refused["activate"] is False
    assert refused["active_average_precision"] == 1.0
    assert refused["average_precision"] < 0.5
    assert challenger_decision(
        candidate_scores=good, active_scores=bad, max_ap_drop=0.05, **common
    )["activate"]
    assert challenger_decision(
        candidate_scores=bad, active_scores=good, max_ap_drop=1.0, **common
    )["activate"]
    assert (
        challenger_decision(
            candidate_scores=bad,
            active_scores=None,
            max_ap_drop=0.05,
            **{**common, "active_version": None},
        )["reason"]
        == "no active model to compare"
    )


def test_second_training_replaces_the_active_model(history):
    """Only one version is active at a time."""
    call_command("retrain_model")
    call_command("retrain_model")
    assert ModelVersion.objects.count() == 2
    assert ModelVersion.objects.filter(is_active=True).count() == 1


def test_admin_rolls_back_to_an_earlier_version_that_loads(history, client, staff_user):
    """Given two trained versions, the admin's Activate action on the first
    makes it the scoring model again; a version whose artifact fails its checksum
    is refused with the reason and the active one stays."""
    call_command("retrain_model")
    first = model_active_row()
    call_command("retrain_model")
    second = model_active_row()
    client.force_login(staff_user)
    url = "/admin/detection/modelversion/"
    # The list and a version's page leave the model files (MBs each) unread.
    for page_url in (url, f"{url}{first.pk}/change/"):
        with CaptureQueriesContext(connection) as queries:
            assert client.get(page_url).status_code == 200
        reads = [q["sql"] for q in queries if "detection_modelversion" in q["sql"]]
        assert reads and not any('artifact"' in sql for sql in reads)
    page = client.post(
        url, {"action": "activate", "_selected_action": [first.pk]}, follow=True
    )
    assert f"Model {first.version} is active" in page.content.decode()
    assert model_active_row().version == first.version
    # Audited like every admin change: who switched, from which version.
    from django.contrib.admin.models import LogEntry

    logged = LogEntry.objects.get(object_id=str(first.pk))
    assert logged.user == staff_user
    assert logged.get_change_message() == f"Activated (was {second.version})."

    ModelVersion.objects.filter(pk=second.pk).update(artifact=b"tampered")
    page = client.post(
        url, {"action": "activate", "_selected_action": [second.pk]}, follow=True
    )
    assert "was not activated" in page.content.decode()
    assert model_active_row().version == first.version


def test_tampered_artifact_is_refused(history):
    """A stored artifact that does not match its checksum is never loaded."""
    call_command("retrain_model")
    row = model_active_row()
    row.artifact = bytes(row.artifact) + b"x"
    with pytest.raises(ModelIntegrityError, match="checksum"):
        model_load(row)


def test_a_model_that_cannot_load_is_reported_and_not_retried(
    history, anon_client, monkeypatch
):
    """Given an active version whose features no longer match the code (a deploy
    that changed them), health says the process scores by rules alone and why,
    and the load is not attempted again at every refresh."""
    from detection.scoring import config as scoring

    call_command("retrain_model")
    row = model_active_row()
    ModelVersion.objects.filter(pk=row.pk).update(feature_names=["amount"])
    attempts = []
    real_load = scoring.model_load

    def counting_load(stored):
        attempts.append(stored.version)
        return real_load(stored)

    monkeypatch.setattr(scoring, "model_load", counting_load)
    provider = ScoringConfigProvider(refresh_seconds=0)
    monkeypatch.setattr(scoring, "_provider", provider)
    for _ in range(3):
        body = anon_client.get("/api/").json()
    assert body["scoring"] == "rules only" and body["model_version"] is None
    assert row.version in body["model_error"] and "features" in body["model_error"]
    assert attempts == [row.version]


@pytest.mark.django_db(transaction=True)
def test_concurrent_activations_leave_exactly_one_active_model(history):
    """Given two stored versions, two threads activating them over and over (a
    scheduled and a manual retrain at once) never fail, and one stays active."""
    import threading

    from django.db import connection

    from detection.registry import model_version_activate

    call_command("retrain_model")
    call_command("retrain_model")
    versions = list(ModelVersion.objects.values_list("version", flat=True))
    barrier, errors = threading.Barrier(2), []

    def activate(version: str) -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(25):
                model_version_activate(version=version)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=activate, args=(v,)) for v in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    assert ModelVersion.objects.filter(is_active=True).count() == 1


def test_retrain_without_history_is_a_clear_error():
    """Training on an empty ledger is a command error, not a traceback."""
    with pytest.raises(CommandError, match="at least"):
        call_command("retrain_model")


def test_running_scorer_picks_up_model_and_rule_changes_without_restart(history):
    """A provider sees a new model and an edited rule on its next refresh."""
    provider = ScoringConfigProvider(refresh_seconds=0)
    assert provider.current().model is None
    call_command("retrain_model")
    assert provider.current().model_version == model_active_row().version
    # Refreshes read the model files (MBs) only when the active version changed.
    with CaptureQueriesContext(connection) as queries:
        assert provider.current().model_version == model_active_row().version
    model_reads = [q["sql"] for q in queries if "detection_modelversion" in q["sql"]]
    assert len(model_reads) == 2  # the refresh's version, and the assertion's row
    assert '"artifact"' not in model_reads[0]

    message = TransactionMessage(
        transaction_id="probe",
        user_id="probe-user",
        amount=Decimal("1500.00"),
        timestamp=datetime(2026, 2, 1, tzinfo=UTC),
    )
    store = OrmStateStore(use_cache=False)

    def codes():
        from detection.scoring import transaction_score_batch

        verdicts, _ = transaction_score_batch(
            [message], store=store, config=provider.current(), apply_state=False
        )
        return verdicts[0].reason_codes

    assert "large_amount" not in codes()
    rule = Rule.objects.get(code="large_amount")
    rule.params = {"threshold": 1000.0}
    rule.save()
    assert "large_amount" in codes()
    rule.enabled = False
    rule.save()
    assert "large_amount" not in codes()


def test_default_refresh_interval_is_within_five_seconds(settings):
    """Running scorers re-read rules at least every 5 s by default."""
    assert ScoringConfigProvider().refresh_seconds <= 5


@pytest.mark.parametrize(
    ("rate", "active_rate", "accepted"),
    [
        (0.03, None, True),  # first model, plausible
        (0.30, None, False),  # first model flagging 30%: better no model
        (0.30, 0.40, True),  # above the cap, but fewer than the active one
        (0.30, 0.30, True),  # above the cap, as many as the active one
        (0.07, 0.03, False),  # more than twice the active model's
        (0.015, 0.005, True),  # three times, but one point or less more
        (None, 0.03, True),  # model rule disabled: nothing to check
    ],
)
def test_flag_rate_decision(rate, active_rate, accepted):
    """The flag-rate check: a cap of 10% and at most twice the active model."""
    from detection.services import flag_rate_decision

    ok, reason = flag_rate_decision(
        rate=rate, active_rate=active_rate, max_rate=0.10, max_rise=2.0, rows=2000
    )
    assert ok is accepted, reason


def test_training_replays_amounts_as_they_were_scored_whatever_the_rates_now():
    """Training replays each payment's amount as it was compared when scored
    (amount_base, at that day's rate): a rate edited or removed since changes
    nothing in the features, where converting again would."""
    from datetime import timedelta

    from detection.models import ExchangeRate
    from detection.services import training_features

    start = datetime(2026, 3, 1, tzinfo=UTC)
    messages = [
        TransactionMessage(
            transaction_id=f"eur-{n}",
            user_id=f"eur-card-{n % 5}",
            amount=Decimal("50.00") + n,
            currency="EUR",
            timestamp=start + timedelta(hours=n),
            location="Paris",
        )
        for n in range(40)
    ]
    transaction_batch_score_record(
        messages=messages,
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    before = training_features().matrix
    ExchangeRate.objects.filter(currency="EUR").update(units_per_base=0.086)
    assert np.array_equal(training_features().matrix, before)
    ExchangeRate.objects.filter(currency="EUR").delete()
    assert np.array_equal(training_features().matrix, before)


def test_a_payment_stored_as_zero_in_the_base_currency_is_replayed(history):
    """Given a 0.01 MXN payment (card testing) whose amount in the base
    currency reads 0.00, as rows stored before amount_base was kept unrounded
    do, and rows without stored vectors (which send training to the replay), a
    retrain replays it at today's rate and activates a model."""
    from detection.services import training_features
    from transactions.models import Transaction

    last = max(m.timestamp for m in history)
    tiny = transaction_message_parse(
        {
            "transaction_id": "card-test-1",
            "user_id": "card-testing",
            "amount": "0.01",
            "currency": "MXN",
            "timestamp": (last + timedelta(minutes=1)).isoformat(),
        }
    )
    transaction_batch_score_record(
        messages=[tiny],
        store=OrmStateStore(),
        config=scoring_config_from_db(model=None),
        source="test",
    )
    Transaction.objects.filter(transaction_id="card-test-1").update(amount_base=0.0)
    Transaction.objects.update(features=None)
    replayed = training_features()
    amount_column = FEATURE_NAMES.index("log_amount")
    assert np.isfinite(replayed.matrix).all()
    # The newest row fitted, at today's rate (0.01 MXN is about 0.0005 USD).
    assert replayed.timestamps[-1] == tiny.timestamp
    assert 0.0 < replayed.matrix[-1, amount_column] < np.log1p(0.001)
    call_command("retrain_model")
    assert model_active_row() is not None


def test_a_rollback_during_a_retrain_is_not_undone_by_it(history, monkeypatch):
    """Given an admin's rollback to an earlier version while a retrain runs
    (after the retrain read the active version it judges against), the new
    version is stored inactive, saying why, and the rollback stands; a
    forced retrain still activates."""
    from detection.registry import model_version_activate
    from detection.services import training

    call_command("retrain_model")
    first = model_active_row()
    call_command("retrain_model")
    second = model_active_row()
    judged = training.challenger_decision

    def rollback_meanwhile(**kwargs):
        model_version_activate(version=first.version)
        return judged(**kwargs)

    monkeypatch.setattr(training, "challenger_decision", rollback_meanwhile)
    third = training.model_retrain()
    assert model_active_row().version == first.version
    stored = ModelVersion.objects.get(version=third)
    assert not stored.is_active and stored.evaluation["activate"] is False
    assert stored.evaluation["reason"] == (
        f"not activated: {first.version} became active while this version was "
        f"judged against {second.version}"
    )
    forced = training.model_retrain(force=True)
    assert model_active_row().version == forced
