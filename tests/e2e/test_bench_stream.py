"""`manage.py bench_stream` runs end to end on a small load and prints every figure.

The figures themselves are not asserted (speed lives in benchmarks, not tests); this
keeps the benchmark runnable: every phase completes and reports a positive rate.
"""

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FIGURES = {
    "one process, 2 runs": r"([\d,]+) / [\d,]+ rec/s",
    "raw consume+decode ceiling": r"([\d,]+) rec/s",
    "stock kafka-python ceiling": r"([\d,]+) rec/s \(pure-Python crc32c",
    "one-at-a-time, scikit-learn": r"([\d,]+) rec/s",
    "one-at-a-time, packed forest": r"([\d,]+) rec/s",
    "two processes, one group": r"([\d,]+) rec/s",
    "sustained throughput, 1 process": r"([\d,]+) rec/s",
    "p99 latency at": r"([\d,]+) ms",
}


@pytest.mark.kafka
def test_bench_stream_runs_every_phase(tmp_path, kafka_bootstrap, redis_url):
    """Given a small load, every phase finishes and reports a positive figure, and
    the scratch databases are gone afterwards."""
    env = {
        **os.environ,
        "DEBUG": "1",
        "KAFKA_BROKER": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "TMPDIR": str(tmp_path),
    }
    env.pop("DATABASE_URL", None)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "bench_stream", "--records", "3000",
         "--users", "300", "--history-days", "2", "--latency-rate", "300",
         "--latency-seconds", "2", "--one-at-a-time-records", "100",
         "--repeats", "2"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "its classifier (scored in every batch below):" in result.stdout
    summary = result.stdout[result.stdout.index("Stream benchmark") :]
    for name, pattern in FIGURES.items():
        line = next((x for x in summary.splitlines() if name in x), None)
        assert line is not None, f"{name!r} missing from:\n{summary}"
        found = re.search(pattern, line)
        assert found and int(found.group(1).replace(",", "")) > 0, line
    # The scratch databases are removed; nothing is left in the temp dir but logs.
    assert not list(tmp_path.glob("bench-stream-*/bench*.sqlite3*"))


@pytest.mark.kafka
def test_sigterm_stops_the_benchmark_and_everything_it_started(tmp_path, redis_url):
    """SIGTERM during the run (a kill, a CI timeout) ends it like Ctrl-C: the
    embedded broker it started is stopped, its consumers too, and the scratch
    databases are dropped."""
    env = {**os.environ, "DEBUG": "1", "REDIS_URL": redis_url, "TMPDIR": str(tmp_path)}
    for name in ("DATABASE_URL", "DJANGO_SETTINGS_MODULE", "KAFKA_BROKER"):
        env.pop(name, None)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "bench_stream", "--records", "200000",
         "--users", "300", "--history-days", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines = []
    try:
        for line in process.stdout:  # ends at exit: the read has no deadline of its own
            lines.append(line)
            if line.startswith("Preloading"):
                process.send_signal(signal.SIGTERM)
                break
        out, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = "".join(lines) + out
    broker_pid = int(re.search(r"kafka started on \S+ \(pid (\d+)\)", text).group(1))
    try:
        assert process.returncode != 0
        assert f"kafka stopped (pid {broker_pid})" in text
        with pytest.raises(ProcessLookupError):
            os.kill(broker_pid, 0)
    finally:  # a failing run must not leave the broker behind either
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker_pid, signal.SIGKILL)
    assert not list(tmp_path.glob("bench-stream-*/bench*.sqlite3*"))
