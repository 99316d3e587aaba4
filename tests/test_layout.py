"""The house rules of docs/ARCHITECTURE.md, checked: import direction, no circles, short modules, a lazy face."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grokcopy

PACKAGE = Path(grokcopy.__file__).parent
# Each stage may import only the stages listed for it (and itself); the base modules import nothing of grokcopy.
BASE = {"errors", "run_dir", "resources", "devices"}
ALLOWED = {
    **{name: set() for name in BASE},
    "copytest": BASE,
    "analysis": BASE | {"copytest"},
    "hub": BASE | {"copytest", "analysis"},
    "training": BASE | {"copytest", "analysis", "hub"},
    "experiments": BASE | {"copytest", "analysis", "hub", "training"},
}


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(("grokcopy",) + parts).removesuffix(".__init__")] = path
    return out


def grokcopy_imports(path: Path) -> set[str]:
    """Every grokcopy module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grokcopy"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("grokcopy")}
    return found


def stage(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else module


def test_imports_go_one_way():
    for module, path in modules().items():
        own = stage(module)
        if own not in ALLOWED:  # cli.py and the package face may import anything
            continue
        for target in grokcopy_imports(path):
            assert stage(target) in ALLOWED[own] | {own}, f"{module} imports {target}"


def test_no_import_circle():
    graph = {m: {t for t in grokcopy_imports(p) if t in modules()} for m, p in modules().items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(trail + [nxt])
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(modules()))
def test_modules_stay_short(module):
    assert len(modules()[module].read_text().splitlines()) <= 400, f"{module}: split it (the house limit is 400 lines)"


def test_no_private_names_of_the_hf_libraries():
    """Public APIs only: a private name of huggingface_hub, transformers or accelerate breaks on any release."""
    pattern = re.compile(r"(?:huggingface_hub|transformers|accelerate)[\w.]*\s+import\s+\(?\s*_\w+|"
                         r"_http\.|_GLOBAL_CLIENT|_attn_implementation_internal|_save_checkpoint")
    for module, path in modules().items():
        assert not pattern.search(path.read_text()), module


def test_package_face_is_lazy_and_complete():
    code = ("import grokcopy, sys; assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
            "from grokcopy import CopyTrainer, CopyEvalCallback, InductionHeadCallback, analyze_induction; "
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "True"  # the names load their modules on first use
    assert set(grokcopy.__all__) == set(grokcopy._EXPORTS) | {"__version__"}
    for name in grokcopy._EXPORTS:
        assert getattr(grokcopy, name).__module__.startswith("grokcopy"), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        grokcopy.nope  # noqa: B018
