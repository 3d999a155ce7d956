"""Score-and-record: verdicts and user state stored in ONE database transaction.

The stream consumer, `POST /api/predict`, file ingestion and the dead-letter
redrive all store through `transaction_batch_score_record`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db import transaction

from detection.alerts import alert_deliveries_enqueue
from detection.profiles import OrmStateStore
from detection.scoring import ScoringConfig, Verdict, verdicts_score
from detection.state import UserState
from transactions.messages import TransactionMessage, amount_text
from transactions.models import Transaction, reason_codes_text
from transactions.selectors import transaction_ids_existing
from transactions.services import transactions_record

logger = logging.getLogger(__name__)


@dataclass
class RecordedBatch:
    """What one score-and-record call did.

    `created` holds the new ledger rows as column values keyed by attribute name
    (what `Transaction(**row)` takes), oldest first: the stream's hot path builds
    no model instances (14 us each, 9% of a batch in `bench_stream`). `rescored`
    is True when another writer got in between scoring and storing, so the batch
    was scored again inside the write transaction.
    """

    created: list[dict]
    duplicates: list[str]
    states: list[UserState]
    rescored: bool = False


@dataclass
class ScoredBatch:
    """A batch scored but not stored yet, with what its verdicts were built on."""

    messages: list[TransactionMessage]
    duplicates: list[str]
    verdicts: list[Verdict]
    states: dict[str, UserState]
    # Each user's stored version (UserState.version) when the state was read.
    versions: dict[str, tuple[int, int]]


def transaction_row(
    message: TransactionMessage,
    verdict: Verdict,
    *,
    scored_at: datetime,
    source: str,
) -> dict:
    """Return the ledger row (column values) of a scored message.

    `amount_base` is the amount exactly as the features and the card's profile
    compared it (a float, unrounded): rounded to the base currency's cents,
    0.001 KWD (0.0033 USD) was stored as 0.00 and 0.002 KWD as 0.01, so the API
    answered 0.0, and a retrain, a label or a ledger backtest, which replay
    `amount_base` (`message_as_scored`), learned another amount than the
    stream had. The API and the live events give it as stored; reasons still
    write amounts to the cent for reading ("typical 0.00 USD").
    """
    return {
        "transaction_id": message.transaction_id,
        "user_id": message.user_id,
        "amount": message.amount,
        "amount_base": verdict.row.amount,
        "currency": message.currency,
        "timestamp": message.timestamp,
        "merchant_id": message.merchant_id,
        "merchant_category": message.merchant_category,
        "channel": message.channel,
        "location": message.location,
        "latitude": message.latitude,
        "longitude": message.longitude,
        "country": message.country,
        "is_fraud": message.is_fraud,
        "risk_score": verdict.risk_score,
        "status": verdict.status,
        "reasons": verdict.reasons,
        "reason_codes": reason_codes_text(verdict.reason_codes),
        "notes": verdict.notes,
        "model_score": verdict.model_score,
        "model_version": verdict.model_version,
        "scored_at": scored_at,
        "received_at": message.received_at or scored_at,
        "ingest_source": source,
        # verdicts_score folds a transaction into the profile unless judged fraud.
        "profile_learned": verdict.teaches,
        "features": verdict.vector,
    }


def transaction_batch_score(
    *,
    messages: Sequence[TransactionMessage],
    store: OrmStateStore,
    config: ScoringConfig,
) -> ScoredBatch:
    """Score the messages that are not stored yet; write nothing.

    Messages whose transaction_id is already stored, or repeated within the batch,
    are set aside unscored, so a replay changes neither the ledger nor any user's
    state. The users' states are advanced in place (in the store's cache too):
    a caller that does not go on to store them (`transaction_batch_score_record`
    does) must call `store.cache_clear()`.

    The states are read BEFORE the stored ids: a transaction another writer
    stores in between is then either in the state read and among the ids found,
    or in neither, and then its user's version has moved on by commit time.
    """
    states = store.states_get({m.user_id for m in messages})
    versions = {uid: state.version for uid, state in states.items()}
    existing = transaction_ids_existing(
        transaction_ids=[m.transaction_id for m in messages]
    )
    seen: set[str] = set()
    unique: list[TransactionMessage] = []
    duplicates: list[str] = []
    for message in messages:
        if message.transaction_id in existing or message.transaction_id in seen:
            duplicates.append(message.transaction_id)
            continue
        seen.add(message.transaction_id)
        unique.append(message)
    # Only users with something new are scored, checked and written.
    users = {m.user_id for m in unique}
    states = {uid: state for uid, state in states.items() if uid in users}
    versions = {uid: version for uid, version in versions.items() if uid in users}
    verdicts = verdicts_score(unique, states=states, config=config)
    return ScoredBatch(unique, duplicates, verdicts, states, versions)


def scored_batch_current(*, scored: ScoredBatch, store: OrmStateStore) -> bool:
    """Return True if no other writer moved one of these users on since the batch
    was scored.

    Call inside the write transaction: on SQLite it holds the database's write
    lock, on PostgreSQL this locks the users' rows, so the answer holds until
    commit. Every transaction stored for a user advances the user's version, so
    another writer that stored one of these ids for the same user after the
    states were read shows here. The same id stored for ANOTHER user (ids reused
    across cards) does not; the ledger's unique transaction_id refuses the insert
    (IntegrityError, the whole batch rolls back) and the retried batch finds the
    id stored.
    """
    return store.versions_get(scored.versions) == scored.versions


def transaction_batch_score_record(
    *,
    messages: Sequence[TransactionMessage],
    store: OrmStateStore,
    config: ScoringConfig,
    source: str,
) -> RecordedBatch:
    """Score new messages and store verdicts and user state in ONE DB transaction.

    Scoring is optimistic: it runs before the write transaction, and inside it
    `scored_batch_current` checks that no other writer moved one of the users on
    in between. If one did, the batch is scored again from the stored state,
    inside the transaction (`rescored`). So consumers of one
    SQLite database, where a writer holds the whole database, score in parallel
    and take turns only to write; the users' partitions keep conflicts rare.
    Called inside an outer transaction, it scores there directly.

    If anything fails, the store's cache is cleared: the states it handed out may
    have been advanced, and the database is the truth again.
    """
    scored = None
    rescored = False
    try:
        if not transaction.get_connection().in_atomic_block:
            scored = transaction_batch_score(
                messages=messages, store=store, config=config
            )
        with transaction.atomic():
            if scored is None or not scored_batch_current(scored=scored, store=store):
                if scored is not None:
                    # The cached states were advanced from stale ones.
                    store.cache_clear()
                    rescored = True
                scored = transaction_batch_score(
                    messages=messages, store=store, config=config
                )
            scored_at = datetime.now(UTC)
            rows = [
                transaction_row(m, v, scored_at=scored_at, source=source)
                for m, v in zip(scored.messages, scored.verdicts, strict=True)
            ]
            transactions_record(rows=rows)
            store.states_put(scored.states.values())
            if config.webhooks:
                alert_deliveries_enqueue(rows, config.webhooks, now=scored_at)
    except BaseException:
        # Scoring advanced cached states in place; the database has none of it.
        store.cache_clear()
        raise
    store.cache_commit(scored.states.values())
    if rescored:
        logger.info(
            "another writer stored some of these %d users' transactions while the "
            "batch was scored: scored again under the write lock",
            len(scored.states),
        )
    return RecordedBatch(
        created=rows,
        duplicates=scored.duplicates,
        states=list(scored.states.values()),
        rescored=rescored,
    )


# What makes two messages with one transaction_id the same payment. The time is
# left out: a producer that retries may stamp the copy anew, or leave it out.
PAYMENT_IDENTITY = ("user_id", "amount", "currency")


def transaction_id_conflicts(
    messages: Sequence[TransactionMessage], *, reveal: bool = True
) -> list[str | None]:
    """Return, for each message, why it reuses a stored id for another payment.

    None where it does not (the id is the stored payment's, or not stored).
    For messages found already stored (`RecordedBatch.duplicates`): a replay of
    the same payment is fine and changes nothing, but the same id on another
    card, amount or currency is a different payment that was not scored. The
    stream makes it a dead letter and the API a 409, instead of answering with
    the stored payment's verdict. With `reveal` False the reason says neither
    which fields differ nor the stored payment's values (for a caller who may
    not read the ledger: one field at a time, an id would confirm another
    card's amount, then its card).
    """
    wanted = {m.transaction_id for m in messages}
    stored = {
        row["transaction_id"]: row
        for row in Transaction.objects.filter(transaction_id__in=wanted).values(
            "transaction_id", *PAYMENT_IDENTITY
        )
    }
    conflicts: list[str | None] = []
    for message in messages:
        row = stored.get(message.transaction_id)
        differ = [
            name
            for name in PAYMENT_IDENTITY
            if row is not None and getattr(message, name) != row[name]
        ]
        if not differ:
            conflicts.append(None)
            continue
        # The stored amount with its currency's decimals, not the column's 3.
        shown = {**row, "amount": amount_text(row["amount"], row["currency"])}
        theirs = ", ".join(f"{name} {shown[name]}" for name in differ)
        ours = ", ".join(f"{name} {getattr(message, name)}" for name in differ)
        what = f" ({theirs}; this one: {ours})" if reveal else ""
        conflicts.append(
            f"transaction_id {message.transaction_id!r} is already stored for "
            f"another payment{what}; ids must not be reused. Not scored."
        )
    return conflicts
