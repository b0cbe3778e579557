from django.db import migrations

from agentvine.migration_ops import PostgresOnlySQL

FIELDS = ("title", "description", "repository_url")


class Migration(migrations.Migration):
    """Trigram indexes for the task search (title, description, repository).

    The search is ``UPPER(field) LIKE UPPER('%…%')`` on each field, OR-ed; one
    GIN trigram index per field lets Postgres answer it with a bitmap OR
    instead of scanning every task. Built concurrently.
    """

    atomic = False

    dependencies = [("tasks_app", "0002_initial"), ("chat_app", "0003_message_text_trigram")]

    operations = [
        PostgresOnlySQL(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS task_{field}_trgm_idx "
            f"ON tasks_app_task USING gin (UPPER({field}) gin_trgm_ops)",
            reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS task_{field}_trgm_idx",
        )
        for field in FIELDS
    ]
