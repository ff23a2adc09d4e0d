"""The package's architecture, enforced: which way imports go, no import cycles, model code free of
backend checks. Read from the source (the AST), so a lazy import inside a function counts too."""
import ast
import os

import vqgan_jax

PACKAGE_DIR = os.path.dirname(vqgan_jax.__file__)
# Lower layers never import higher ones. Modules at the package's top level (the command lines `cli`,
# `evaluate`, `inception`) may import anything; `errors` imports nothing of ours.
LAYERS = ["errors", "nn", "models", "interop", "losses", "backends", "data", "train", "viz", "sampling",
          "trainers", "eval"]
TOP_LEVEL_ENTRY_POINTS = {"cli", "evaluate", "inception", "convert", "stylize"}


def _modules():
    """{dotted module name: path} of every module of the package."""
    out = {}
    for root, _, files in os.walk(PACKAGE_DIR):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(root, f), os.path.dirname(PACKAGE_DIR))[:-3]
                name = rel.replace(os.sep, ".")
                out[name[: -len(".__init__")] if name.endswith(".__init__") else name] = os.path.join(root, f)
    return out


def _imports(path, name, modules):
    """The package modules `name` imports (anywhere in the file), resolved to module names."""
    tree = ast.parse(open(path).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t.split(".")[0] == "vqgan_jax" and t != name}
    return {t if t in modules else t.rsplit(".", 1)[0] for t in found} & set(modules)


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_package_is_placed_in_the_layers():
    packages = {_part(m) for m in _modules()} - {""}
    assert packages <= set(LAYERS) | TOP_LEVEL_ENTRY_POINTS | {"__init__"}, packages - set(LAYERS)


def test_imports_only_go_down_the_layers():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        part = _part(name)
        if part in TOP_LEVEL_ENTRY_POINTS or name == "vqgan_jax":
            continue
        for dep in _imports(path, name, modules):
            dep_part = _part(dep)
            if dep == "vqgan_jax" or dep_part in TOP_LEVEL_ENTRY_POINTS - {"cli"}:
                bad.append((name, dep))
            elif dep_part == "cli" or LAYERS.index(dep_part) > LAYERS.index(part):
                bad.append((name, dep))
    assert not bad, bad


def test_models_and_nn_are_plain_flax():
    """Nothing under models/ or nn/ imports backends/, train/, data/ or eval/, and no module outside the
    seam asks which backend it runs on."""
    modules = _modules()
    for name, path in modules.items():
        if _part(name) in ("models", "nn"):
            deps = {_part(d) for d in _imports(path, name, modules)}
            assert not deps & {"backends", "train", "data", "eval", "trainers", "sampling"}, (name, deps)
        calls = [n for n in ast.walk(ast.parse(open(path).read()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "default_backend"]
        assert not calls, name


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    state = {}

    def visit(node, stack):
        state[node] = "active"
        for dep in graph[node]:
            if state.get(dep) == "active":
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(dep):] + [dep])}")
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_library_never_imports_its_entry_points_or_configs():
    modules = _modules()
    for name, path in modules.items():
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert node.module.split(".")[0] not in ("train", "sample", "configs", "bench"), (name, node.module)
            if isinstance(node, ast.Import):
                assert not any(a.name.split(".")[0] in ("sample", "configs", "bench") for a in node.names), name
