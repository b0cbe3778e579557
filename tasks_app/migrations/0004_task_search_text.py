import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """The searchable text of every task, in its own table (see TaskSearchText)."""

    dependencies = [
        ("tasks_app", "0003_task_search_trigram"),
    ]

    operations = [
        migrations.CreateModel(
            name="TaskSearchText",
            fields=[
                (
                    "task",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="search_text",
                        serialize=False,
                        to="tasks_app.task",
                    ),
                ),
                ("title", models.CharField(max_length=200)),
                ("description", models.TextField(blank=True)),
                ("repository_url", models.CharField(blank=True, max_length=500)),
            ],
        ),
        migrations.RunSQL(
            "INSERT INTO tasks_app_tasksearchtext (task_id, title, description, repository_url)"
            " SELECT id, title, description, repository_url FROM tasks_app_task",
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
