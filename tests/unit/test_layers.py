"""The dependency rules of the project, read from every module's imports at any depth
(function bodies included) with `ast`. A failure names the file, the line and the rule.

supervisor_site → localmode → apps_api → hostcfg, one way. Inside apps_api the engine is
the bottom floor, the HTTP layer and the actions façade the top, and each outside system
has one gateway module.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Highest first: a package may import only the packages after it.
PACKAGES = ("supervisor_site", "localmode", "apps_api", "hostcfg")
# The one module allowed to import each outside system's client library.
GATEWAYS = {
    "redis": ("apps_api.redis_store",),
    "docker": ("apps_api.engine.docker",),
    "jeepney": ("hostcfg.dbus",),
    "http.client": ("apps_api.cloud.client", "apps_api.engine.registry"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    path: Path
    line: int
    target: str  # what is imported, dotted (a module, or module.name)
    in_function: bool
    commented: bool  # a comment on the import's line or the line above


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _in_function(tree: ast.Module) -> set[int]:
    """ids of the import nodes inside a function (at any depth)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inside.update(id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom))
    return inside


def project_imports() -> Iterator[Import]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            module = _module_name(path)
            source = path.read_text()
            lines = source.splitlines()
            tree = ast.parse(source, str(path))
            inside = _in_function(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Import | ast.ImportFrom):
                    continue
                line = lines[node.lineno - 1]
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                commented = "#" in line or above.startswith("#")
                for target in _targets(module, path, node):
                    yield Import(module, path, node.lineno, target, id(node) in inside, commented)


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        parts = module.split(".")
        package = parts if path.name == "__init__.py" else parts[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    return [f"{base}.{alias.name}" for alias in node.names]


def _under(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _package(name: str) -> str | None:
    top = name.split(".")[0]
    return top if top in PACKAGES else None


def one_way_packages(i: Import) -> str | None:
    source, target = _package(i.module), _package(i.target)
    if source is None or target is None or source == target:
        return None
    if PACKAGES.index(target) < PACKAGES.index(source):
        return f"packages depend one way ({' → '.join(PACKAGES)}): {source} must not import {target}"
    return None


def engine_is_the_bottom(i: Import) -> str | None:
    if (
        _under(i.module, "apps_api.engine")
        and _package(i.target)
        and not _under(i.target, "apps_api.engine", "hostcfg")
    ):
        return "apps_api/engine imports only apps_api/engine and hostcfg"
    return None


def only_the_edge_calls_the_facade(i: Import) -> str | None:
    if _under(i.target, "apps_api.actions") and not _under(
        i.module, "apps_api.actions", "apps_api.api", "apps_api.management", "localmode"
    ):
        return "only apps_api/api, localmode and management commands import the actions façade"
    return None


def only_the_facade_sends_tasks(i: Import) -> str | None:
    if _under(i.target, "apps_api.tasks") and not _under(i.module, "apps_api.tasks", "apps_api.actions"):
        return "only the actions façade imports the Celery tasks (the rest calls schedule_apply)"
    return None


def http_layer_is_the_top(i: Import) -> str | None:
    if _under(i.target, "apps_api.api") and not _under(
        i.module, "apps_api.api", "localmode", "supervisor_site"
    ):
        return "nothing below the HTTP layer imports apps_api/api"
    return None


def one_gateway_per_outside_system(i: Import) -> str | None:
    for library, gateways in GATEWAYS.items():
        if _under(i.target, library) and i.module not in gateways:
            return f"only {', '.join(gateways)} imports {library}"
    return None


def imports_at_the_top(i: Import) -> str | None:
    if not i.in_function:
        return None
    if _package(i.target) or i.target.split(".")[0] in sys.stdlib_module_names:
        return "imports belong at the top of the module (a cycle means a function is in the wrong module)"
    if not i.commented:
        return "a function-level import is a heavy package kept lazy: say so in a one-line comment"
    return None


RULES: tuple[Callable[[Import], str | None], ...] = (
    one_way_packages,
    engine_is_the_bottom,
    only_the_edge_calls_the_facade,
    only_the_facade_sends_tasks,
    http_layer_is_the_top,
    one_gateway_per_outside_system,
    imports_at_the_top,
)


def broken_rules(imports: list[Import]) -> list[str]:
    return [
        f"{i.path.relative_to(ROOT)}:{i.line}: imports {i.target}: {problem}"
        for i in imports
        for rule in RULES
        if (problem := rule(i)) is not None
    ]


def test_every_import_follows_the_layering_rules() -> None:
    problems = broken_rules(list(project_imports()))
    assert not problems, "\n".join(problems)


def test_there_is_no_import_cycle_between_modules() -> None:
    modules = {_module_name(p) for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in project_imports():
        target = i.target
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != i.module:
            graph[i.module].add(target)
    cycles = _cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize(
    ("module", "target", "in_function", "rule"),
    [
        ("hostcfg.tags", "apps_api.errors.NotFound", False, one_way_packages),
        ("apps_api.engine.executor", "apps_api.models.Image", False, engine_is_the_bottom),
        ("apps_api.cloud.poll", "apps_api.actions.set_target_state", False, only_the_edge_calls_the_facade),
        ("apps_api.apply.loop", "apps_api.tasks.apply_target_state", False, only_the_facade_sends_tasks),
        ("apps_api.snapshot", "apps_api.api.auth.ApiAccess", False, http_layer_is_the_top),
        ("apps_api.health", "redis.exceptions.LockError", False, one_gateway_per_outside_system),
        ("apps_api.cloud.report", "apps_api.snapshot.read_snapshot", True, imports_at_the_top),
        ("apps_api.cloud.report", "psutil", True, imports_at_the_top),
    ],
)
def test_each_rule_catches_what_it_forbids(
    module: str, target: str, in_function: bool, rule: Callable[[Import], str | None]
) -> None:
    path = ROOT / (module.replace(".", "/") + ".py")
    forbidden = Import(module, path, 1, target, in_function, commented=False)
    assert rule(forbidden) is not None
    assert broken_rules([forbidden])[0].startswith(f"{path.relative_to(ROOT)}:1: imports {target}: ")


def test_a_commented_lazy_import_of_a_heavy_package_is_allowed() -> None:
    lazy = Import(
        "apps_api.cloud.report", ROOT / "apps_api/cloud/report.py", 1, "psutil", True, commented=True
    )
    assert broken_rules([lazy]) == []
