"""The supervised classifier beside the forest: trained on labels, stored with the
model version, scored by the learned_fraud rule in the one scoring core."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from django.core.management import call_command

from detection.classifier import PACKED_MAX_ROWS, TooFewLabels, classifier_train
from detection.models import ModelVersion, Rule
from detection.registry import ModelIntegrityError, model_active_row, model_load
from detection.scoring import scoring_config_defaults, transaction_score_batch
from detection.state import FEATURE_NAMES, InMemoryStateStore
from tests.detection.test_model import history  # noqa: F401 (a fixture)
from tests.detection.test_rules import FixedPercentileModel, message
from transactions.models import Label, Transaction

pytestmark = pytest.mark.django_db


def _learnable(rows: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return features where fraud is one feature's high values (plus noise)."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(rows, len(FEATURE_NAMES)))
    is_fraud = matrix[:, 0] + 0.3 * rng.normal(size=rows) > 2.0
    return matrix, is_fraud


def test_too_few_labels_are_refused_with_the_counts():
    matrix, is_fraud = _learnable()
    with pytest.raises(TooFewLabels) as caught:
        classifier_train(matrix, is_fraud, min_labels=int(is_fraud.sum()) + 1)
    assert f"{int(is_fraud.sum())} confirmed frauds" in str(caught.value)


def test_the_classifier_learns_the_labels_and_reports_held_out_precision():
    matrix, is_fraud = _learnable()
    classifier = classifier_train(matrix, is_fraud, min_labels=10)
    info = classifier.info
    assert info["fraud"] == int(is_fraud.sum()) and info["legit"] == int(
        (~is_fraud).sum()
    )
    assert info["held_out_rows"] == 600
    assert info["held_out_average_precision"] > 0.8
    test_matrix, test_fraud = _learnable(seed=1)
    probabilities = classifier.probabilities(test_matrix)
    assert probabilities.shape == (len(test_matrix),)
    assert probabilities[test_fraud].mean() > 0.5 > probabilities[~test_fraud].mean()
    assert classifier.probabilities(np.empty((0, len(FEATURE_NAMES)))).shape == (0,)


def test_packed_trees_give_scikit_learns_probabilities():
    """The packed evaluation (waves of a few rows) equals predict_proba within
    1e-12, extreme values included; larger batches and NaN go to scikit-learn."""
    matrix, is_fraud = _learnable()
    classifier = classifier_train(matrix, is_fraud, min_labels=10)
    assert classifier.packed is not None
    rows, _ = _learnable(rows=40, seed=5)
    rows[0] = 1e9
    rows[1] = -1e9
    expected = classifier.model.predict_proba(rows)[:, 1]
    assert np.abs(classifier.packed.probabilities(rows) - expected).max() < 1e-12
    assert np.abs(classifier.probabilities(rows) - expected).max() < 1e-12
    for size in (1, PACKED_MAX_ROWS - 1, PACKED_MAX_ROWS, 500):
        batch, _ = _learnable(rows=size, seed=size)
        assert np.allclose(
            classifier.probabilities(batch),
            classifier.model.predict_proba(batch)[:, 1],
            rtol=0,
            atol=1e-12,
        )
    rows[2, 3] = np.nan
    assert np.allclose(
        classifier.probabilities(rows),
        classifier.model.predict_proba(rows)[:, 1],
        rtol=0,
        atol=1e-12,
    )


class FixedProbability:
    """A stand-in classifier giving every row one probability of fraud."""

    def __init__(self, probability: float) -> None:
        self.probability = probability

    def probabilities(self, matrix):
        return np.full(len(matrix), self.probability)


class LearnedModel(FixedPercentileModel):
    def __init__(self, probability: float) -> None:
        super().__init__(0.5)  # the forest adds nothing
        self.classifier = FixedProbability(probability)


def _verdict(probability: float, amount: str = "40.00", config=None):
    store = InMemoryStateStore()
    config = config or scoring_config_defaults(model=LearnedModel(probability))
    earlier = [message(f"h{i}", "40.00", -60 * (i + 1)) for i in range(10)]
    transaction_score_batch(earlier, store=store, config=config)
    verdicts, _ = transaction_score_batch(
        [message("t1", amount, 0)], store=store, config=config
    )
    return verdicts[0]


def test_learned_fraud_is_a_reason_from_its_threshold_and_adds_weight_times_p():
    """Weight 0.8 x probability 0.9 = risk 0.72 (suspicious), named as a reason
    with the probability it saw."""
    verdict = _verdict(0.9)
    assert verdict.status == "suspicious"
    assert verdict.risk_score == pytest.approx(0.72)
    (reason,) = verdict.reasons
    assert reason["code"] == "learned_fraud"
    assert reason["values"]["probability"] == 0.9
    assert reason["values"]["risk_added"] == pytest.approx(0.72)
    assert "90.0% probability of fraud" in reason["detail"]
    # A stand-in model keeps no training quantiles: nothing said of the features.
    assert "unusual" not in reason["values"]


def test_below_its_threshold_it_ranks_quietly_and_is_named_when_it_helped_flag():
    """p = 0.3 adds 0.24: alone the payment stays legit with no reason; with an
    amount spike (0.45) the two reach 0.58, suspicious, and the classifier is
    named as having helped."""
    quiet = _verdict(0.3)
    assert quiet.status == "legit" and quiet.reasons == []
    assert quiet.risk_score == pytest.approx(0.24)
    spiked = _verdict(0.3, amount="900.00")
    assert spiked.status == "suspicious"
    assert spiked.risk_score == pytest.approx(1 - 0.55 * 0.76)
    codes = [reason["code"] for reason in spiked.reasons]
    assert codes == ["amount_spike", "learned_fraud"]
    assert "named because without it this would be legit" in spiked.reasons[1]["detail"]


def test_a_small_probability_that_decided_nothing_is_not_named():
    """p = 0.01 adds 0.008 to a payment the amount spike (0.45) and a large
    amount (0.25) flag anyway: it is in the risk, not in the reasons."""
    verdict = _verdict(0.01, amount="2500.00")
    assert verdict.status == "suspicious"
    assert verdict.risk_score == pytest.approx(1 - 0.55 * 0.75 * 0.992)
    assert [r["code"] for r in verdict.reasons] == ["amount_spike", "large_amount"]
    assert not any("classifier" in note for note in verdict.notes)
    # A larger share that still decided nothing is said in the notes, so that
    # an analyst can account for the whole risk.
    shared = _verdict(0.2, amount="2500.00")
    assert [r["code"] for r in shared.reasons] == ["amount_spike", "large_amount"]
    added = shared.risk_score - (1 - 0.55 * 0.75)
    assert f"The classifier on labels added {added:.2f} to the risk" in " ".join(
        shared.notes
    )


def test_a_disabled_learned_fraud_rule_does_not_run_the_classifier():
    config = scoring_config_defaults(model=LearnedModel(0.99))
    config = dataclasses.replace(
        config,
        rules=tuple(r for r in config.rules if r.rule_type.code != "learned_fraud"),
    )
    verdict = _verdict(0.99, config=config)
    assert verdict.status == "legit" and verdict.risk_score == 0
    assert verdict.row.fraud_probability is None


def _label_frauds(messages) -> int:
    frauds = [m.transaction_id for m in messages if m.is_fraud]
    for record in Transaction.objects.filter(transaction_id__in=frauds):
        Label.objects.create(
            transaction=record, is_fraud=True, source=Label.Source.CHARGEBACK
        )
    return len(frauds)


def test_a_retrain_with_enough_labels_stores_a_verified_classifier(
    history,  # noqa: F811
    settings,
    capsys,
    client,
):
    """The simulated history's frauds, labelled as chargebacks, teach a classifier
    stored in the same version; it loads checksummed, ranks the labelled frauds
    above the rest, and a tampered artifact is refused."""
    frauds = _label_frauds(history)
    assert frauds >= 10
    settings.MODEL_CLASSIFIER_MIN_LABELS = 10
    call_command("retrain_model")
    out = capsys.readouterr().out
    row = model_active_row()
    assert row.classifier_info["fraud"] == frauds
    assert row.classifier_info["legit"] == len(history) - frauds
    assert f"Classifier: {frauds:,} frauds and" in out
    assert row.evaluation["classifier"].startswith(f"{frauds:,} frauds")
    loaded = model_load(row)
    from detection.services import training_features

    data = training_features()
    probabilities = loaded.classifier.probabilities(data.supervised)
    assert (
        probabilities[data.supervised_fraud].mean()
        > probabilities[~data.supervised_fraud].mean() + 0.5
    )
    from detection.scoring import scoring_provider

    scoring_provider().invalidate()
    health = client.get("/api/").json()
    assert health["scoring"] == "rules + model + classifier"
    assert health["model_version"] == row.version
    Rule.objects.filter(code="learned_fraud").update(enabled=False)
    scoring_provider().invalidate()
    assert client.get("/api/").json()["scoring"] == "rules + model"
    row.classifier_artifact = bytes(row.classifier_artifact) + b"x"
    with pytest.raises(ModelIntegrityError, match="classifier"):
        model_load(row)
    # Only the classifier's own tree type is trusted in its place: a forest
    # artifact there (with a matching checksum) is refused.
    import hashlib

    row.classifier_artifact = bytes(row.artifact)
    row.classifier_sha256 = hashlib.sha256(row.classifier_artifact).hexdigest()
    with pytest.raises(ModelIntegrityError, match="untrusted types"):
        model_load(row)
    # Nor another estimator skops trusts by default, nor a plain dict.
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    matrix, truth = _learnable(rows=300)
    for impostor in (LogisticRegression().fit(matrix, truth), {"a": 1}):
        row.classifier_artifact = sio.dumps(impostor)
        row.classifier_sha256 = hashlib.sha256(row.classifier_artifact).hexdigest()
        with pytest.raises(ModelIntegrityError, match="not a HistGradientBoosting"):
            model_load(row)


def test_a_retrain_that_would_lose_the_classifier_is_stored_not_activated(
    history,  # noqa: F811
    settings,
    client,
    django_user_model,
):
    """Given an active model with a classifier, a retrain that finds too few
    mature labels (a shell with the 30-day default where make run uses 0) is
    stored but not activated, saying so: learned_fraud would go silent. With
    the rule disabled, or --force, it is activated."""
    _label_frauds(history)
    settings.MODEL_CLASSIFIER_MIN_LABELS = 10
    call_command("retrain_model")
    with_classifier = model_active_row()
    assert with_classifier.classifier_info

    settings.MODEL_LABEL_MATURITY_SECONDS = 10 * 365 * 86400
    call_command("retrain_model")
    assert model_active_row() == with_classifier
    refused = ModelVersion.objects.latest("trained_at")
    assert refused.evaluation["activate"] is False
    assert "would silence learned_fraud" in refused.evaluation["reason"]

    call_command("retrain_model", "--force")
    assert model_active_row().classifier_info == {}
    # Switching by hand says so too: activating a version without a classifier
    # in admin warns that learned_fraud goes silent.
    admin = django_user_model.objects.create_superuser("root", password="pw-long-1")
    client.force_login(admin)
    ModelVersion.objects.exclude(pk=with_classifier.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=with_classifier.pk).update(is_active=True)
    forced = ModelVersion.objects.latest("trained_at")
    page = client.post(
        "/admin/detection/modelversion/",
        {"action": "activate", "_selected_action": [forced.pk]},
        follow=True,
    )
    assert "learned_fraud goes silent" in page.content.decode()
    Rule.objects.filter(code="learned_fraud").update(enabled=False)
    ModelVersion.objects.exclude(pk=with_classifier.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=with_classifier.pk).update(is_active=True)
    call_command("retrain_model")
    assert model_active_row().classifier_info == {}


@pytest.fixture
def labelled_weeks():
    """Store 20 days of 150 simulated cards, their frauds labelled as
    chargebacks; return the messages."""
    from detection.profiles import OrmStateStore
    from detection.scoring import scoring_config_from_db
    from detection.services import transaction_batch_score_record
    from detection.simulator import simulate_transactions
    from transactions.messages import transaction_message_parse

    messages = [
        transaction_message_parse(record)
        for record in simulate_transactions(users=150, days=20, seed=9)
    ]
    config = scoring_config_from_db(model=None)
    for start in range(0, len(messages), 1000):
        transaction_batch_score_record(
            messages=messages[start : start + 1000],
            store=OrmStateStore(),
            config=config,
            source="test",
        )
    _label_frauds(messages)
    return messages


def test_a_classifier_worse_on_payments_neither_saw_is_not_activated(
    settings, labelled_weeks
):
    """Given an active classifier trained on the first two weeks, a retrain is
    judged by a trial fitted on those same weeks with today's labels, both
    scoring the days after (which neither learned from): recorded when it holds
    up, and the version refused when it ranks fraud clearly worse there (here:
    older frauds relabelled legitimate and as many legitimate ones fraud)."""
    from datetime import UTC, datetime, timedelta

    messages = labelled_weeks
    settings.MODEL_CLASSIFIER_MIN_LABELS = 5
    settings.MODEL_ACTIVATION_MIN_LABELS = 3
    cutoff = messages[0].timestamp + timedelta(days=14)
    # The first classifier learns from the first 14 days only.
    age = (datetime.now(UTC) - cutoff).total_seconds()
    settings.MODEL_LABEL_MATURITY_SECONDS = age
    call_command("retrain_model")
    first = model_active_row()
    assert datetime.fromisoformat(first.classifier_info["trained_until"]) <= cutoff

    settings.MODEL_LABEL_MATURITY_SECONDS = 0
    call_command("retrain_model")
    fair = ModelVersion.objects.latest("trained_at").evaluation
    compared = fair["classifier_comparison"]
    assert compared["rows"] > 0 and compared["average_precision"] is not None
    assert compared["active_version"] == first.version

    # Back to the first, then the old labels swapped: frauds marked legitimate
    # and as many legitimate payments marked fraud (the fraud rate unchanged).
    ModelVersion.objects.exclude(pk=first.pk).update(is_active=False)
    ModelVersion.objects.filter(pk=first.pk).update(is_active=True)
    old = Transaction.objects.filter(timestamp__lt=cutoff)
    old_frauds = list(old.filter(labels__is_fraud=True))
    old_legit = list(old.filter(labels__isnull=True)[: len(old_frauds)])
    for record in old_frauds:
        Label.objects.create(
            transaction=record, is_fraud=False, source=Label.Source.ANALYST
        )
    for record in old_legit:
        Label.objects.create(
            transaction=record, is_fraud=True, source=Label.Source.ANALYST
        )
    call_command("retrain_model")
    refused = ModelVersion.objects.latest("trained_at")
    assert model_active_row() == first
    assert refused.evaluation["activate"] is False
    assert refused.evaluation["reason"].startswith("classifier: average precision")
    worse = refused.evaluation["classifier_comparison"]
    assert worse["average_precision"] < worse["active_average_precision"] - 0.05


def test_a_label_feed_that_stopped_is_not_learned_as_no_more_fraud(
    settings, labelled_weeks
):
    """Given chargebacks that stopped coming for the newest days (their frauds
    unlabelled, so read as legitimate once mature), the retrain is stored but
    not activated, saying the feed looks stopped; --force activates it."""
    from datetime import timedelta

    messages = labelled_weeks
    settings.MODEL_CLASSIFIER_MIN_LABELS = 5
    settings.MODEL_ACTIVATION_MIN_LABELS = 3
    settings.MODEL_LABEL_MATURITY_SECONDS = 0
    stopped = messages[-1].timestamp - timedelta(days=6)
    Label.objects.filter(transaction__timestamp__gte=stopped).delete()
    call_command("retrain_model")
    refused = ModelVersion.objects.latest("trained_at")
    assert refused.evaluation["activate"] is False
    assert "has the label feed (chargebacks) stopped?" in refused.evaluation["reason"]
    call_command("retrain_model", "--force")
    assert model_active_row().evaluation["reason"].startswith("forced over:")


def test_admin_lists_what_each_versions_classifier_learned_from(
    history,  # noqa: F811
    settings,
    client,
    staff_user,
):
    settings.MODEL_CLASSIFIER_MIN_LABELS = 10
    call_command("retrain_model")
    frauds = _label_frauds(history)
    call_command("retrain_model")
    client.force_login(staff_user)
    page = client.get("/admin/detection/modelversion/").content.decode()
    assert "Classifier on labels" in page
    # The list gives the gist in a line, the full sentence on hover...
    assert f">{frauds:,} fraud / {len(history) - frauds:,} legit" in page
    assert f'title="{frauds:,} frauds and {len(history) - frauds:,} legitimate' in page
    # The first version, trained before any label, says why it has none.
    assert "not trained: 0 confirmed frauds" in page
    newest = model_active_row()
    detail = client.get(f"/admin/detection/modelversion/{newest.pk}/change/")
    assert detail.status_code == 200
    # ...and the version's own page has the sentences whole.
    text = detail.content.decode()
    assert f"{frauds:,} frauds and {len(history) - frauds:,} legitimate" in text
    assert "activated: " in text  # the retrain's decision with its reason
    # The thousand score percentiles are summarised, not dumped.
    assert f"({len(newest.score_quantiles):,} percentiles stored)" in text
    assert repr(newest.score_quantiles[500]) not in text
    assert "Classifier artifact" not in text


def test_without_enough_labels_the_model_has_no_classifier_and_says_why(
    history,  # noqa: F811
    settings,
    capsys,
):
    settings.MODEL_CLASSIFIER_MIN_LABELS = 10
    call_command("retrain_model")
    row = model_active_row()
    assert bytes(row.classifier_artifact) == b"" and row.classifier_info == {}
    assert model_load(row).classifier is None
    assert row.evaluation["classifier"].startswith("not trained: 0 confirmed frauds")
    assert "Classifier: not trained" in capsys.readouterr().out


def test_payments_younger_than_the_maturity_are_left_out_labelled_or_not(
    history,  # noqa: F811
    settings,
):
    """A fraud whose chargeback has not come yet must not be learned as legit,
    and young labelled frauds alone would teach "recent means fraud": payments
    younger than the maturity are left out whatever their label, and so are the
    warm-up rows (cold features)."""
    from detection.services import training_features

    frauds = _label_frauds(history)
    settings.MODEL_LABEL_MATURITY_SECONDS = 100 * 365 * 86400
    assert len(training_features().supervised) == 0
    settings.MODEL_LABEL_MATURITY_SECONDS = 0
    everything = training_features()
    assert len(everything.supervised) == len(history)
    assert int(everything.supervised_fraud.sum()) == frauds
    windowed = training_features(limit=1000, warmup=2000)
    assert len(windowed.supervised) == 1000


def test_both_classes_are_needed_whatever_the_setting():
    matrix, _ = _learnable()
    with pytest.raises(TooFewLabels, match="0 confirmed frauds"):
        classifier_train(matrix, np.zeros(len(matrix), dtype=bool), min_labels=0)


def test_the_flag_rate_check_counts_the_classifier():
    """What a version alone would flag: the forest's ramp and the classifier's
    weight x p together (0.8 x 0.7 = 0.56 flags, 0.8 x 0.5 = 0.4 does not)."""
    from detection.scoring import model_alone_flag_rate

    config = scoring_config_defaults()
    quiet = np.full(3, 0.5)  # below the forest's floor: it adds nothing
    assert model_alone_flag_rate(config, quiet) == 0.0
    rate = model_alone_flag_rate(config, quiet, np.array([0.7, 0.5, 0.9]))
    assert rate == pytest.approx(2 / 3)
    # Between them: the forest at its ramp's middle (0.35) and p = 0.3 (0.24)
    # flag together (1 - 0.65 x 0.76 = 0.506), neither alone.
    middle = np.full(1, (0.95 + 0.999) / 2)
    assert model_alone_flag_rate(config, middle) == 0.0
    assert model_alone_flag_rate(config, middle, np.array([0.3])) == 1.0


def test_the_migration_seeds_the_learned_fraud_rule_enabled():
    rule = Rule.objects.get(code="learned_fraud")
    assert rule.enabled and rule.weight == 0.8 and rule.params == {"threshold": 0.5}


def test_ingest_file_labels_the_files_frauds_as_chargebacks_once(tmp_path, capsys):
    """make run's history comes with its chargebacks: `ingest_file --chargebacks`
    labels each is_fraud line once, however often it runs."""
    from detection.simulator import simulate_transactions

    records = list(simulate_transactions(users=30, days=5, seed=3))
    path = tmp_path / "history.jsonl"
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    frauds = sum(1 for record in records if record["is_fraud"])
    assert frauds > 0
    call_command("ingest_file", str(path), "--chargebacks")
    assert f"Labelled {frauds:,} frauds as chargebacks." in capsys.readouterr().out
    call_command("ingest_file", str(path), "--chargebacks")
    assert "Labelled 0 frauds as chargebacks." in capsys.readouterr().out
    labels = Label.objects.filter(source=Label.Source.CHARGEBACK)
    assert labels.count() == frauds
    assert set(labels.values_list("transaction__transaction_id", flat=True)) == {
        record["transaction_id"] for record in records if record["is_fraud"]
    }
    assert ModelVersion.objects.count() == 0


def test_the_learned_fraud_reason_says_what_stands_out_in_the_payment():
    """With the model's training quantiles, the classifier's reason names the
    payment's rare features as the model's does (context for the analyst), or
    says that none stands out, without the model's "unusual combination"."""
    from detection.explain import feature_quantiles
    from tests.detection.test_explain import ExplainedModel, _training

    model = ExplainedModel(0.5, feature_quantiles(_training()))
    model.classifier = FixedProbability(0.9)
    config = scoring_config_defaults(model=model)
    big = _verdict(0.9, amount="1000.00", config=config)
    (reason,) = [r for r in big.reasons if r["code"] == "learned_fraud"]
    assert reason["values"]["unusual"] and "; unusual: " in reason["detail"]
    assert "x the card's typical amount" in reason["detail"]
    # Against training payments spread far wider, nothing in it is rare.
    wide = np.random.default_rng(0).uniform(-1e4, 1e4, (2000, len(FEATURE_NAMES)))
    model = ExplainedModel(0.5, feature_quantiles(wide))
    model.classifier = FixedProbability(0.9)
    ordinary = _verdict(0.9, config=scoring_config_defaults(model=model))
    (reason,) = ordinary.reasons
    assert reason["code"] == "learned_fraud" and reason["values"]["unusual"] == []
    assert reason["detail"].endswith(
        "no single feature of it stands out against training payments"
    )


def test_a_line_reusing_a_stored_id_labels_nothing(tmp_path, capsys):
    """`ingest_file --chargebacks`: a fraud line whose id is stored for another
    payment says nothing of that payment, which stays unlabelled."""
    from detection.simulator import simulate_transactions

    (record,) = list(simulate_transactions(users=1, days=1, seed=3))[:1]
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({**record, "is_fraud": False}) + "\n")
    call_command("ingest_file", str(first), "--chargebacks")
    other = {**record, "amount": "999.99", "is_fraud": True}
    second = tmp_path / "second.jsonl"
    second.write_text(json.dumps(other) + "\n")
    call_command("ingest_file", str(second), "--chargebacks")
    out = capsys.readouterr().out
    assert "1 reusing the id of another stored payment" in out
    assert "Labelled 0 frauds as chargebacks." in out
    assert Label.objects.count() == 0


def test_the_api_lists_model_versions_without_their_artifacts(
    history,  # noqa: F811
    settings,
    api_client,
    anon_client,
):
    """GET /api/models: newest first, the active one marked, what its classifier
    learned from; one by version; never the artifacts; sign-in required."""
    settings.MODEL_CLASSIFIER_MIN_LABELS = 10
    call_command("retrain_model")
    frauds = _label_frauds(history)
    call_command("retrain_model")
    first, newest = ModelVersion.objects.order_by("trained_at")
    response = api_client.get("/api/models")
    assert response.status_code == 200
    body = response.json()
    assert [item["version"] for item in body] == [newest.version, first.version]
    assert [item["is_active"] for item in body] == [True, False]
    assert [item["has_classifier"] for item in body] == [True, False]
    assert body[0]["classifier_info"]["fraud"] == frauds
    assert body[0]["evaluation"]["classifier"].startswith(f"{frauds:,} frauds")
    assert not {"artifact", "classifier_artifact"} & set(body[0])
    one = api_client.get(f"/api/models/{first.version}")
    assert one.status_code == 200 and one.json()["version"] == first.version
    missing = api_client.get("/api/models/iforest-nope")
    assert missing.status_code == 404 and "detail" in missing.json()
    # A NUL, which PostgreSQL refuses in a query, is no version: 404, not 500.
    assert api_client.get("/api/models/x%00").status_code == 404
    assert anon_client.get("/api/models").status_code in (401, 403)
    assert api_client.post("/api/models", {}, format="json").status_code == 405
