"""`make run`'s environment: the process's variables, then a local `.env`."""

from __future__ import annotations

from fraudsite.launcher import launch_environment


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


def test_an_empty_value_means_unset_as_in_the_settings(tmp_path):
    """`KEY=` (a copied `.env.example`) leaves the launcher's own defaults in
    place: DEBUG on, the embedded broker, port 8000; exported or from the file."""
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=\nKAFKA_BROKER=\nKAFKA_TOPIC_PARTITIONS=\n")
    env = launch_environment({"PORT": ""}, env_file)
    for name in ("DEBUG", "KAFKA_BROKER", "KAFKA_TOPIC_PARTITIONS", "PORT"):
        assert name not in env
    # An exported empty value is unset too, so the file's value applies (as the
    # launched processes' settings, reading the same file, will see it).
    env_file.write_text("PORT=8111\n")
    assert launch_environment({"PORT": ""}, env_file)["PORT"] == "8111"


def test_without_an_env_file_the_environment_is_taken_as_it_is(tmp_path):
    env = launch_environment({"REDIS_URL": "redis://h:1/0"}, tmp_path / "none")
    assert env == {"REDIS_URL": "redis://h:1/0"}
