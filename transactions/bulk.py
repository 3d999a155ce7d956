"""Fast bulk reads and writes of model rows (the stream's hot path)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from django.conf import settings
from django.db import connections, router
from django.db.backends.base.operations import BaseDatabaseOperations
from django.db.models import Field, Model
from django.db.models.constants import OnConflict
from django.utils import timezone

# Field types whose Python values the database drivers take as they are (the values
# come from the message parser or the scoring core, already of the right type).
_PLAIN_TYPES = frozenset(
    {
        "BigIntegerField",
        # bytes: sqlite3 stores them as a BLOB, psycopg sends them as bytea.
        "BinaryField",
        "BooleanField",
        "CharField",
        "FloatField",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SmallIntegerField",
        "TextField",
    }
)


def json_text(value: Any) -> str:
    """Return `value` as JSON text with orjson (about 10x faster than json.dumps).

    The JSON value is the one `json.dumps` gives, the text is not: separators are
    compact and non-ASCII characters stay UTF-8 instead of \\u escapes, so compare
    JSON columns with JSON lookups (`reasons__0__code`), never as text. NaN and
    infinities, which json.dumps writes as invalid JSON, become null; the scoring
    core never produces them. Values orjson cannot encode (e.g. Decimal) go to
    json.dumps, which raises its usual TypeError for what neither can encode.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value)


def _datetime_adapter(field: Field, connection) -> Callable[[Any], Any]:
    adapt = connection.ops.adapt_datetimefield_value
    # SQLite stores a datetime as the text of its naive UTC time; for the UTC
    # datetimes the stream makes (parsed, Kafka and clock times) that is the
    # text of the same time without its zone: what adapt_datetimefield_value
    # gives, without its checks and conversions (a third of the ledger's value
    # adaptation in `bench_stream --profile`).
    utc_text = (
        connection.vendor == "sqlite" and settings.USE_TZ and connection.timezone is UTC
    )

    def adapter(value):
        if utc_text and type(value) is datetime and value.tzinfo is UTC:
            return str(value.replace(tzinfo=None))
        if value is None or isinstance(value, datetime):
            return adapt(value)
        # Strings, dates: let the field convert them as the ORM would.
        return field.get_db_prep_save(value, connection)

    return adapter


def _json_adapter(field: Field, connection) -> Callable[[Any], Any]:
    ops, encoder = connection.ops, field.encoder
    text_json = type(ops).adapt_json_value is BaseDatabaseOperations.adapt_json_value
    if encoder is None and text_json:
        # The backend stores JSON as text (SQLite): the same JSON value, faster.
        return lambda value: None if value is None else json_text(value)
    return lambda value: None if value is None else ops.adapt_json_value(value, encoder)


def _decimal_adapter(field: Field, connection) -> Callable[[Any], Any]:
    ops, digits, places = connection.ops, field.max_digits, field.decimal_places
    return lambda value: ops.adapt_decimalfield_value(
        field.to_python(value), digits, places
    )


class RowsInsert:
    """A multi-row INSERT (or upsert) of one model's rows, in few round trips.

    `bulk_create` compiles SQL for every value of every row and needs model
    instances; both cost more than the stream's scoring (`bench_stream --profile`:
    about 150 us per ledger row). Here the statement is built once per call, each
    column gets the cheapest adapter that gives the same database value as
    `Field.get_db_prep_save` (plain values pass through; datetimes, JSON and
    decimals go through the backend's own `adapt_*` functions), and rows are
    mappings of attribute name to value. SQLite gets one executemany; PostgreSQL
    COPY, or multi-row VALUES for upserts. No signals, no returned keys: callers
    that need keys read them back.
    """

    def __init__(
        self,
        model: type[Model],
        *,
        using: str,
        unique_fields: Sequence[str] = (),
        update_fields: Sequence[str] = (),
        ignore_conflicts: bool = False,
    ) -> None:
        connection = connections[using]
        opts = model._meta
        self.using = using
        self.fields: list[Field] = [
            f for f in opts.concrete_fields if not f.primary_key
        ]
        quote = connection.ops.quote_name
        self.head = "INSERT INTO {} ({}) VALUES ".format(
            quote(opts.db_table), ", ".join(quote(f.column) for f in self.fields)
        )
        self.row_sql = "({})".format(", ".join(["%s"] * len(self.fields)))
        # SQLite runs a prepared statement per row in-process (executemany).
        # PostgreSQL gets COPY for plain inserts (rows adapted by psycopg's C
        # code; 25% of a batch went into building a long multi-row INSERT), and
        # multi-row VALUES for upserts, one round trip per chunk.
        self.multi_row = connection.vendor != "sqlite"
        self.copy_sql = None
        if connection.vendor == "postgresql" and not (
            update_fields or ignore_conflicts
        ):
            self.copy_sql = "COPY {} ({}) FROM STDIN".format(
                quote(opts.db_table), ", ".join(quote(f.column) for f in self.fields)
            )
        # Stay well under the 65,535 parameters a PostgreSQL statement may carry.
        self.chunk_rows = max(1, 30_000 // len(self.fields))
        sql = ""
        if update_fields:
            sql += " " + connection.ops.on_conflict_suffix_sql(
                self.fields,
                OnConflict.UPDATE,
                [opts.get_field(name).column for name in update_fields],
                [opts.get_field(name).column for name in unique_fields],
            )
        elif ignore_conflicts:
            sql += " " + connection.ops.on_conflict_suffix_sql(
                self.fields, OnConflict.IGNORE, None, None
            )
        self.tail = sql
        self.sql = self.head + self.row_sql + self.tail
        self.adapters = [self._adapter(field, connection) for field in self.fields]

    @staticmethod
    def _adapter(field: Field, connection) -> Callable[[Any], Any] | None:
        """Return the function that makes a column's database value (None: as is)."""
        kind = field.get_internal_type()
        if kind in _PLAIN_TYPES:
            return None
        if kind == "DateTimeField":
            return _datetime_adapter(field, connection)
        if kind == "JSONField":
            return _json_adapter(field, connection)
        if kind == "DecimalField":
            return _decimal_adapter(field, connection)
        return lambda value: field.get_db_prep_save(value, connection)

    def rows_params(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple]:
        """Return the executemany parameters of these rows, one tuple per row."""
        now = timezone.now()
        columns: list[list] = []
        for field, adapter in zip(self.fields, self.adapters, strict=True):
            name = field.attname
            if getattr(field, "auto_now", False) or getattr(
                field, "auto_now_add", False
            ):
                values = [now] * len(rows)
            else:
                try:
                    values = [row[name] for row in rows]
                except KeyError:
                    # Some rows leave this column out: the field's default, as
                    # Model(**row) would give.
                    default = field.get_default
                    values = [row[name] if name in row else default() for row in rows]
            if field.get_internal_type() == "DateTimeField":
                # A batch's rows share datetime objects (scored_at): adapt each
                # object once. Keyed by identity: equal datetimes may differ in
                # fold or zone, and the rows keep every object alive meanwhile.
                memo: dict[int, Any] = {}
                adapted = []
                for value in values:
                    key = id(value)
                    if key not in memo:
                        memo[key] = adapter(value)
                    adapted.append(memo[key])
                values = adapted
            elif adapter is not None:
                values = [adapter(v) for v in values]
            columns.append(values)
        return list(zip(*columns, strict=True))

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert the rows (mappings of attribute name to value)."""
        if not rows:
            return
        params = self.rows_params(rows)
        with connections[self.using].cursor() as cursor:
            if not self.multi_row:
                cursor.executemany(self.sql, params)
                return
            if self.copy_sql is not None:
                # The driver's own cursor: Django's wrapper has no COPY. Errors are
                # still turned into django.db exceptions (IntegrityError, ...).
                with (
                    connections[self.using].wrap_database_errors,
                    cursor.cursor.copy(self.copy_sql) as copy,
                ):
                    for row in params:
                        copy.write_row(row)
                return
            for start in range(0, len(params), self.chunk_rows):
                chunk = params[start : start + self.chunk_rows]
                sql = self.head + ", ".join([self.row_sql] * len(chunk)) + self.tail
                cursor.execute(sql, [value for row in chunk for value in row])


def rows_insert(
    *,
    model: type[Model],
    rows: Sequence[Mapping[str, Any]],
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] = (),
    ignore_conflicts: bool = False,
) -> None:
    """Insert rows of `model` in few round trips (see RowsInsert).

    Each row maps attribute names (`field.attname`) to Python values; missing keys
    take the field's default, `auto_now` fields take the current time. With
    `update_fields` it is an upsert on `unique_fields`; with `ignore_conflicts`,
    rows that hit a unique constraint are skipped.
    """
    if rows:
        RowsInsert(
            model,
            using=router.db_for_write(model),
            unique_fields=unique_fields,
            update_fields=update_fields,
            ignore_conflicts=ignore_conflicts,
        )(rows)


# Keys per IN (...) list, here and in the ORM reads by key elsewhere: below
# SQLite's old 999-parameter limit.
IN_CHUNK = 900

_K = TypeVar("_K")


def key_chunks(keys: Sequence[_K]) -> Iterator[Sequence[_K]]:
    """Yield `keys` in slices of at most IN_CHUNK, one `IN (...)` list each."""
    for start in range(0, len(keys), IN_CHUNK):
        yield keys[start : start + IN_CHUNK]


def values_where_in(
    *,
    model: type[Model],
    fields: Sequence[str],
    key: str,
    keys: Sequence[Any],
) -> list[tuple]:
    """Return `fields` of the rows whose `key` is one of `keys`, as tuples.

    What `model.objects.filter(key__in=keys).values_list(*fields)` returns, for
    plain columns (text, numbers, booleans) whose stored values need no
    conversion, with the SQL built once per chunk instead of compiled by the ORM:
    for 500 keys the ORM spent about 3 ms preparing each key and compiling,
    against 1.3-1.7 ms for the whole query here (2026-11-30). No row order;
    no row locks (use the ORM's select_for_update for those).
    """
    opts = model._meta
    columns = [opts.get_field(name) for name in (key, *fields)]
    for field in columns:
        if field.get_internal_type() not in _PLAIN_TYPES:
            raise ValueError(f"{field.name} is not a plain column: use the ORM.")
    using = router.db_for_read(model)
    quote = connections[using].ops.quote_name
    select = "SELECT {} FROM {} WHERE {} IN ".format(
        ", ".join(quote(field.column) for field in columns[1:]),
        quote(opts.db_table),
        quote(columns[0].column),
    )
    found: list[tuple] = []
    with connections[using].cursor() as cursor:
        for chunk in key_chunks(keys):
            cursor.execute(
                select + "({})".format(", ".join(["%s"] * len(chunk))), chunk
            )
            found.extend(tuple(row) for row in cursor.fetchall())
    return found
