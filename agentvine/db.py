"""Compare-and-set that hands back the row it changed, in one round trip.

``queryset.update(**changes)`` answers only how many rows matched; a
transition that needs the new row (to publish it, to run it) would read it
again. :func:`update_returning` sends the same ``UPDATE … WHERE …`` that
Django builds, with ``RETURNING`` the model's columns (PostgreSQL, and SQLite
3.35+), and builds model instances from what comes back.
"""

from django.db import connections, router
from django.db.models import sql


def update_returning(queryset, **changes):
    """Apply ``changes`` to the rows of ``queryset``; returns those rows as updated.

    An empty list means no row matched: the compare-and-set lost.
    """
    model = queryset.model
    db = queryset._db or router.db_for_write(model)
    connection = connections[db]
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(changes)
    query.annotations = {}
    compiler = query.get_compiler(db)
    statement, params = compiler.as_sql()
    if query.related_updates:
        raise ValueError("update_returning does not update parent models")
    fields = model._meta.concrete_fields
    table = model._meta.db_table
    quote = connection.ops.quote_name
    columns = [field.get_col(table) for field in fields]
    returning = ", ".join(f"{quote(table)}.{quote(field.column)}" for field in fields)
    converters = [
        (index, connection.ops.get_db_converters(column) + column.get_db_converters(connection), column)
        for index, column in enumerate(columns)
    ]
    converters = [(index, found, column) for index, found, column in converters if found]
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} RETURNING {returning}", params)
        rows = cursor.fetchall()
    names = [field.attname for field in fields]
    instances = []
    for row in rows:
        values = list(row)
        for index, found, column in converters:
            for converter in found:
                values[index] = converter(values[index], column, connection)
        instances.append(model.from_db(db, names, values))
    return instances
