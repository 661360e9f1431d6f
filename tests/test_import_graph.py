"""No import circles inside the package: data flows one way (photo -> faces -> restorer -> faces), and so do imports.

Every `import`/`from ... import` of an `instantrestore` module counts, at the top of a file or inside a
function: a late import hides a circle from the interpreter, not from the reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "instantrestore"



def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package's modules `path` imports: `from a.b import c` is a.b.c when that is a module, else a.b."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, one level up per extra dot
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return found & modules


def import_graph() -> nx.DiGraph:
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for name, path in files.items():
        graph.add_edges_from((name, target) for target in imported_modules(path, set(files)) if target != name)
    return graph


def test_the_graph_sees_imports_at_the_top_and_inside_functions():
    graph = import_graph()
    assert graph.has_edge("instantrestore.api", "instantrestore.pipeline")  # at the top
    assert graph.has_edge("instantrestore.api", "instantrestore.models.ir_restorer")  # inside a loader
    assert graph.has_edge("instantrestore.faces.identity", "instantrestore.faces.dlib_resnet")


def test_no_import_circles():
    graph = import_graph()
    circles = [component for component in nx.strongly_connected_components(graph) if len(component) > 1]
    assert not circles, f"import circles: {[sorted(component) for component in circles]}"
