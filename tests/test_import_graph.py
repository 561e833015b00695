"""The package's import graph: no circles, and no import running back up a layer.

Layers, lowest first (a module may import its own layer and those below, never above):

0. foundation: errors, config, registry, compat, the parallel degrees, hooks, steps, devices,
   console, outputs and the other helpers every layer shares;
1. models: the adapter contract and what reads a pipeline's structure, the embedded digits model;
2. techniques: the transform contract and every technique (caches, calibrators, quant, compile,
   offload, parallel, attention), LoRA loading;
3. plan: the relations between techniques, the plan and the handle that applies it;
4. run: the session, the run loop and what it measures and writes, the Python API;
5. entry points: process launching, the CLI, the server, the testing helpers.

Imports inside functions count too (they are how a circle hides).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "dit_engine"

#: module prefix -> layer; the longest matching prefix wins
LAYERS = {
    "dit_engine.errors": 0, "dit_engine.compat": 0, "dit_engine.config": 0, "dit_engine.registry": 0,
    "dit_engine.parallel_dims": 0, "dit_engine.hooks": 0, "dit_engine.steps": 0, "dit_engine.devices": 0,
    "dit_engine.console": 0, "dit_engine.outputs": 0, "dit_engine.atomic": 0, "dit_engine.metrics": 0,
    "dit_engine.finite": 0, "dit_engine.conf": 0, "dit_engine.threads": 0,
    "dit_engine.adapter": 1, "dit_engine.workload": 1, "dit_engine.diffusers_adapter": 1, "dit_engine.block_inference": 1, "dit_engine.digits": 1,
    "dit_engine.transforms": 2, "dit_engine.caches": 2, "dit_engine.calibrators": 2, "dit_engine.quant": 2,
    "dit_engine.compile": 2, "dit_engine.offload": 2, "dit_engine.parallel": 2, "dit_engine.lora": 2,
    "dit_engine.relations": 3, "dit_engine.plan": 3, "dit_engine.handle": 3, "dit_engine.early_checks": 3,
    "dit_engine.session": 4, "dit_engine.run_loop": 4, "dit_engine.run_metrics": 4, "dit_engine.reference": 4,
    "dit_engine.api": 4, "dit_engine.report": 4, "dit_engine.completion": 4, "dit_engine.first_call": 4,
    "dit_engine.launch": 5, "dit_engine.cli": 5, "dit_engine.serve": 5, "dit_engine.testing": 5, "dit_engine.__main__": 5,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every first-party module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from dit_engine import run_loop`` imports the submodule, not the package
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
                     for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    # the package's own __init__ re-exports the API lazily; importing a submodule imports it anyway
    return {name: imports_of(path, known) - {"dit_engine"} for name, path in found.items() if name != "dit_engine"}


def layer(module: str) -> int:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    assert prefix is not None, f"{module} is in no layer: add it to LAYERS in tests/test_import_graph.py"
    return LAYERS[prefix]


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in edges.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_circles():
    assert circles(graph()) == []


def test_no_import_runs_back_up_a_layer():
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module, targets in graph().items() for target in sorted(targets) if layer(target) > layer(module)]
    assert upward == []
