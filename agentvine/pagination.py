"""A paginator for big tables: the operator pages and the admin changelists.

Django's paginator costs two things on millions of rows:

- ``SELECT COUNT(*)`` over the whole table on every page view. Unfiltered,
  Postgres' row estimate (``pg_class.reltuples``) stands in; filtered, the
  count stops at :attr:`BigTablePaginator.COUNT_CAP` matches and the page
  says "10,000+".
- ``ORDER BY created_at LIMIT 50`` with a selective filter that an index other
  than the ordering one answers (a trigram text search): the planner walks
  the ordering index hoping to meet matches early and reads the whole table
  when there are only a handful. When the count says the matches are few, the
  page first fetches their keys (through the filter's own index) and then
  orders just those.
"""

from math import ceil

from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property


class CappedCount(int):
    """A count that stopped at a cap: a number to compare and page with,
    "more than N" wherever it is shown (the admin prints counts as they are)."""

    def __str__(self):
        return f"more than {self - 1:,}"


class BigTablePaginator(Paginator):
    ESTIMATE_ABOVE = 20_000
    COUNT_CAP = 10_000
    # At most this many matches are fetched by key before ordering.
    FEW_MATCHES = 2_000

    @cached_property
    def _filtered_on_postgres(self):
        return connection.vendor == "postgresql" and bool(self.object_list.query.where)

    @cached_property
    def count(self):
        if self._filtered_on_postgres:
            counted = self.object_list.order_by()[: self.COUNT_CAP + 1].count()
            return CappedCount(counted) if counted > self.COUNT_CAP else counted
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [self.object_list.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.ESTIMATE_ABOVE:
                return int(row[0])
        return super().count

    @property
    def count_capped(self):
        """True when a filter matched more rows than were counted."""
        return self._filtered_on_postgres and self.count > self.COUNT_CAP

    @cached_property
    def num_pages(self):
        if self.count_capped:
            return ceil(self.COUNT_CAP / self.per_page)
        return super().num_pages

    def page(self, number):
        number = self.validate_number(number)
        if self.count_capped:
            # Rows go on past the count: never trim the last page to it.
            bottom = (number - 1) * self.per_page
            return self._get_page(self.object_list[bottom : bottom + self.per_page], number, self)
        if self._filtered_on_postgres and self.count <= self.FEW_MATCHES:
            # Few matches: their keys come through the filter's own index (no
            # ORDER BY, so nothing tempts the planner onto the ordering index);
            # the page then orders just those rows.
            keys = list(self.object_list.order_by().values_list("pk", flat=True)[: self.FEW_MATCHES + 1])
            self.object_list = self.object_list.filter(pk__in=keys)
        return super().page(number)
