"""``LiveEvent`` moves from ``chat_app`` to the core app: the event log is the
lowest floor (``agentvine.events`` writes it). State only: the table stays
as it is here and is renamed in 0002, so no row is copied or lost."""

import django.core.serializers.json
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("chat_app", "0003_message_text_trigram"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
        migrations.CreateModel(
            name='LiveEvent',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('type', models.CharField(max_length=64)),
                ('groups', models.TextField()),
                ('payload', models.JSONField(encoder=django.core.serializers.json.DjangoJSONEncoder)),
                ('created_at', models.DateTimeField()),
            ],
            options={
                'db_table': 'chat_app_liveevent',
                'ordering': ['id'],
            },
        ),
            ],
        ),
    ]
