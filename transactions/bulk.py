"""Fast bulk writes of model rows (the stream's hot path)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import connections, router
from django.db.models import Model
from django.db.models.constants import OnConflict


def rows_insert(
    *,
    model: type[Model],
    rows: Sequence[Model],
    unique_fields: Sequence[str] = (),
    update_fields: Sequence[str] = (),
) -> None:
    """Insert model instances with ONE executemany (an upsert with update_fields).

    `bulk_create` compiles SQL for every value of every row, which costs about
    150 us per ledger row, most of the stream's time (`bench_stream --profile`);
    here the statement is built once and only the values are adapted per row.
    No signals, no returned keys: callers that need keys read them back.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(model)]
    opts = model._meta
    fields = [f for f in opts.concrete_fields if not f.primary_key]
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(
        quote(opts.db_table),
        ", ".join(quote(f.column) for f in fields),
        ", ".join(["%s"] * len(fields)),
    )
    if update_fields:
        sql += " " + connection.ops.on_conflict_suffix_sql(
            fields,
            OnConflict.UPDATE,
            [opts.get_field(name).column for name in update_fields],
            [opts.get_field(name).column for name in unique_fields],
        )
    params = [
        tuple(f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields)
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)
