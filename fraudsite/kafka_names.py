"""Kafka's rule for topic names, for the settings' start-up check and the
commands' `--topic` (no Django imports: settings import this)."""

import re

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")
TOPIC_NAME_RULE = "a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')"


def topic_name_ok(name: str) -> bool:
    """Return whether Kafka takes `name` as a topic name ("." and ".." it refuses)."""
    return bool(_TOPIC_NAME.fullmatch(name)) and name not in (".", "..")
