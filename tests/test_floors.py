"""The floors of ../shared/ARCHITECTURE.md hold: every module of the project
sits on one (pyproject.toml's import-linter layers, checked by
``lint-imports`` in scripts/test), and no import loop crosses apps."""

import tomllib

import grimp

from tests.conftest import ROOT

APPS = ("agentvine", "tasks_app", "queue_app", "chat_app", "workers_app")
# Modules that are on no floor: settings for the test suite, migrations
# (they import only Django and their app's past state).
OFF_FLOOR = ("agentvine.settings_test",)


def _floors():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return [[name.strip() for name in layer.replace("|", ":").split(":")] for layer in layers]


def _graph():
    return grimp.build_graph(*APPS, cache_dir=None)


def _is_code_module(graph, module):
    if ".migrations" in module or module in OFF_FLOOR or module in APPS:
        return False
    # A package with only an __init__ (management, commands, executors' parent) is
    # a namespace for its children, which are checked themselves.
    return not graph.find_children(module) or graph.find_modules_directly_imported_by(module)


def test_every_module_sits_on_a_floor():
    graph = _graph()
    placed = [name for floor in _floors() for name in floor]
    unplaced = sorted(
        module
        for module in graph.modules
        if _is_code_module(graph, module)
        and not any(module == name or module.startswith(name + ".") for name in placed)
    )
    assert unplaced == [], "add these modules to a floor in pyproject.toml [tool.importlinter]"


def _strongly_connected(graph, modules):
    """Tarjan's strongly connected components of ``modules``' import graph."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        work = [(node, iter(sorted(graph.find_modules_directly_imported_by(node) & modules)))]
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] == index[current]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == current:
                        break
                components.append(component)

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return components


def test_no_import_loop_crosses_apps():
    graph = _graph()
    modules = {module for module in graph.modules if ".migrations" not in module}
    loops = [
        sorted(component)
        for component in _strongly_connected(graph, modules)
        if len({module.split(".")[0] for module in component}) > 1
    ]
    assert loops == []


def test_the_loop_check_finds_a_loop():
    """The check above can fail: a loop added to a copy of the graph is found."""
    graph = _graph()
    graph.add_import(importer="queue_app.lifecycle", imported="chat_app.services")
    modules = {module for module in graph.modules if ".migrations" not in module}
    loops = [c for c in _strongly_connected(graph, modules) if len({m.split(".")[0] for m in c}) > 1]
    assert any({"queue_app.lifecycle", "chat_app.services"} <= loop for loop in loops)
