"""``LiveEvent`` moved to the core app (``agentvine`` 0001) and ``AgentToken`` to
the engine (``queue_app`` 0005): state only, the tables are not touched here."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("chat_app", "0003_message_text_trigram"),
        ("agentvine", "0001_live_event_moved"),
        ("queue_app", "0005_execution_moved"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
        migrations.AlterField(
            model_name='chatmessage',
            name='execution',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='chat_messages', to='queue_app.execution'),
        ),
        migrations.RemoveField(
            model_name='agenttoken',
            name='execution',
        ),
        migrations.RemoveField(
            model_name='agenttoken',
            name='work_order',
        ),
        migrations.DeleteModel(
            name='LiveEvent',
        ),

                migrations.DeleteModel(
                    name='AgentToken',
                ),
            ],
        ),
    ]
