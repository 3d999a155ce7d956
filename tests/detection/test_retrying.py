"""The refusal streak of the stream's storing (pure logic: a fake attempt)."""

import pytest
from django.db import DataError

from detection.retrying import RefusalStreak, StreamDatabaseError, refusals_isolated


def store(items: str, streak: RefusalStreak) -> list[str]:
    """Store `items` ("S" the database stores, "R" it refuses) through
    refusals_isolated; return what became of each, in order."""

    def attempt(start: int, stop: int) -> list[str]:
        if "R" in items[start:stop]:
            raise DataError("refused")
        return ["stored"] * (stop - start)

    def refused(start: int, stop: int, error: Exception) -> list[str]:
        return ["dead letter"] * (stop - start)

    return refusals_isolated(
        len(items), attempt, refused, lambda a, b: [*a, *b], streak
    )


def test_a_record_stored_between_refusals_starts_the_count_again():
    streak = RefusalStreak(2)
    assert store("RSRSR", streak) == ["dead letter", "stored"] * 2 + ["dead letter"]
    assert streak.count == 1
    # Across batches too: the next batch starts with a stored record.
    assert store("SR", streak) == ["stored", "dead letter"]


def test_the_limit_of_refusals_in_a_row_stops_before_the_last_dead_letter():
    with pytest.raises(StreamDatabaseError, match="refused 3 records in a row"):
        store("SRRRS", RefusalStreak(3))
    # The count carries over from one batch to the next.
    streak = RefusalStreak(3)
    assert store("SRR", streak) == ["stored", "dead letter", "dead letter"]
    with pytest.raises(StreamDatabaseError, match="The last refusal: refused"):
        store("R", streak)


def test_no_limit_never_stops():
    assert store("R" * 100, RefusalStreak(None)) == ["dead letter"] * 100
