"""The two-command setup stays runnable: CI script and Makefile targets."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ci_script_is_valid_bash_and_runs_make_test():
    """.ci/run parses as bash and ends by running `make test`."""
    script = ROOT / ".ci" / "run"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    lines = [line for line in script.read_text().splitlines() if line.strip()]
    assert lines[-1].endswith("make test")


def test_makefile_targets_exist():
    """make knows run, test, bench and lint (a dry run resolves each)."""
    for target in (
        "run",
        "test",
        "bench",
        "bench-postgres",
        "lint",
        "test-postgres",
        "screenshot",
    ):
        result = subprocess.run(
            ["make", "-n", target], cwd=ROOT, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
