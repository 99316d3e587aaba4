"""The house rules of docs/ARCHITECTURE.md, checked: import direction, no circles, short modules, a lazy face."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import grokcopy

PACKAGE = Path(grokcopy.__file__).parent
# Each stage may import only the stages listed for it (and itself); the base modules import nothing of grokcopy
# (but the run folder its safe reads and writes).
BASE = {"errors", "run_dir", "safe_io", "resources", "devices", "attention", "settings"}
ALLOWED = {
    **{name: set() for name in BASE},
    "run_dir": {"safe_io"},
    "copytest": BASE,
    "analysis": BASE | {"copytest"},
    "hub": BASE | {"copytest", "analysis"},
    "forecast": BASE | {"copytest", "analysis"},
    "training": BASE | {"copytest", "analysis", "hub", "forecast"},
    "experiments": BASE | {"copytest", "analysis", "hub", "training", "forecast"},
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


# ----------------------------------------------------------------------------- the run folder owns its paths

RUN_FOLDER = "grokcopy.run_dir"
# A file of another folder that happens to share a run file's name, and why.
OTHER_FOLDERS = {("grokcopy.experiments.render", "induction_formation.png"): "the report's figure, in its folder"}


def run_file_names() -> dict[str, str]:
    """The run folder's file-name constants (RUN_CONFIG -> "run_config.json", ...), as run_dir defines them."""
    from grokcopy import run_dir

    return {name: value for name, value in vars(run_dir).items()
            if name.isupper() and isinstance(value, str) and "." in value and "/" not in value}


def docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body
            and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def run_path_leaks(module: str, path: Path, names: dict[str, str]) -> list[str]:
    """Where a module spells a run file's path itself: the name as a literal ("summary.json", or "/summary.json"
    in an f-string), or a join of a run_dir constant (`x / SUMMARY`, `os.path.join(x, SUMMARY)`, `Path(x, SUMMARY)`,
    `.joinpath(SUMMARY)`, `.with_name(SUMMARY)`). Words of a message or docstring may name a file."""
    values, leaks = set(names.values()), []
    tree = ast.parse(path.read_text())
    skip = docstrings(tree)

    def constant(node) -> str | None:
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        return name if name in names else None

    for node in ast.walk(tree):
        found = None
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if node.value in values and (module, node.value) not in OTHER_FOLDERS:
                found = repr(node.value)
        elif isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            found = next((repr(p) for p in parts for v in values if f"/{v}" in p), None)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and constant(node.right):
            found = f"/ {constant(node.right)}"
        elif isinstance(node, ast.Call):
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if func in ("join", "joinpath", "Path", "with_name", "PurePath"):
                found = next((f"{func}(..., {constant(a)})" for a in node.args if constant(a)), None)
        if found:
            leaks.append(f"{module}:{node.lineno}: {found}")
    return sorted(leaks, key=lambda leak: int(leak.split(":")[1]))


def test_run_folder_module_owns_the_run_file_names():
    """No file name of the run folder outside grokcopy.run_dir: every other module reaches a run's files through
    `RunFolder` (or run_dir's functions), so a file is named, and its path built, in one place."""
    names = run_file_names()
    assert {"RUN_CONFIG", "COPY_HISTORY", "INDUCTION_HISTORY", "TRAINER_STATE", "SUMMARY", "PUSH_RECORD",
            "RUN_LOCK", "CHECKPOINT_COPY_EVAL", "COPY_CURVE"} <= set(names)
    leaks = [leak for module, path in sorted(modules().items()) if module != RUN_FOLDER
             for leak in run_path_leaks(module, path, names)]
    assert not leaks, "run-folder paths built outside grokcopy.run_dir (use RunFolder):\n" + "\n".join(leaks)


def test_the_leak_check_finds_each_kind_of_leak(tmp_path):
    source = tmp_path / "leaky.py"
    source.write_text('''"""Writes summary.json (a docstring may say so)."""
from pathlib import Path
import os
SUMMARY = "x"
a = Path("out") / "summary.json"
b = Path("out") / SUMMARY
c = os.path.join("out", COPY_HISTORY)
d = f"{a}/trainer_state.json"
e = "no summary.json yet: a message may name the file"
''')
    leaks = run_path_leaks("leaky", source, run_file_names())
    assert sorted(int(leak.split(":")[1]) for leak in leaks) == [5, 6, 7, 8], leaks  # not the docstring, nor e

