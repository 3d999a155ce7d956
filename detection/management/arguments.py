"""Argument types and checks the management commands share.

Bad input is an argparse error (a CommandError under call_command) naming the
option, never a traceback from deep in the work.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from django.core.management.base import CommandError

from fraudsite.kafka_names import TOPIC_NAME_RULE, topic_name_ok

# A database id: SQLite and PostgreSQL bigint hold a signed 64-bit integer.
ID_MAX = 2**63 - 1


def number(
    kind=float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    unit: str = "",
):
    """Return an argparse type for a finite `kind` (int or float) between `low`
    and `high` (`low` itself refused when `low_open`); `unit` names what it
    counts in the error ("days", "seconds")."""
    if low is not None and high is not None:
        span = (
            f"greater than {low:g} and at most {high:g}"
            if low_open
            else f"from {low:g} to {high:g}"
        )
    elif low is not None:
        span = f"greater than {low:g}" if low_open else f"{low:g} or more"
    elif high is not None:
        span = f"at most {high:g}"
    else:
        span = ""
    noun = "a whole number" if kind is int else "a finite number"
    if unit:
        noun += f" of {unit}"
    expected = f"must be {noun} {span}".rstrip()

    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        if low is not None and not (value > low if low_open else value >= low):
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        if high is not None and not value <= high:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value

    parse.__name__ = "int" if kind is int else "number"
    return parse


def database_id(text: str) -> int:
    """An argparse type for a row id: a whole number from 1 to 2**63 - 1."""
    return number(int, low=1, high=ID_MAX)(text)


def topic_name(text: str) -> str:
    """An argparse type for a Kafka topic name."""
    if not topic_name_ok(text):
        raise argparse.ArgumentTypeError(f"must be {TOPIC_NAME_RULE}, got {text!r}")
    return text


def not_blank(text: str) -> str:
    """An argparse type for a name that may not be empty or only spaces."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must not be empty, got {text!r}")
    return text


def same_file(a: Path, b: Path) -> bool:
    """Whether paths `a` and `b` name one file (through links, `..` or case
    folding where the file system folds it)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # One of them does not exist (yet).
        return a.resolve() == b.resolve()


def input_file_check(path: Path, option: str = "input") -> None:
    """Refuse an input that is missing or a directory, naming which."""
    if path.is_dir():
        raise CommandError(f"The {option} {path} is a directory, not a file.")
    if not path.is_file():
        raise CommandError(f"No such {option} file: {path}")


def outputs_check(outputs: dict[str, Path], inputs: dict[str, Path]) -> None:
    """Refuse an output (option name: path) that is a directory or that would
    overwrite one of the inputs (option name: path) it is read from."""
    for name, output in outputs.items():
        if output.is_dir():
            raise CommandError(f"{name} {output} is a directory, not a file.")
        for source, path in inputs.items():
            if same_file(output, path):
                raise CommandError(
                    f"{name} {output} is the {source} file {path}: writing it would "
                    "overwrite what is read; choose another output."
                )
