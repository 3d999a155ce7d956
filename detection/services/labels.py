"""Labels: an analyst's or a chargeback's word on a stored transaction."""

from __future__ import annotations

from django.db import transaction

from detection.events import labels_announce
from detection.profiles import OrmStateStore
from detection.scoring import scoring_config_from_db, state_learn_later
from detection.services.training import message_as_scored
from transactions.messages import SCORING_INPUT_FIELDS
from transactions.models import Label, Transaction
from transactions.services import label_create


def transaction_label(
    *,
    record: Transaction,
    is_fraud: bool,
    source: str = Label.Source.ANALYST,
    note: str = "",
    reference: str = "",
    created_by=None,
    announce: bool = True,
    reported_at=None,
) -> Label:
    """Record a label on a stored transaction (latest wins) and return it.

    A transaction judged fraud did not teach its card's profile (UserState;
    `Transaction.profile_learned` is False). The first label saying it was
    legitimate teaches it now, in the same database transaction, so that the
    cardholder's next purchases are compared with it (a trip abroad confirmed by
    the cardholder stops reading as impossible travel). Later relabels change
    nothing in the profile: a profile cannot unlearn, and learning twice would
    count the purchase twice. The API, the dashboard and the admin all label
    through here; the verdict stays as it was. Once committed, open dashboards
    are told (`announce=False`: the caller announces, as the chargeback
    consumer does once per batch).
    """
    with transaction.atomic():
        # The conditional update claims the lesson: of two labels at once (a
        # double click, the API and the admin) only one finds it unlearned.
        # Transactions that never touched a profile (seed_transactions) and
        # verdicts stored before the flag existed (their profile learned them
        # then) are marked learned and teach nothing.
        teach = (
            not is_fraud
            and Transaction.objects.filter(pk=record.pk, profile_learned=False).update(
                profile_learned=True
            )
            == 1
        )
        label = label_create(
            transaction=record,
            is_fraud=is_fraud,
            source=source,
            note=note,
            reference=reference,
            created_by=created_by,
            reported_at=reported_at,
        )
        if teach:
            store = OrmStateStore(use_cache=False)
            state = store.states_get({record.user_id})[record.user_id]
            message = message_as_scored(
                {
                    name: getattr(record, name)
                    for name in (*SCORING_INPUT_FIELDS, "amount_base")
                }
            )
            rates = scoring_config_from_db(model=None).rates
            state_learn_later(state, message, rates=rates)
            store.states_put([state])
        if announce:
            transaction.on_commit(lambda: labels_announce([label]))
    return label
