"""Every benchmark runs on the code as it is: each one in smoke mode (a couple of steps, tiny sizes) in a
subprocess, writing its JSON with the fields its docstring documents. No timing is asserted."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))
OPTIONS = {"bench_copy_eval_speed.py": ["--profile"]}  # fields documented for an option


def documented_fields(script: str) -> list[str]:
    """The top-level names of the docstring's `JSON:` paragraph (parenthesised details left out)."""
    doc = ast.get_docstring(ast.parse((BENCHMARKS / script).read_text()))
    text = doc.split("JSON:", 1)[1].split("\n\n")[0]
    while "(" in text:
        text = re.sub(r"\([^()]*\)", "", text)
    return [name.strip().rstrip(".").strip() for name in text.split(",") if name.strip()]


def run_smoke(script: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), "--smoke", "--threads", "1", "--json", str(out),
                           *extra], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_every_benchmark_documents_its_json():
    assert len(SCRIPTS) >= 6
    for script in SCRIPTS:
        assert "machine" in documented_fields(script), script


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_smoke(script, tmp_path):
    result = run_smoke(script, tmp_path, *OPTIONS.get(script, []))
    missing = set(documented_fields(script)) - set(result)
    assert not missing, f"{script} documents {sorted(missing)} but did not write them"
    assert {"device", "threads", "torch", "transformers"} <= set(result["machine"])


def test_bench_train_demo_uses_the_demo_tokenizer_and_copy_settings(tmp_path):
    """The demo's copy_symbol_pattern matches symbols of its own tokenizer: all three variants run."""
    (size,) = run_smoke("bench_train.py", tmp_path, "--sizes", "demo")["results"]
    assert size["copy_settings"]["copy_symbol_pattern"]  # the demo config's, in use
    assert size["vocab"] > 256  # the demo's identifier symbols and its prose symbols
    assert set(size["variants"]) == {"bare", "trainer", "copytrainer"}
    assert size["variants"]["copytrainer"]["copy_samples"] == 4
    for ratio in size["ratios"].values():
        low, high = ratio["ci95"]
        assert low <= ratio["mean"] <= high and len(ratio["per_repeat"]) == 2


def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.sh end to end at smoke sizes on the CPU: it is known to run when a GPU is lent."""
    env = dict(os.environ, DRY_RUN="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=1200, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert {"train", "copy_test", "projection", "nvidia_smi"} <= set(check)
    assert check["train"]["machine"]["bf16"] and check["copy_test"]["all_agree"]
    assert set(check["train"]["results"][0]["variants"]) == {"bare", "trainer", "copytrainer"}
    rows = (tmp_path / "out" / "gpu_check_rows.md").read_text()
    assert "| copytrainer |" in rows and "(c)/(b) =" in rows
