"""``Execution``, ``ExecutionOutputChunk`` (from ``tasks_app``) and ``AgentToken``
(from ``chat_app``) move to the engine that owns their lifecycle. State only:
the tables keep their rows and are renamed in 0006."""

import uuid

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queue_app", "0004_overview_indexes"),
        ("tasks_app", "0005_task_search_trigram_moved"),
        ("workers_app", "0003_guardian_schedule"),
        ("chat_app", "0003_message_text_trigram"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
        migrations.CreateModel(
            name='Execution',
            fields=[
                ('id', models.UUIDField(default=uuid.uuid4, editable=False, primary_key=True, serialize=False)),
                ('attempt', models.PositiveIntegerField()),
                ('status', models.CharField(choices=[('running', 'Running'), ('completed', 'Completed'), ('failed', 'Failed'), ('interrupted', 'Interrupted')], default='running', max_length=16)),
                ('started_at', models.DateTimeField(auto_now_add=True)),
                ('completed_at', models.DateTimeField(blank=True, null=True)),
                ('output_tail', models.TextField(blank=True)),
                ('output_chars', models.BigIntegerField(default=0)),
                ('output_chunks', models.PositiveIntegerField(default=0)),
                ('exit_code', models.IntegerField(blank=True, null=True)),
                ('error', models.TextField(blank=True)),
                ('input_tokens', models.BigIntegerField(default=0)),
                ('output_tokens', models.BigIntegerField(default=0)),
                ('cost_usd', models.DecimalField(decimal_places=6, default=0, max_digits=12)),
                ('session', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='executions', to='workers_app.agentsession')),
                ('task', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='executions', to='tasks_app.task')),
                ('work_order', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='executions', to='queue_app.workorder')),
                ('worker', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='executions', to='workers_app.worker')),
            ],
            options={
                'db_table': 'tasks_app_execution',
                'ordering': ['-started_at'],
            },
        ),
        migrations.CreateModel(
            name='AgentToken',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('token_hash', models.CharField(max_length=64, unique=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('revoked_at', models.DateTimeField(blank=True, null=True)),
                ('work_order', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='agent_tokens', to='queue_app.workorder')),
                ('execution', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='agent_tokens', to='queue_app.execution')),
            ],
            options={
                'db_table': 'chat_app_agenttoken',
            },
        ),
        migrations.CreateModel(
            name='ExecutionOutputChunk',
            fields=[
                ('id', models.BigAutoField(primary_key=True, serialize=False)),
                ('seq', models.PositiveIntegerField()),
                ('text', models.TextField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('execution', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='chunks', to='queue_app.execution')),
            ],
            options={
                'db_table': 'tasks_app_executionoutputchunk',
                'ordering': ['execution', 'seq'],
            },
        ),
        migrations.AddIndex(
            model_name='execution',
            index=models.Index(fields=['status', '-started_at'], name='execution_status_started_idx'),
        ),
        migrations.AddConstraint(
            model_name='execution',
            constraint=models.UniqueConstraint(fields=('work_order', 'attempt'), name='execution_unique_attempt'),
        ),
        migrations.AddConstraint(
            model_name='executionoutputchunk',
            constraint=models.UniqueConstraint(fields=('execution', 'seq'), name='output_chunk_unique_seq'),
        ),
            ],
        ),
    ]
