"""`make run`'s environment: the process's variables, then a local `.env`."""

from __future__ import annotations

import shlex

from fraudsite.launcher import _setting, launch_environment, shell_exports


def test_a_local_env_file_fills_what_the_environment_leaves_unset(tmp_path):
    """A broker, rate or port kept in `.env` reaches `make run` (it used to read
    the process environment only, and replaced a `.env` broker with its embedded
    one); an exported variable still wins over the file."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# a comment\n"
        "KAFKA_BROKER=kafka.internal:9092\n"
        "SIMULATOR_RATE=50\n"
        "PORT='8111'\n"
    )
    env = launch_environment({"PORT": "8222", "HOME": "/root"}, env_file)
    assert env["KAFKA_BROKER"] == "kafka.internal:9092"
    assert env["SIMULATOR_RATE"] == "50"
    assert env["PORT"] == "8222"
    assert env["HOME"] == "/root"


def test_an_empty_value_means_the_default_as_in_the_settings(tmp_path):
    """`KEY=` (a copied `.env.example`) leaves the launcher's own defaults in
    place (port 8000, the embedded broker), exported or from the file. An
    exported empty value is kept, as the settings keep it (django-environ does
    not fill an existing key from the file), so the launched processes read
    their defaults too, not the file's value."""
    env_file = tmp_path / ".env"
    env_file.write_text("KAFKA_BROKER=\nKAFKA_TOPIC_PARTITIONS=\nPORT=8111\n")
    env = launch_environment({"PORT": ""}, env_file)
    assert _setting(env, "PORT", "8000") == "8000"
    assert env["PORT"] == ""
    assert _setting(env, "KAFKA_BROKER", "embedded") == "embedded"
    assert _setting(env, "KAFKA_TOPIC_PARTITIONS", "6") == "6"


def test_the_simulators_settings_beat_an_old_env_file_but_not_an_export(tmp_path):
    """An `.env` copied from an older example (DEBUG=0, the production limits)
    would stop `make run` (no SECRET_KEY) or its simulator (payments refused
    as too far ahead, a classifier never trained): the launcher's values win
    over the file; one exported with a value still wins over the launcher."""
    env_file = tmp_path / ".env"
    env_file.write_text(
        "DEBUG=0\nTRANSACTION_MAX_FUTURE_SECONDS=86400\n"
        "MODEL_LABEL_MATURITY_SECONDS=2592000\n"
    )
    env = launch_environment({}, env_file)
    assert env["DEBUG"] == "1"
    assert env["TRANSACTION_MAX_FUTURE_SECONDS"] == "off"
    assert env["MODEL_LABEL_MATURITY_SECONDS"] == "0"
    exported = launch_environment({"TRANSACTION_MAX_FUTURE_SECONDS": "600"}, env_file)
    assert exported["TRANSACTION_MAX_FUTURE_SECONDS"] == "600"


def test_without_an_env_file_the_environment_is_taken_as_it_is(tmp_path):
    env = launch_environment({"REDIS_URL": "redis://h:1/0"}, tmp_path / "none")
    assert env["REDIS_URL"] == "redis://h:1/0"
    assert env["DEBUG"] == "1"


def test_the_banner_gives_another_shell_the_pipelines_settings(tmp_path):
    """The `export` line `make run` prints carries its broker, Redis and the
    simulator's limits (a consumer started without them dead-letters the
    simulator's payments as dated ahead), quoted for a shell; unset ones are
    left out."""
    env = launch_environment({}, tmp_path / "none")
    env["MODEL_LABEL_MATURITY_SECONDS"] = ""
    env["KAFKA_BROKER"] = "127.0.0.1:40123"
    env["REDIS_URL"] = "redis://127.0.0.1:6390/0?name=a b"
    line = shell_exports(env)
    words = shlex.split(line)
    assert words[0] == "export"
    assert dict(word.split("=", 1) for word in words[1:]) == {
        "DEBUG": "1",
        "KAFKA_BROKER": "127.0.0.1:40123",
        "REDIS_URL": "redis://127.0.0.1:6390/0?name=a b",
        "TRANSACTION_MAX_FUTURE_SECONDS": "off",
    }
