"""``Execution`` and ``ExecutionOutputChunk`` moved to the engine
(``queue_app`` 0005): state only, their rows stay where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("tasks_app", "0005_task_search_trigram_moved"),
        ("chat_app", "0004_moved_to_core_and_engine"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
        migrations.RemoveField(
            model_name='executionoutputchunk',
            name='execution',
        ),
        migrations.DeleteModel(
            name='Execution',
        ),
        migrations.DeleteModel(
            name='ExecutionOutputChunk',
        ),
            ],
        ),
    ]
