"""Writes in fewer round trips than the ORM's one-statement-per-call.

``queryset.update(**changes)`` answers only how many rows matched; a
transition that needs the new row (to publish it, to run it) would read it
again. :func:`update_returning` sends the same ``UPDATE … WHERE …`` that
Django builds, with ``RETURNING`` the model's columns (PostgreSQL, and SQLite
3.35+), and builds model instances from what comes back.

:func:`update_sql` and :func:`insert_sql` give the statement Django would send
without sending it, so it can ride along with another one (the ``changes`` of
``agentvine.events.publish``).
"""

from django.db import connections, router
from django.db.models import sql


def _update(queryset, changes):
    db = queryset._db or router.db_for_write(queryset.model)
    query = queryset.query.chain(sql.UpdateQuery)
    query.add_update_values(changes)
    query.annotations = {}
    if query.related_updates:
        raise ValueError("only the queryset's own table can be updated")
    statement, params = query.get_compiler(db).as_sql()
    return db, statement, params


def update_sql(queryset, **changes):
    """``(sql, params)`` of ``queryset.update(**changes)``, not sent."""
    _, statement, params = _update(queryset, changes)
    return statement, tuple(params)


def insert_sql(instance):
    """``(sql, params)`` inserting the unsaved ``instance``, not sent;
    ``instance`` counts as saved. An auto-numbered primary key stays unknown."""
    model = type(instance)
    db = router.db_for_write(model)
    fields = [field for field in model._meta.local_concrete_fields if not field.generated]
    if instance.pk is None:
        # The database numbers it (the row's id is then not known here).
        fields = [field for field in fields if field is not model._meta.auto_field]
    query = sql.InsertQuery(model)
    query.insert_values(fields, [instance])
    [(statement, params)] = query.get_compiler(db).as_sql()
    instance._state.adding = False
    instance._state.db = db
    return statement, tuple(params)


def update_returning(queryset, **changes):
    """Apply ``changes`` to the rows of ``queryset``; returns those rows as updated.

    An empty list means no row matched: the compare-and-set lost.
    """
    model = queryset.model
    db, statement, params = _update(queryset, changes)
    connection = connections[db]
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
