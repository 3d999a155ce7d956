"""Ready-made roles: Django groups holding the permissions each kind of user needs.

A risk team has people who watch, people who decide, people who tune, and machines
that only submit payments. Each role is a `Group`; giving someone a role is ticking
its group on their user in admin (plus "Staff status" for admin access). The groups
are brought up to date after every `migrate`: a role gains the permissions listed
here that it lacks. Permissions an admin added to a group by hand are kept, so a
deployment can widen a role; to narrow one, copy it to a group of your own.

Reading the dashboard and the API takes "Can view transaction"
(fraudsite.permissions.READ_PERMISSION), which every role but Scoring client
holds; the other permissions govern writing, and what the admin shows.
"""

from __future__ import annotations

from django.db import transaction

ROLE_VIEWER = "Viewer"
ROLE_ANALYST = "Analyst"
ROLE_RISK_ADMIN = "Risk admin"
ROLE_SCORING_CLIENT = "Scoring client"

# Read-only in admin: verdicts and their reasons, labels, rules, models, lists,
# dead letters, profiles, deliveries and backtest jobs. Not the webhooks: their
# signing secrets.
_VIEW = [
    "transactions.view_transaction",
    "transactions.view_label",
    "detection.view_rule",
    "detection.view_decisionthresholds",
    "detection.view_modelversion",
    "detection.view_listentry",
    "detection.view_deadletter",
    "detection.view_exchangerate",
    "detection.view_userprofile",
    "detection.view_alertdelivery",
    "detection.view_backtestjob",
]
# Decide on cases: label them (which may teach a card's profile) and keep the
# block and allow lists.
_DECIDE = [
    "transactions.add_label",
    "detection.add_listentry",
    "detection.change_listentry",
    "detection.delete_listentry",
]
# Change how everything is scored or alerted.
_TUNE = [
    "detection.change_rule",
    "detection.change_decisionthresholds",
    "detection.change_modelversion",  # activate a stored model (roll back/forward)
    "detection.add_exchangerate",
    "detection.change_exchangerate",
    "detection.change_deadletter",
    "detection.redrive_deadletter",
    "detection.view_alertwebhook",
    "detection.add_alertwebhook",
    "detection.change_alertwebhook",
    "detection.delete_alertwebhook",
    "detection.change_alertdelivery",
    "detection.change_backtestjob",  # cancel anyone's backtest job
]

ROLES: dict[str, list[str]] = {
    ROLE_VIEWER: _VIEW,
    ROLE_ANALYST: [*_VIEW, *_DECIDE],
    ROLE_RISK_ADMIN: [*_VIEW, *_DECIDE, *_TUNE],
    # A payment gateway's API token: POST /api/predict records and scores.
    ROLE_SCORING_CLIENT: ["transactions.add_transaction"],
}


def roles_sync(*, using: str = "default") -> dict[str, int]:
    """Create the role groups and add the permissions each lacks.

    Return how many permissions were added to each group. Raise LookupError
    naming any listed permission that does not exist (a renamed model).
    """
    from django.contrib.auth.models import Group, Permission

    wanted = {perm for perms in ROLES.values() for perm in perms}
    found = {
        f"{app_label}.{codename}": pk
        for pk, app_label, codename in Permission.objects.using(using).values_list(
            "pk", "content_type__app_label", "codename"
        )
    }
    missing = sorted(wanted - found.keys())
    if missing:
        raise LookupError(f"Role permissions that do not exist: {', '.join(missing)}")
    added: dict[str, int] = {}
    with transaction.atomic(using=using):
        for name, perms in ROLES.items():
            group, _ = Group.objects.using(using).get_or_create(name=name)
            held = set(group.permissions.values_list("pk", flat=True))
            new = [found[perm] for perm in perms if found[perm] not in held]
            group.permissions.add(*new)
            added[name] = len(new)
    return added


def roles_sync_after_migrate(sender, using="default", **kwargs) -> None:
    """Keep the role groups current after `migrate` (and after a test flush)."""
    roles_sync(using=using)
