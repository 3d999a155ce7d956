"""Fast bulk writes of model rows (the stream's hot path)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import orjson
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
    """Return `value` as JSON text, as `json.dumps` would (orjson: ~10x faster).

    Used for JSON columns on backends that store JSON as text (SQLite); values
    orjson cannot encode (e.g. Decimal) fall back to the standard library, which
    raises its usual TypeError for what neither can encode.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return json.dumps(value)


class RowsInsert:
    """A prepared multi-row INSERT (or upsert) of one model's rows.

    `bulk_create` compiles SQL for every value of every row and needs model
    instances; both cost more than the stream's scoring (`bench_stream --profile`:
    about 150 us per ledger row). Here the statement is built once per model, each
    column gets the cheapest adapter that gives the same database value as
    `Field.get_db_prep_save` (plain values pass through; datetimes, JSON and
    decimals go through the backend's own `adapt_*` functions), and rows are
    mappings of attribute name to value sent with ONE executemany. No signals, no
    returned keys: callers that need keys read them back.
    """

    def __init__(
        self,
        model: type[Model],
        *,
        using: str,
        unique_fields: Sequence[str] = (),
        update_fields: Sequence[str] = (),
    ) -> None:
        connection = connections[using]
        opts = model._meta
        self.using = using
        self.fields: list[Field] = [
            f for f in opts.concrete_fields if not f.primary_key
        ]
        quote = connection.ops.quote_name
        sql = "INSERT INTO {} ({}) VALUES ({})".format(
            quote(opts.db_table),
            ", ".join(quote(f.column) for f in self.fields),
            ", ".join(["%s"] * len(self.fields)),
        )
        if update_fields:
            sql += " " + connection.ops.on_conflict_suffix_sql(
                self.fields,
                OnConflict.UPDATE,
                [opts.get_field(name).column for name in update_fields],
                [opts.get_field(name).column for name in unique_fields],
            )
        self.sql = sql
        self.adapters = [self._adapter(field, connection) for field in self.fields]

    @staticmethod
    def _adapter(field: Field, connection) -> Callable[[Any], Any] | None:
        """Return the function that makes a column's database value (None: as is)."""
        kind = field.get_internal_type()
        ops = connection.ops
        if kind in _PLAIN_TYPES:
            return None
        if kind == "DateTimeField":
            return ops.adapt_datetimefield_value
        if kind == "JSONField":
            encoder = field.encoder
            text_json = (
                type(ops).adapt_json_value is BaseDatabaseOperations.adapt_json_value
            )
            if encoder is None and text_json:
                # The backend stores json.dumps() text: the same text, faster.
                return lambda value: None if value is None else json_text(value)
            return lambda value: (
                None if value is None else ops.adapt_json_value(value, encoder)
            )
        if kind == "DecimalField":
            max_digits, places = field.max_digits, field.decimal_places
            return lambda value: ops.adapt_decimalfield_value(
                field.to_python(value), max_digits, places
            )
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
                # A batch's rows share datetimes (scored_at, received_at): adapt once.
                memo: dict = {}
                values = [
                    memo[v] if v in memo else memo.setdefault(v, adapter(v))
                    for v in values
                ]
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
            cursor.executemany(self.sql, params)


@lru_cache(maxsize=32)
def _rows_insert_prepared(
    model: type[Model],
    using: str,
    unique_fields: tuple[str, ...],
    update_fields: tuple[str, ...],
) -> RowsInsert:
    return RowsInsert(
        model, using=using, unique_fields=unique_fields, update_fields=update_fields
    )


def rows_insert(
    *,
    model: type[Model],
    rows: Sequence[Mapping[str, Any]],
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] = (),
) -> None:
    """Insert rows of `model` with ONE executemany (an upsert with update_fields).

    Each row maps attribute names (`field.attname`) to Python values; missing keys
    take the field's default, `auto_now` fields take the current time.
    """
    if rows:
        _rows_insert_prepared(
            model,
            router.db_for_write(model),
            tuple(unique_fields),
            tuple(update_fields),
        )(rows)
