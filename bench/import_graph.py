"""The import graph of the package's modules, imports inside functions included; exits 1 if it has a circle.

usage: python3 bench/import_graph.py     (prints each module's floor and what it imports)
"""
import ast, sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "gpt2_learn"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    "The package modules `path` imports anywhere in its code (top level, functions, classes)."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1 or base.startswith("gpt2_learn"):
                base = base.removeprefix("gpt2_learn").lstrip(".") if node.level == 0 else base
                names = [base] if base else [a.name for a in node.names]   # `from . import x` imports module x
                found.update(n.split(".")[0] for n in names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("gpt2_learn."))
    return (found & modules) - {path.stem}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    "Strongly connected components of more than one module (Tarjan)."
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def floors(graph: dict[str, set[str]]) -> dict[str, int]:
    "0 for a module that imports none of the package, else one more than the highest module it imports."
    memo = {}
    def floor(v):
        if v not in memo:
            memo[v] = 0
            memo[v] = 1 + max((floor(w) for w in graph[v]), default=-1)
        return memo[v]
    return {v: floor(v) for v in graph}


if __name__ == "__main__":
    files = [p for p in sorted(PKG.glob("*.py")) if p.stem not in ("__init__", "_modidx")]
    modules = {p.stem for p in files}
    graph = {p.stem: imports_of(p, modules) for p in files}
    found = circles(graph)
    if found:
        print("import circles:", "; ".join(" <-> ".join(c) for c in found))
        sys.exit(1)
    for module, floor in sorted(floors(graph).items(), key=lambda kv: (kv[1], kv[0])):
        print(f"floor {floor}: {module:12s} imports {', '.join(sorted(graph[module])) or '-'}")
    print(f"no circle among {len(graph)} modules, {max(floors(graph).values()) + 1} floors")
