"""Ready-made roles: Viewer, Analyst, Risk admin and Scoring client groups."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, Permission
from django.urls import reverse
from rest_framework.test import APIClient

from detection.models import ListEntry, Rule
from detection.roles import (
    ROLE_ANALYST,
    ROLE_RISK_ADMIN,
    ROLE_SCORING_CLIENT,
    ROLE_VIEWER,
    ROLES,
    roles_sync,
)
from tests.ledger import transaction_stored
from transactions.models import Label, Transaction

pytestmark = pytest.mark.django_db


def _member(django_user_model, role: str, *, staff: bool = True):
    user = django_user_model.objects.create_user(
        username=role.lower().replace(" ", "-"),
        password="correct-horse-battery",
        is_staff=staff,
    )
    user.groups.add(Group.objects.get(name=role))
    return user


def _api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def _transaction() -> Transaction:
    return transaction_stored("t-role-1")


def test_migrate_creates_each_role_with_its_permissions():
    """Given a migrated database, then the four role groups exist and each holds
    every permission its role lists, and no role can manage users."""
    for name, perms in ROLES.items():
        group = Group.objects.get(name=name)
        held = {
            f"{app}.{codename}"
            for app, codename in group.permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        assert held == set(perms), name
        assert not any(perm.startswith("auth.") for perm in held)
    assert "detection.view_alertwebhook" not in ROLES[ROLE_ANALYST]


def test_sync_adds_what_a_role_lacks_and_keeps_what_an_admin_added():
    """Given an admin removed one of a role's permissions and added another, when
    the roles are synced (every migrate does it), then the missing one is back,
    the hand-added one stays, and a second sync changes nothing."""
    analyst = Group.objects.get(name=ROLE_ANALYST)
    add_label = Permission.objects.get(codename="add_label")
    extra = Permission.objects.get(codename="change_rule")
    analyst.permissions.remove(add_label)
    analyst.permissions.add(extra)

    added = roles_sync()

    assert added[ROLE_ANALYST] == 1
    assert analyst.permissions.filter(pk__in=[add_label.pk, extra.pk]).count() == 2
    assert set(roles_sync().values()) == {0}


def test_sync_names_a_permission_that_does_not_exist(monkeypatch):
    """A role listing a permission no model has fails loudly, naming it."""
    monkeypatch.setitem(ROLES, ROLE_VIEWER, ["detection.view_nothing"])
    with pytest.raises(LookupError, match=r"detection\.view_nothing"):
        roles_sync()


def test_a_viewer_reads_but_cannot_label_block_or_record(django_user_model, client):
    """Given a Viewer, then the API reads work, labelling, listing and predict are
    403, the detail page offers no label or block form, and admin shows verdicts
    read-only."""
    viewer = _member(django_user_model, ROLE_VIEWER)
    txn = _transaction()
    api = _api(viewer)
    assert api.get("/api/transactions").status_code == 200
    label = api.post(f"/api/transactions/{txn.transaction_id}/label", {"is_fraud": 1})
    assert label.status_code == 403
    block = {"kind": "card", "value": "u-1", "action": "block", "note": "stolen"}
    assert api.post("/api/lists", block, format="json").status_code == 403
    assert api.post("/api/predict", {}, format="json").status_code == 403

    client.force_login(viewer)
    page = client.get(f"/transactions/{txn.transaction_id}/").content.decode()
    assert 'id="label-form"' not in page
    admin_page = client.get(
        reverse("admin:transactions_transaction_change", args=[txn.pk])
    )
    assert admin_page.status_code == 200
    assert b'name="_save"' not in admin_page.content
    assert not Label.objects.exists() and not ListEntry.objects.exists()


def test_a_viewer_cannot_resend_alerts_or_fire_webhook_tests(django_user_model, client):
    """Given a Viewer (who may read webhooks and deliveries), posting admin's
    "send now" or "send a test event" changes nothing: both need 'change'."""
    from django.utils import timezone

    from detection.models import AlertDelivery, AlertWebhook

    webhook = AlertWebhook.objects.create(name="cases", url="http://127.0.0.1:9/")
    failed = AlertDelivery.objects.create(
        webhook=webhook,
        transaction_id="t-1",
        payload={},
        state="failed",
        attempts=10,
        next_attempt_at=timezone.now(),
        created_at=timezone.now(),
    )
    client.force_login(_member(django_user_model, ROLE_VIEWER))
    listing = client.get("/admin/detection/alertdelivery/")
    assert listing.status_code == 200
    assert b"retry_now" not in listing.content
    client.post(
        "/admin/detection/alertdelivery/",
        {"action": "retry_now", "_selected_action": [str(failed.pk)], "index": "0"},
    )
    failed.refresh_from_db()
    assert failed.state == "failed"
    assert b"send_test" not in client.get("/admin/detection/alertwebhook/").content


def test_an_analyst_labels_and_blocks_but_cannot_tune_rules(django_user_model, client):
    """Given an Analyst, then labelling and blocking succeed, and the rules in
    admin are read-only: the change form has no Save and a POST is refused."""
    analyst = _member(django_user_model, ROLE_ANALYST)
    txn = _transaction()
    api = _api(analyst)
    label = api.post(
        f"/api/transactions/{txn.transaction_id}/label",
        {"is_fraud": True, "note": "confirmed with cardholder"},
        format="json",
    )
    assert label.status_code == 201, label.content
    block = {"kind": "card", "value": "u-1", "action": "block", "note": "stolen"}
    assert api.post("/api/lists", block, format="json").status_code == 201

    client.force_login(analyst)
    page = client.get(f"/transactions/{txn.transaction_id}/").content.decode()
    assert 'id="label-form"' in page
    rule = Rule.objects.get(code="huge_amount")
    url = reverse("admin:detection_rule_change", args=[rule.pk])
    assert b'name="_save"' not in client.get(url).content
    assert client.post(url, {"weight": "0.1"}).status_code == 403
    rule.refresh_from_db()
    assert rule.weight != 0.1


def test_a_risk_admin_can_change_a_rule_in_admin(django_user_model, client):
    """Given a Risk admin, then the rule change form offers Save."""
    risk_admin = _member(django_user_model, ROLE_RISK_ADMIN)
    client.force_login(risk_admin)
    rule = Rule.objects.get(code="huge_amount")
    page = client.get(reverse("admin:detection_rule_change", args=[rule.pk]))
    assert page.status_code == 200
    assert b'name="_save"' in page.content


def test_a_scoring_client_records_payments_and_nothing_else(django_user_model):
    """Given a gateway's user in Scoring client (no staff), then predict records
    and scores a payment, and labelling is refused."""
    gateway = _member(django_user_model, ROLE_SCORING_CLIENT, staff=False)
    api = _api(gateway)
    payment = {"transaction_id": "t-gw-1", "user_id": "u-9", "amount": "12.50"}
    response = api.post("/api/predict", payment, format="json")
    assert response.status_code in (200, 201), response.content
    assert Transaction.objects.filter(transaction_id="t-gw-1").exists()
    label = api.post("/api/transactions/t-gw-1/label", {"is_fraud": True})
    assert label.status_code == 403


def test_a_scoring_client_is_not_told_another_payments_values(
    django_user_model, api_client
):
    """An id reused for another payment is a 409; to a gateway that may not
    read the ledger, without the stored payment's card and amount, nor which
    of them differs (one at a time, that would confirm each). A replay of the
    same payment answers the verdict without the analysts' label since."""
    from detection.services import transaction_label

    stored = transaction_stored("t-taken", user_id="u-victim", amount=Decimal("987.65"))
    transaction_label(record=stored, is_fraud=True, note="called the cardholder")
    api = _api(_member(django_user_model, ROLE_SCORING_CLIENT, staff=False))
    for guess in ({"user_id": "u-9", "amount": "987.65"}, {"user_id": "u-victim"}):
        payment = {"transaction_id": "t-taken", "amount": "1.00", **guess}
        response = api.post("/api/predict", payment, format="json")
        assert response.status_code == 409
        (error,) = response.json()["transaction_id"]
        assert error == (
            "transaction_id 't-taken' is already stored for another payment; "
            "ids must not be reused. Not scored."
        )
    same = {"transaction_id": "t-taken", "user_id": "u-victim", "amount": "987.65"}
    replay = api.post("/api/predict", same, format="json")
    assert replay.status_code == 200
    assert replay.json()["status"] == "fraud" and replay.json()["label"] is None
    # One who may read is told what differs.
    told = api_client.post("/api/predict", {**same, "amount": "1.00"}, format="json")
    assert "u-victim" not in told.json()["transaction_id"][0]
    assert "amount 987.65; this one: amount 1.00" in told.json()["transaction_id"][0]


@pytest.mark.parametrize("role", [ROLE_SCORING_CLIENT, None])
def test_only_roles_that_read_can_read(django_user_model, client, role):
    """A gateway's token records payments and reads nothing (a leaked one
    exposes no one's payments): no list, verdict, export, model, rule or
    what-if, and no dashboard page; neither does a user in no group. A
    Viewer reads all of them."""
    transaction_stored("t-read-1")
    user = django_user_model.objects.create_user(username="someone")
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    api = _api(user)
    reads = [
        "/api/transactions",
        "/api/transactions/t-read-1",
        "/api/transactions/t-read-1/labels",
        "/api/transactions/export",
        "/api/models",
        "/api/rules",
        "/api/thresholds",
        "/api/lists",
    ]
    for path in reads:
        refused = api.get(path)
        assert refused.status_code == 403, path
        assert "Viewer" in refused.json()["detail"], path
    payment = {"user_id": "u-1", "amount": "5.00"}
    what_if = api.post("/api/validate-transaction", payment, format="json")
    assert what_if.status_code == 403
    client.force_login(user)
    for page in ("/", "/transactions/", "/transactions/t-read-1/"):
        assert client.get(page).status_code == 403, page

    user.groups.add(Group.objects.get(name=ROLE_VIEWER))
    api = _api(type(user).objects.get(pk=user.pk))
    for path in reads:
        assert api.get(path).status_code == 200, path
    assert client.get("/transactions/t-read-1/").status_code == 200
