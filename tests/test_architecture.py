"""The import graph of ``context_trace`` runs one way: no cycles, extras stay in integrations."""

from __future__ import annotations

import ast
from pathlib import Path

import context_trace

PACKAGE_DIR = Path(context_trace.__file__).parent
PACKAGE = "context_trace"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_name_in(target: str, name: str) -> bool:
    """Whether ``from target import name`` names something other than a submodule."""
    if not target.startswith(PACKAGE):
        return True
    base = PACKAGE_DIR.parent.joinpath(*target.split("."))
    return not (base / name).is_dir() and not (base / f"{name}.py").exists()


def _imports(path: Path, module: str) -> set[str]:
    """Every module imported by *path* (module and function level, not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.orelse:
                    visit_stmt(stmt)
                continue
            visit_stmt(child)

    def visit_stmt(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from . import _runtime` imports the module _runtime; `from . import
            # __version__` imports the package itself.
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
                found.add(target if _is_name_in(target, alias.name) else "")
        visit(node)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE_DIR.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in _imports(path, name):
            # `import context_trace.x.y` also runs context_trace and context_trace.x,
            # but a package's __init__ is its own node; count the named module only.
            if imported in files and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state:
                cycle = dfs(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = dfs(node)
            if cycle:
                return cycle
    return None


class TestImportGraph:
    def test_the_graph_is_built_from_the_source(self):
        """The graph sees the data path's edges (a sanity check on the parser)."""
        graph = _graph()

        assert "context_trace._runtime" in graph["context_trace._handler"]
        assert "context_trace._turn" in graph["context_trace._convert"]
        assert "context_trace._config" in graph["context_trace._runtime"]

    def test_no_import_cycle(self):
        """No module of context_trace imports itself back through others."""
        assert None is _find_cycle(_graph())

    def test_the_cycle_finder_finds_a_cycle(self):
        """The check can fail: a two-module circle is reported."""
        assert ["a", "b", "a"] == _find_cycle({"a": {"b"}, "b": {"a"}})

    def test_type_checking_imports_do_not_count(self):
        """Imports under ``if TYPE_CHECKING:`` are not edges; function-level ones are."""
        source = (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from ._scopes import Scope\n"
            "def f():\n    from . import _runtime\n"
        )
        path = PACKAGE_DIR / "_probe_for_test.py"
        try:
            path.write_text(source, encoding="utf-8")
            found = _imports(path, "context_trace._probe_for_test")
        finally:
            path.unlink()

        assert "context_trace._runtime" in found
        assert "context_trace._scopes" not in found

    def test_only_integrations_import_web_frameworks(self):
        """Flask, Starlette and Celery are imported only by integrations and the apps we ship."""
        # The demo and the dashboard are Flask applications that only the CLI
        # loads; the library itself (and `import context_trace`) never needs Flask.
        allowed = (
            "context_trace.integrations",
            "context_trace.ui",
            "context_trace._demo",
        )
        offenders = []
        for path in PACKAGE_DIR.rglob("*.py"):
            name = _module_name(path)
            if name.startswith(allowed):
                continue
            for imported in _imports(path, name):
                if imported.split(".")[0] in {
                    "flask",
                    "starlette",
                    "fastapi",
                    "celery",
                }:
                    offenders.append(f"{name} imports {imported}")

        assert [] == offenders

    def test_integrations_use_no_private_name_of_another_module(self):
        """Integrations import no underscore name from outside integrations/, and the scopes only via the internal API."""
        offenders = []
        scope_modules = {
            "context_trace._scopes",
            "context_trace._activation",
            "context_trace._decorators",
            "context_trace._resolvers",
            "context_trace._sessions",
            "context_trace._streams",
            "context_trace._threads",
            "context_trace._runtime",
            "context_trace._state",
        }
        for path in (PACKAGE_DIR / "integrations").rglob("*.py"):
            name = _module_name(path)
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom):
                    continue
                if node.level:
                    continue  # a sibling in integrations/
                target = node.module or ""
                if not target.startswith(PACKAGE):
                    continue
                if target in scope_modules:
                    offenders.append(f"{name} imports {target}")
                for alias in node.names:
                    if alias.name.startswith("_"):
                        offenders.append(f"{name} imports {target}.{alias.name}")
                    if f"{target}.{alias.name}" in scope_modules:
                        offenders.append(f"{name} imports {target}.{alias.name}")

        assert [] == offenders


# The layers, lowest first: a module may import its own layer and those below,
# never one above. By package, with the few modules that sit elsewhere named.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "leaves",
        ("_state", "_log", "_redact", "_sigterm", "_baggage", "_urls"),
    ),
    # The exporter protocols and ExportResult are the contract the pipeline is
    # written against: value types like the record, importing only it.
    ("record", ("_record", "_record_parts", "_turn", "_exporters.base")),
    (
        "convert",
        ("_convert", "_rules", "_attribution", "_measure", "_text", "_runtree"),
    ),
    (
        "pipeline",
        ("_pipeline", "_pipeline_inline", "_pipeline_overload", "_pipeline_process"),
    ),
    # _config validates exporter objects and endpoints; the read side
    # (_satisfaction, analytics/) reads the store.
    (
        "exporters/store",
        (
            "_exporters",
            "_store",
            "_config",
            "_config_env",
            "_satisfaction",
            "_satisfaction_signals",
            "_satisfaction_report",
            "_satisfaction_index",
            "_satisfaction_users",
            "_satisfaction_users_read",
            "analytics",
        ),
    ),
    ("runtime", ("_runtime", "_runtime_build", "_http")),
    (
        "scopes",
        (
            "_handler",
            "_graph_streams",
            "_activation",
            "_scopes",
            "_decorators",
            "_resolvers",
            "_sessions",
            "_streams",
            "_threads",
            "_integration_api",
            "_compat",
        ),
    ),
    (
        "integrations/cli/ui",
        (
            "",  # the package itself: the public names
            "__main__",
            "integrations",
            "flask",
            "asgi",
            "celery",
            "testing",
            "cli",
            "ui",
            "_demo",
            "_demo_app",
            "_demo_script",
        ),
    ),
)


def _layer_of(module: str) -> int | None:
    """The index in LAYERS of *module* (the longest matching name), else None."""
    name = module.removeprefix(PACKAGE).removeprefix(".")
    best: tuple[int, int] | None = None
    for rank, (_, members) in enumerate(LAYERS):
        for member in members:
            matches = name == member or (member and name.startswith(member + "."))
            if matches and (best is None or len(member) > best[0]):
                best = (len(member), rank)
    return None if best is None else best[1]


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of a module in a higher layer, as ``a (layer) -> b (layer)``."""
    found = []
    for module in sorted(graph):
        low = _layer_of(module)
        for imported in sorted(graph[module]):
            high = _layer_of(imported)
            if low is not None and high is not None and high > low:
                found.append(
                    f"{module} ({LAYERS[low][0]}) -> {imported} ({LAYERS[high][0]})"
                )
    return found


class TestLayers:
    def test_every_module_has_a_layer(self):
        """Each module of the package is in one of the layers."""
        assert [] == sorted(m for m in _graph() if _layer_of(m) is None)

    def test_imports_point_down_the_layers(self):
        """record <- convert <- pipeline <- exporters/store <- runtime <- scopes <- entry points."""
        assert [] == _upward_imports(_graph())

    def test_the_stores_never_import_the_exporters(self):
        """_store/ sits under _exporters/ (its adapters and senders): no import back up."""
        graph = _graph()
        assert [] == sorted(
            f"{module} -> {imported}"
            for module in graph
            if module.startswith(f"{PACKAGE}._store")
            for imported in graph[module]
            if imported.startswith(f"{PACKAGE}._exporters")
        )

    def test_an_upward_import_is_reported(self):
        """The check can fail: the record importing the runtime is named."""
        graph = {"context_trace._record": {"context_trace._runtime"}}

        assert [
            "context_trace._record (record) -> context_trace._runtime (runtime)"
        ] == _upward_imports(graph)


class TestModuleSize:
    LIMIT = 500

    def test_every_module_is_within_the_house_limit(self):
        """No module of the package is longer than 500 lines (ARCHITECTURE.md)."""
        over = {
            str(path.relative_to(PACKAGE_DIR)): n
            for path in sorted(PACKAGE_DIR.rglob("*.py"))
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > self.LIMIT
        }
        assert over == {}
