"""Output serializers build their fields once per class (agentvine.serializers)."""

import pytest
from rest_framework import serializers

from agentvine.serializers import ModelOutputSerializer
from tasks_app.serializers import TaskOutput
from tasks_app.services import task_create

pytestmark = pytest.mark.django_db


def _stock(serializer_class):
    """The same serializer on DRF's own ModelSerializer, fields built per instance."""
    meta = type("Meta", (), {"model": serializer_class.Meta.model, "fields": serializer_class.Meta.fields})
    declared = {
        name: field.__class__(*field._args, **field._kwargs)
        for name, field in serializer_class._declared_fields.items()
    }
    return type("Stock", (serializers.ModelSerializer,), {"Meta": meta, **declared})


def test_a_task_renders_as_with_fields_built_per_instance(operator):
    first = task_create(title="one", description="the first", created_by=operator)
    second = task_create(title="two", created_by=None)
    stock = _stock(TaskOutput)

    for task in (first, second, first):
        assert TaskOutput(task).data == stock(task).data
    assert TaskOutput([first, second], many=True).data == stock([first, second], many=True).data
    assert TaskOutput(first).data["created_by"] == operator.username
    assert TaskOutput(second).data["created_by"] is None


def test_each_instance_gets_its_own_fields():
    one, two = TaskOutput(), TaskOutput()
    assert one.fields["title"] is not two.fields["title"]
    assert one.fields["title"].parent is one and two.fields["title"].parent is two
    # Changing one instance's fields leaves the next instance as declared.
    one.fields.pop("description")
    assert "description" in TaskOutput().fields


def test_a_subclass_builds_its_own_fields():
    class Narrow(ModelOutputSerializer):
        class Meta:
            model = TaskOutput.Meta.model
            fields = ["id", "title"]

    class Narrower(Narrow):
        class Meta(Narrow.Meta):
            fields = ["id"]

    assert list(Narrow().fields) == ["id", "title"]
    assert list(Narrower().fields) == ["id"]
    assert list(Narrow().fields) == ["id", "title"]
