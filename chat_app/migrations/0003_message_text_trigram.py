from django.db import migrations

from agentvine.migration_ops import PostgresOnlySQL


class Migration(migrations.Migration):
    """A trigram index for the history's case-insensitive text filter.

    ``text__icontains`` is ``UPPER(text) LIKE UPPER('%…%')``; a GIN trigram
    index on ``UPPER(text)`` answers it without scanning every message. Built
    concurrently so a live table keeps taking writes meanwhile.
    """

    atomic = False

    dependencies = [("chat_app", "0002_live_oversight")]

    operations = [
        PostgresOnlySQL("CREATE EXTENSION IF NOT EXISTS pg_trgm", reverse_sql=migrations.RunSQL.noop),
        PostgresOnlySQL(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS chatmessage_text_trgm_idx "
            "ON chat_app_chatmessage USING gin (UPPER(text) gin_trgm_ops)",
            reverse_sql="DROP INDEX CONCURRENTLY IF EXISTS chatmessage_text_trgm_idx",
        ),
    ]
