from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("queue_app", "0008_execution_lease"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="base_commit",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="execution",
            name="head_commit",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="execution",
            name="changed_files",
            field=models.JSONField(blank=True, default=list),
        ),
        migrations.AddField(
            model_name="execution",
            name="has_changes",
            field=models.BooleanField(blank=True, null=True),
        ),
    ]
