"""`agentvine tasks create --after` and `agentvine tasks tree` against a running server."""

import pytest

from tasks_app.models import Task, TaskDependency

pytestmark = pytest.mark.e2e


def test_create_after_and_tree(logged_in):
    cli = logged_in
    root = cli("tasks", "create", "Write the parser")
    assert root.code == 0, root.err
    root_id = root.out.split()[1]
    left = cli("tasks", "create", "Parser tests", "--after", root_id)
    right = cli("tasks", "create", "Parser docs", "--after", root_id)
    left_id, right_id = left.out.split()[1], right.out.split()[1]
    join = cli("tasks", "create", "Release the parser", "--after", left_id, "--after", right_id)

    assert "blocked" in left.out and "blocked" in join.out
    join_task = Task.objects.get(title="Release the parser")
    assert set(TaskDependency.objects.filter(child=join_task).values_list("parent_id", flat=True)) == {
        Task.objects.get(pk=left_id).pk,
        Task.objects.get(pk=right_id).pk,
    }

    tree = cli("tasks", "tree", root_id)
    assert tree.code == 0, tree.err
    lines = tree.out.splitlines()
    assert "Write the parser" in lines[0]
    assert any(line.startswith("  blocked") and "Parser tests" in line for line in lines)
    assert any(line.startswith("    blocked") and "Release the parser" in line for line in lines)

    bad = cli("tasks", "create", "Orphan", "--after", "not-an-id")
    assert bad.code == 1 and "unknown task not-an-id" in bad.err
    unknown = cli("tasks", "tree", "00000000-0000-0000-0000-000000000000")
    assert unknown.code == 1 and "unknown task" in unknown.err
