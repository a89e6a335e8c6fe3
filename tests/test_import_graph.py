"""The package's import graph: no cycles, imports one way along the pipeline, and no hidden imports.

Every module of ``collapse_audit`` is read with :mod:`ast` (nothing is imported),
and every ``import`` / ``from ... import`` of the package's own modules becomes an
edge, wherever it stands: at the top of a module, in a class body, or inside a
function. Relative imports are resolved against the importing module's package;
``from X import name`` is an edge to ``X.name`` when that is a module, else to
``X``. Function-level imports count as edges like the others: they are how a cycle
hides (it then shows only as a half-initialised module at run time).

Not edges: ``collapse_audit/__init__.py``'s lazy public names (PEP 562,
``importlib.import_module`` on attribute access, no ``import`` statement), so the
facade ``from collapse_audit import audit`` sits above everything while
``from collapse_audit import __version__`` stays at the bottom.

``python tests/test_import_graph.py`` prints the graph's summary.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

PKG = "collapse_audit"
ROOT = Path(__file__).resolve().parents[1] / PKG

# Layers along the pipeline, lowest first. A module may import modules of its own
# layer or of lower layers, never of a higher one (equal layers: the cycle test
# keeps them acyclic). A new module must be given a layer here.
LAYERS: dict[str, tuple[str, ...]] = {
    # no package imports (or only each other): errors, defaults, the metric table, progress bars,
    # the analyses' result dataclasses (results: any stage may return them)
    "base": ("collapse_audit", "errors", "config", "keys", "interpret", "progress", "outputs", "schema",
             "analysis", "models", "results", "integrations"),
    # numerical kernels on arrays: kNN search, the metrics, statistical tests, the Inception network
    "kernels": ("index", "metrics", "analysis.stats", "models.inception", "resize"),
    # reading and writing files: discovery, decoding, the cache, feature/statistics files, labels
    "io": ("discover", "decode", "cache", "features", "stats_file", "labels"),
    "embedders": ("weights", "embedders"),
    "engines": ("device_decode", "embedding", "engine_ray"),
    "scale": ("scale",),
    "analysis": ("analysis.duplicates", "analysis.clusters", "analysis.classes", "analysis.subgroups", "analysis.run",
                 "trackstats"),
    "scan": ("pipeline", "scan"),
    "results": ("report", "compare", "gate", "track_report"),
    # entry points: the Python API and the command line
    "entry": ("api", "track", "report_cli", "cli", "__main__", "integrations.lightning"),
}

# Function-level imports of the package's own modules that stay, and why. Every other
# own-module import belongs at the top of its module (a cycle is no reason: there are none).
LAZY_OK: dict[str, dict[str, str]] = {
    "collapse_audit.cli": {
        "*": "command-line start-up: the commands import their stages (numpy, PIL, torch behind them) on use, "
             "so --help, --version and 'models path' stay at ~0.2 s",
    },
    "collapse_audit.report_cli": {
        "*": "registered by cli at import: report/compare (numpy, PIL, jinja2) are imported when the command runs",
    },
    "collapse_audit.embedders": {
        "collapse_audit.models.inception": "imports torch at its top; the embedders module must import without torch",
    },
}


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    line: int
    function_level: bool

    def __str__(self) -> str:
        where = "function-level" if self.function_level else "top-level"
        return f"{self.src} -> {self.dst} (line {self.line}, {where})"


def module_files() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package __init__)."""
    out = {}
    for p in sorted(ROOT.rglob("*.py")):
        parts = list(p.relative_to(ROOT.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        out[".".join(parts)] = (p, is_pkg)
    return out


def _owner(name: str, modules) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (``a.b.c`` -> ``a.b`` when c is a name)."""
    parts = name.split(".")
    while parts:
        cand = ".".join(parts)
        if cand in modules:
            return cand
        parts.pop()
    return None


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_pkg: bool, modules) -> list[str]:
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            if node.level > 1:
                base = base[: len(base) - (node.level - 1)]
            if not base:
                raise AssertionError(f"{module}: relative import beyond the package (line {node.lineno})")
            frm = ".".join(base + ([node.module] if node.module else []))
        else:
            frm = node.module or ""
        names = [f"{frm}.{a.name}" if f"{frm}.{a.name}" in modules else frm for a in node.names]
    out = []
    for n in names:
        if n == PKG or n.startswith(PKG + "."):
            owner = _owner(n, modules)
            assert owner is not None, f"{module} imports {n} (line {node.lineno}), which is not a module of {PKG}"
            out.append(owner)
    return list(dict.fromkeys(out))  # one edge per statement and module


def import_edges() -> tuple[dict[str, set[str]], list[Edge]]:
    """The module graph (module -> modules it imports) and every own-module import statement as an Edge."""
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    edges: list[Edge] = []
    for module, (path, is_pkg) in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))

        def visit(node, in_function: bool):
            for child in ast.iter_child_nodes(node):
                inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for dst in _targets(child, module, is_pkg, modules):
                        if dst != module:
                            edges.append(Edge(module, dst, child.lineno, in_function))
                            graph[module].add(dst)
                visit(child, inside)

        visit(tree, False)
    return graph, edges


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (first node repeated at the end) per strongly connected component with a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)

    cycles = []
    for comp in components:
        members = set(comp)
        start = comp[0]
        # shortest path start -> ... -> start inside the component (breadth first)
        prev: dict[str, str] = {}
        frontier = [start]
        seen = {start}
        end = None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v]):
                    if w == start:
                        end = v
                        break
                    if w in members and w not in seen:
                        seen.add(w)
                        prev[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [start]
        v = end
        while v != start:
            path.append(v)
            v = prev[v]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def _describe(cycle: list[str], edges: list[Edge]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:]):
        at = [e for e in edges if e.src == a and e.dst == b]
        lines = ", ".join(f"line {e.line}{' (function-level)' if e.function_level else ''}" for e in at)
        steps.append(f"  {a} -> {b}   [{lines}]")
    return " -> ".join(cycle) + "\n" + "\n".join(steps)


def _layer_of() -> dict[str, tuple[int, str]]:
    out = {}
    for rank, (layer, names) in enumerate(LAYERS.items()):
        for n in names:
            full = PKG if n == PKG else f"{PKG}.{n}"
            assert full not in out, f"{full} is in two layers"
            out[full] = (rank, layer)
    return out


def _lazy_reason(e: Edge) -> str | None:
    allowed = LAZY_OK.get(e.src, {})
    return allowed.get(e.dst) or allowed.get("*")


# --------------------------------------------------------------------------- tests
def test_the_walk_sees_the_package():
    graph, edges = import_edges()
    assert {"collapse_audit.scan", "collapse_audit.analysis.duplicates", "collapse_audit.cli"} <= set(graph)
    # relative imports of every depth resolve: ``from ..scale import`` in analysis/, ``from . import`` at the top
    assert "collapse_audit.scale" in graph["collapse_audit.analysis.duplicates"]
    assert "collapse_audit.analysis.stats" in graph["collapse_audit.analysis.clusters"]
    assert "collapse_audit.metrics" in graph["collapse_audit.scan"]
    # function-level imports are edges too
    assert any(e.function_level for e in edges)


def test_find_cycles_reports_the_path_of_a_function_level_cycle():
    """The checker itself, on a made-up graph: a -> b -> c -> a is reported as a path, d -> d as a self-import."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "e"}, "d": {"d"}, "e": set()}
    assert sorted(find_cycles(graph)) == [["a", "b", "c", "a"], ["d", "d"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    """Top-level and function-level imports together: the package's import graph is acyclic."""
    graph, edges = import_edges()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in collapse_audit:\n" + "\n".join(_describe(c, edges) for c in cycles)


def test_imports_point_down_the_pipeline():
    """io -> embedders -> engines -> scale -> analysis -> scan/pipeline -> report/compare/gate -> cli/api."""
    graph, edges = import_edges()
    layer = _layer_of()
    unplaced = sorted(set(graph) - set(layer))
    assert not unplaced, f"modules without a layer in tests/test_import_graph.py LAYERS: {', '.join(unplaced)}"
    upward = [f"{e}: {layer[e.src][1]} imports {layer[e.dst][1]}" for e in edges if layer[e.dst][0] > layer[e.src][0]]
    assert not upward, "imports against the pipeline's direction:\n" + "\n".join(upward)


def test_result_types_import_nothing_of_the_package():
    """``collapse_audit.results`` sits at the bottom: never api, scan or cli (nor anything else of the package)."""
    graph, _ = import_edges()
    assert graph["collapse_audit.results"] == set()
    assert "collapse_audit.results" in graph["collapse_audit.api"]


def test_function_level_imports_of_own_modules_are_only_the_listed_ones():
    """A function-level import of an own module is a cycle in hiding or an oversight, unless LAZY_OK says why."""
    _, edges = import_edges()
    lazy = [e for e in edges if e.function_level]
    unexplained = [str(e) for e in lazy if not _lazy_reason(e)]
    assert not unexplained, (
        f"{len(unexplained)} of {len(lazy)} function-level imports of collapse_audit's own modules have no reason "
        "(move them to the top of the module, or add the reason to LAZY_OK):\n" + "\n".join(unexplained))


def summary() -> str:
    graph, edges = import_edges()
    lazy = [e for e in edges if e.function_level]
    lines = [f"{len(graph)} modules, {len(edges)} own-module imports "
             f"({len(edges) - len(lazy)} top-level, {len(lazy)} function-level), "
             f"{len(find_cycles(graph))} cycles"]
    lines += [f"  {e}: {_lazy_reason(e) or 'NO REASON'}" for e in lazy]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(summary())
    sys.exit(0)
