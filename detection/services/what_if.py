"""What-if: score a hypothetical transaction against stored history, change nothing."""

from __future__ import annotations

import itertools
import statistics
from datetime import UTC, datetime

from detection.profiles import OrmStateStore
from detection.scoring import ScoringConfig, Verdict, verdicts_score
from detection.state import UserState
from transactions.messages import TransactionMessage

# What-if without a time, on a card whose feed runs ahead: bounds of the gap.
WHAT_IF_GAP_DEFAULT_SECONDS = 3600.0
WHAT_IF_GAP_MIN_SECONDS = 60.0
WHAT_IF_GAP_MAX_SECONDS = 86400.0


def _usual_gap_seconds(state: UserState) -> float:
    """Return the median time between the card's recent transactions (1 h when
    it has fewer than two), within 1 min .. 1 day."""
    times = sorted(pair[0] for pair in state.recent)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    if not gaps:
        return WHAT_IF_GAP_DEFAULT_SECONDS
    median = statistics.median(gaps)
    return min(max(median, WHAT_IF_GAP_MIN_SECONDS), WHAT_IF_GAP_MAX_SECONDS)


def _fmt_gap(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def transaction_what_if(
    *, message: TransactionMessage, config: ScoringConfig, timed: bool = True
) -> tuple[Verdict, UserState]:
    """Score a hypothetical transaction against stored history; change nothing.

    Return the verdict and the user's state as it was before the transaction.
    With `timed=False` (the caller gave no time), the transaction is judged now,
    or, when the card's last transaction is later (event times of a simulated or
    delayed feed can run ahead of the clock), one usual gap of the card after it:
    "what if this card paid next, at its own pace". Never a late arrival that
    skips the travel check, nor a payment a second after the last one (which
    velocity and the model would read as a burst).
    """
    states = OrmStateStore(use_cache=False, read_only=True).states_get(
        {message.user_id}
    )
    state = states[message.user_id]
    notes = []
    if state.count == 0:
        notes.append(
            f"No stored history for card {message.user_id!r} (a new card, or a "
            "mistyped id): judged as its first transaction."
        )
    last = state.last_epoch
    if not timed and last is not None and last >= message.timestamp.timestamp():
        gap = _usual_gap_seconds(state)
        message.timestamp = datetime.fromtimestamp(last + gap, tz=UTC)
        notes.append(
            f"No time given: judged {_fmt_gap(gap)} after the card's last "
            "transaction (its usual gap), at "
            f"{message.timestamp:%Y-%m-%d %H:%M:%S} UTC, as the last one is dated "
            "later than now."
        )
    # With apply_state=False the states stay as they were read, unadvanced.
    (verdict,) = verdicts_score(
        [message], states=states, config=config, apply_state=False
    )
    verdict.notes[:0] = notes
    return verdict, state
