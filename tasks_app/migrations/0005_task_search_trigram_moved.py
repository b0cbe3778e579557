from django.db import migrations

from agentvine.migration_ops import PostgresOnlySQL

FIELDS = ("title", "description", "repository_url")


class Migration(migrations.Migration):
    """The search's trigram indexes move from the task to its search text.

    Same indexes as 0003 (``UPPER(field) gin_trgm_ops``, one per field, built
    concurrently), on a table whose rows change only when the text does.
    """

    atomic = False

    dependencies = [("tasks_app", "0004_task_search_text")]

    operations = [
        *(
            PostgresOnlySQL(
                f"CREATE INDEX CONCURRENTLY IF NOT EXISTS tasksearchtext_{field}_trgm_idx "
                f"ON tasks_app_tasksearchtext USING gin (UPPER({field}) gin_trgm_ops)",
                reverse_sql=f"DROP INDEX CONCURRENTLY IF EXISTS tasksearchtext_{field}_trgm_idx",
            )
            for field in FIELDS
        ),
        *(
            PostgresOnlySQL(
                f"DROP INDEX CONCURRENTLY IF EXISTS task_{field}_trgm_idx",
                reverse_sql=f"CREATE INDEX CONCURRENTLY IF NOT EXISTS task_{field}_trgm_idx "
                f"ON tasks_app_task USING gin (UPPER({field}) gin_trgm_ops)",
            )
            for field in FIELDS
        ),
    ]
