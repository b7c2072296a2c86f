"""The package's imports follow the layers of shared/design.md (read with ast, nothing imported):

    front -> estep -> models -> public kernels API (ops, lowrank, reference, io, ...) -> _backends

- a module imports only its own layer and the layers to its right (function-level imports too);
- across packages, no ``from X import _name`` and no import of a module with a private path
  component, except the kernels API importing the backends' face ``lgm._backends`` itself;
- no import cycle among lgm's modules;
- only the GPU backend (``lgm._backends`` and ``lgm._backends.gpu.*``) imports cupy.
The checker is tested on a tree with one planted violation of each kind.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "lgm"

LAYERS = ("backends", "api", "models", "estep", "front")


def layer_of(mod):
    """The layer of a dotted module name under lgm (None outside lgm)."""
    parts = mod.split(".")
    if parts[0] != "lgm":
        return None
    if len(parts) == 1:
        return "api"
    head = parts[1]
    if head == "_backends":
        return "backends"
    if head in ("models", "estep", "front"):
        return head
    if head == "__main__":
        return "front"
    return "api"


def _modules(root):
    """{dotted name: path} of every module in the package at ``root``."""
    out = {}
    for p in root.rglob("*.py"):
        rel = p.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(mod, path, modules):
    """(target module, imported name or None, line) for every import in the file."""
    is_pkg = path.name == "__init__.py"
    pkg = mod if is_pkg else mod.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.append((a.name, None, node.lineno))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module
            for a in node.names:
                sub = f"{src}.{a.name}"
                if sub in modules:  # "from pkg import module"
                    out.append((sub, None, node.lineno))
                else:
                    out.append((src, a.name, node.lineno))
    return out


def _package(mod, modules):
    """The package a module belongs to (itself for a package's __init__)."""
    return mod if modules[mod].name == "__init__.py" else mod.rsplit(".", 1)[0]


def check_layers(root):
    """Every violation of the rules above in the package at ``root``, as readable lines."""
    modules = _modules(root)
    rank = {name: i for i, name in enumerate(LAYERS)}
    bad = []
    graph = {m: set() for m in modules}
    for mod, path in sorted(modules.items()):
        where = f"{path.relative_to(root.parent)}"
        for target, name, line in _imports(mod, path, modules):
            top = target.split(".")[0]
            if top == "cupy" and not (mod == "lgm._backends" or mod.startswith("lgm._backends.gpu")):
                bad.append(f"{where}:{line}: imports cupy outside the GPU backend")
            if top != "lgm" or mod == "lgm" or target == "lgm":
                continue  # outside lgm; the package root is the public face of every layer
            if target in modules:
                graph[mod].add(target)
            lm, lt = layer_of(mod), layer_of(target)
            if rank[lt] > rank[lm]:
                bad.append(f"{where}:{line}: {lm} imports {target} ({lt}): against the layers")
                continue
            src_pkg = _package(mod, modules)
            tgt_pkg = _package(target, modules) if target in modules else target.rsplit(".", 1)[0]
            if tgt_pkg == src_pkg:
                continue  # within one package: private names are its own business
            if name is not None and name.startswith("_"):
                bad.append(f"{where}:{line}: imports the private name {name} from {target}")
            private = [p for p in target.split(".")[1:] if p.startswith("_")]
            face = lm == "api" and target == "lgm._backends"  # the backends' one way in
            # a package reaching into its own subpackages (not the root: that would be everything)
            inside = src_pkg != "lgm" and target.startswith(src_pkg + ".")
            if private and not (face or inside):
                bad.append(f"{where}:{line}: reaches into the private module {target}")
    bad += [f"import cycle: {' -> '.join(c)}" for c in _cycles(graph)]
    return bad


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_lgm_follows_its_layers():
    bad = check_layers(ROOT)
    assert bad == [], "\n".join(bad)


def _tree(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / "lgm" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    for d in (tmp_path / "lgm").rglob("*"):
        if d.is_dir() and not (d / "__init__.py").exists():
            (d / "__init__.py").write_text("")
    (tmp_path / "lgm" / "__init__.py").touch()
    return tmp_path / "lgm"


CLEAN = {
    "ops.py": "from ._backends import backend_of\nfrom ._validate import check\n",
    "_validate.py": "def check(): pass\n",
    "_backends/__init__.py": "def backend_of(): pass\n",
    "_backends/gpu/launchers.py": "import cupy\n",
    "models/vae.py": "from ..ops import backend_of\nfrom .nn import _private_within_package\n",
    "models/nn.py": "_private_within_package = 1\n",
    "estep/harness.py": "from ..models.vae import train\n",
    "estep/strategies.py": "STRATEGIES = ()\n",
    "front/cli.py": "from lgm.estep import harness\nimport lgm\n",
}


def test_checker_passes_a_clean_tree(tmp_path):
    assert check_layers(_tree(tmp_path, CLEAN)) == []


def test_checker_finds_each_planted_violation(tmp_path):
    planted = {
        "models/vae.py": ("def f():\n    from ..estep import strategies\n", "against the layers"),
        "estep/harness.py": ("from ..models.nn import _private_within_package\n", "private name"),
        "front/cli.py": ("from lgm._backends import backend_of\n", "private module"),
        "models/nn.py": ("import cupy\n", "cupy outside the GPU backend"),
        "ops.py": ("from ._backends.gpu import launchers\n", "private module"),
    }
    for rel, (text, why) in planted.items():
        files = dict(CLEAN)
        files[rel] = CLEAN[rel] + text
        root = _tree(tmp_path / rel.replace("/", "_"), files)
        bad = check_layers(root)
        assert len(bad) == 1 and why in bad[0], (rel, bad)
    cyc = dict(CLEAN)
    cyc["models/nn.py"] = CLEAN["models/nn.py"] + "def g():\n    from . import vae\n"
    bad = check_layers(_tree(tmp_path / "cycle", cyc))
    assert bad == ["import cycle: lgm.models.nn -> lgm.models.vae"], bad
