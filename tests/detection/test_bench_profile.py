"""The stream benchmark's profile reading: shares of the consumer loop's samples."""

from detection.benchmarks.stream import loop_profile

LOOP = "TransactionStream.run (detection/stream.py:440);"


def test_loop_profile_counts_inclusive_shares_of_the_loop_only(tmp_path):
    """Stacks outside the loop (start-up, other threads) are left out; a function
    counts its callees' samples, once per stack even when it recurses."""
    profile = tmp_path / "consumer.prof"
    profile.write_text(
        "<module> (manage.py:17);import_module (importlib/__init__.py:126) 50\n"
        "_bootstrap (threading.py:995);select (selectors.py:468) 40\n"
        f"<module> (manage.py:17);{LOOP}"
        "batch_process (detection/stream.py:330);"
        "rows_insert (transactions/bulk.py:230) 6\n"
        f"<module> (manage.py:17);{LOOP}"
        "batch_process (detection/stream.py:330);"
        "walk (detection/forest.py:10);walk (detection/forest.py:12) 3\n"
        f"<module> (manage.py:17);{LOOP}batch_poll (detection/stream.py:250) 1\n"
    )
    shares = dict(loop_profile(profile))
    assert shares["TransactionStream.run"] == 1.0
    assert shares["batch_process (stream.py)"] == 0.9
    assert shares["rows_insert (bulk.py)"] == 0.6
    assert shares["walk (forest.py)"] == 0.3
    assert shares["batch_poll (stream.py)"] == 0.1
    assert "<module> (manage.py)" not in shares
    assert "select (selectors.py)" not in shares
    assert list(shares)[:2] == ["TransactionStream.run", "batch_process (stream.py)"]


def test_loop_profile_of_a_run_that_never_looped_is_empty(tmp_path):
    """A profile without the loop (the consumer failed at start) has no shares."""
    profile = tmp_path / "consumer.prof"
    profile.write_text("<module> (manage.py:17) 5\n")
    assert loop_profile(profile) == []
