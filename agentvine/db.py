"""Hand-built statements for the hot paths, and writes in fewer round trips.

Building a statement through the ORM (``filter()``, the compiler) costs more
CPU than PostgreSQL spends running a one-row UPDATE; on a work order's
lifecycle it was most of a worker slot's Python time. The helpers here build
the same SQL straight from the model's metadata, prepare every parameter
through its field (UUIDs, datetimes and choices come out as the ORM would
send them, on PostgreSQL and on SQLite alike) and turn returned rows into
model instances with the fields' converters.

Conditions are a dict of ``field`` or ``field__lookup`` to a value, ANDed:
``exact`` (``None`` means ``IS NULL``), ``in``, ``isnull``, ``lt``, ``lte``,
``gt``, ``gte``, and ``isnull_or_lte`` (``field IS NULL OR field <= value``,
"not before"). Values are plain Python values, never expressions.

:func:`update_returning` sends ``UPDATE … WHERE … RETURNING`` (PostgreSQL, and
SQLite 3.35+) and returns the updated rows, so a compare-and-set learns the
new row without reading it again. :func:`update_sql` and :func:`insert_sql`
give a statement without sending it, so it can ride along with another one
(the ``changes`` of ``agentvine.events.publish``).
"""

from django.db import connections, router
from django.db.models import Model

_OPERATORS = {"exact": "=", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_tables = {}


class Table:
    """One model's quoted names and field lookups on one database."""

    def __init__(self, model, alias):
        connection = connections[alias]
        quote = connection.ops.quote_name
        meta = model._meta
        self.model, self.alias = model, alias
        self.name = quote(meta.db_table)
        self.fields = {"pk": meta.pk}
        # The names a condition may give the primary key by.
        self.key_names = ("pk", meta.pk.attname)
        for field in meta.concrete_fields:
            self.fields[field.name] = field
            self.fields[field.attname] = field
        self.columns = {name: quote(field.column) for name, field in self.fields.items()}
        self.concrete = list(meta.concrete_fields)
        self.attnames = [field.attname for field in self.concrete]
        self.insert_fields = [field for field in meta.local_concrete_fields if not field.generated]
        columns = [field.get_col(meta.db_table) for field in self.concrete]
        self.converters = [
            (index, found, column)
            for index, column in enumerate(columns)
            if (found := connection.ops.get_db_converters(column) + column.get_db_converters(connection))
        ]

    def select_list(self, alias=None):
        """The model's columns in ``attnames`` order, for SELECT or RETURNING."""
        prefix = alias or self.name
        return ", ".join(f"{prefix}.{self.columns[field.attname]}" for field in self.concrete)

    def prepare(self, name, value, connection):
        if isinstance(value, Model):
            value = value.pk
        if hasattr(value, "resolve_expression"):
            raise TypeError(f"{name}: expressions are not supported here, pass a value")
        return self.fields[name].get_db_prep_save(value, connection)

    def where(self, conditions, connection, alias=None):
        """``(sql, params)`` ANDing ``conditions`` (see the module docstring)."""
        prefix = f"{alias}." if alias else ""
        keys = [name for name in self.key_names if conditions.get(name) is not None]
        if keys and len(conditions) > 1 and connection.vendor == "postgresql":
            # One row, found by its key; the other conditions only filter it
            # and are kept out of the planner's choice of index. Otherwise a
            # plan made while the table had no statistics (a generic plan is
            # then kept for the connection's life) may walk another index to
            # the row: a complete read every work order its worker ever ran.
            rest = {name: value for name, value in conditions.items() if name not in self.key_names}
            rest_sql, rest_params = self._conditions(rest, connection, prefix)
            return (
                f"{prefix}{self.columns['pk']} = %s AND ({rest_sql}) IS TRUE",
                [self.prepare("pk", conditions[keys[0]], connection), *rest_params],
            )
        return self._conditions(conditions, connection, prefix)

    def _conditions(self, conditions, connection, prefix):
        parts, params = [], []
        for key, value in conditions.items():
            name, _, lookup = key.partition("__")
            column = prefix + self.columns[name]
            if lookup == "in":
                values = list(value)
                if not values:
                    parts.append("1 = 0")
                    continue
                parts.append(f"{column} IN ({', '.join(['%s'] * len(values))})")
                params += [self.prepare(name, item, connection) for item in values]
            elif lookup == "isnull" or (lookup in ("", "exact") and value is None):
                null = value if lookup == "isnull" else True
                parts.append(f"{column} IS {'' if null else 'NOT '}NULL")
            elif lookup == "isnull_or_lte":
                parts.append(f"({column} IS NULL OR {column} <= %s)")
                params.append(self.prepare(name, value, connection))
            else:
                parts.append(f"{column} {_OPERATORS[lookup or 'exact']} %s")
                params.append(self.prepare(name, value, connection))
        return " AND ".join(parts) or "1 = 1", params

    def from_row(self, values, connection):
        """A model instance from a row of :meth:`select_list` values."""
        values = list(values)
        for index, found, column in self.converters:
            for converter in found:
                values[index] = converter(values[index], column, connection)
        return self.model.from_db(self.alias, self.attnames, values)


def table(model, alias=None):
    """``(Table, connection)`` for ``model`` on its write database."""
    alias = alias or router.db_for_write(model)
    found = _tables.get((model, alias))
    if found is None:
        found = _tables[(model, alias)] = Table(model, alias)
    return found, connections[alias]


def update_sql(model, where, **changes):
    """``(sql, params)`` of ``UPDATE model SET changes WHERE where``, not sent."""
    meta, connection = table(model)
    sets = ", ".join(f"{meta.columns[name]} = %s" for name in changes)
    params = [meta.prepare(name, value, connection) for name, value in changes.items()]
    clause, where_params = meta.where(where, connection)
    return f"UPDATE {meta.name} SET {sets} WHERE {clause}", tuple(params + where_params)


def insert_sql(instance):
    """``(sql, params)`` inserting the unsaved ``instance``, not sent;
    ``instance`` counts as saved. An auto-numbered primary key stays unknown."""
    model = type(instance)
    meta, connection = table(model)
    fields = meta.insert_fields
    if instance.pk is None:
        # The database numbers it (the row's id is then not known here).
        fields = [field for field in fields if field is not model._meta.auto_field]
    # pre_save fills auto_now(_add) timestamps on the instance, as save() does.
    params = tuple(field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields)
    columns = ", ".join(meta.columns[field.attname] for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    instance._state.adding = False
    instance._state.db = meta.alias
    return f"INSERT INTO {meta.name} ({columns}) VALUES ({placeholders})", params


def update_returning(model, where, **changes):
    """Apply ``changes`` to the rows matching ``where``; returns them as updated.

    An empty list means no row matched: the compare-and-set lost.
    """
    meta, connection = table(model)
    statement, params = update_sql(model, where, **changes)
    with connection.cursor() as cursor:
        cursor.execute(f"{statement} RETURNING {meta.select_list()}", params)
        rows = cursor.fetchall()
    return [meta.from_row(row, connection) for row in rows]
