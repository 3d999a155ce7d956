"""The management commands' shared argument types, and seed_transactions'."""

from __future__ import annotations

import argparse
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from detection.management.arguments import database_id, number, topic_name
from transactions.models import Transaction

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "nan"], "finite number of days greater than 0"),
        (["--days", "inf"], "finite number of days greater than 0"),
        (["--days", "-1"], "finite number of days greater than 0"),
        (["--count", "0"], "whole number 1 or more"),
        (["--chunk", "x"], "whole number 1 or more"),
    ],
)
def test_seed_transactions_refuses_bad_numbers(args, message):
    """Odd numbers are command errors, before any row is written."""
    with pytest.raises(CommandError, match=message):
        call_command("seed_transactions", "--count", "10", *args, stdout=StringIO())
    assert not Transaction.objects.exists()


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [(float, "0.5", 0.5), (float, "10", 10.0), (int, "3", 3)],
)
def test_number_takes_finite_values_in_range(kind, text, expected):
    assert number(kind, low=0, low_open=True, high=10)(text) == expected


@pytest.mark.parametrize("text", ["nan", "-inf", "inf", "0", "10.5", "1e400", "x"])
def test_number_refuses_odd_values(text):
    with pytest.raises(argparse.ArgumentTypeError, match="greater than 0"):
        number(float, low=0, low_open=True, high=10)(text)


def test_database_id_is_a_signed_64_bit_integer():
    assert database_id(str(2**63 - 1)) == 2**63 - 1
    for text in [str(2**63), "0", "99999999999999999999999"]:
        with pytest.raises(argparse.ArgumentTypeError, match="from 1 to"):
            database_id(text)


@pytest.mark.parametrize("text", ["", ".", "..", "a b", "x" * 250, "é"])
def test_topic_name_refuses_what_kafka_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError, match="Kafka topic name"):
        topic_name(text)
    assert topic_name("fraud.transactions-v1_x") == "fraud.transactions-v1_x"


@pytest.mark.parametrize("text", ["inf", "nan", "-inf"])
def test_number_without_an_upper_bound_still_refuses_infinity(text):
    """The --chargebacks-after type: 0 or more, but finite."""
    with pytest.raises(argparse.ArgumentTypeError, match="finite number"):
        number(float, low=0)(text)
