"""Shared test set-up: offline, one torch thread (2-core CI), tiny real models and data."""

import atexit
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import pytest
from hub_server import HubServer, configure_client_env, free_port

# Before huggingface_hub / transformers / datasets are imported (they read these once): every cache
# in a temp folder, and the Hub client pointed at the local test server (no test reaches the internet).
_CACHE_ROOT = tempfile.mkdtemp(prefix="grokcopy_tests_")
atexit.register(shutil.rmtree, _CACHE_ROOT, ignore_errors=True)
for _var, _sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "datasets"), ("GROKCOPY_CACHE", "grokcopy")):
    os.environ[_var] = os.path.join(_CACHE_ROOT, _sub)
os.environ.pop("HF_HUB_OFFLINE", None)
configure_client_env(free_port())
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
GROKCOPY = [sys.executable, "-m", "grokcopy.cli"]


@pytest.fixture(scope="session")
def hub(tmp_path_factory):
    """A local Hub-compatible server (tests/hub_server.py) on the port of HF_ENDPOINT."""
    from huggingface_hub import constants

    endpoint = os.environ["HF_ENDPOINT"]
    if constants.ENDPOINT != endpoint.rstrip("/"):
        pytest.fail(f"huggingface_hub was imported before HF_ENDPOINT={endpoint} was set ({constants.ENDPOINT=})")
    server = HubServer(tmp_path_factory.mktemp("hub_storage"), port=urlparse(endpoint).port)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def api(hub):
    """HfApi against a healthy test Hub; fails the test if the client called an endpoint the server lacks."""
    from huggingface_hub import HfApi

    hub.heal()
    yield HfApi()
    hub.heal()
    if not hub.is_running:
        hub.start()
    unrouted, hub.unrouted[:] = list(hub.unrouted), []
    assert unrouted == [], f"the client called endpoints the test Hub lacks: {unrouted}"


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A small demo-style corpus (skewed background + repeated passages) as JSONL."""
    from grokcopy.training.demo_corpus import DemoCorpusConfig, generate_documents

    path = tmp_path_factory.mktemp("corpus") / "train.jsonl"
    config = DemoCorpusConfig(num_documents=600, document_chars=127, seed=1)
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in generate_documents(config)))
    return path


def tiny_config(corpus_file, output_dir, **overrides):
    """A config dict for a seconds-long real training run of the `tiny` preset."""
    config = {
        "output_dir": str(output_dir),
        "preset": "tiny",
        "train_files": [str(corpus_file)],
        "train_tokenizer": True,
        "tokenizer_type": "char",
        "block_size": 128,
        "validation_split_percentage": 5,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "max_steps": 8,
        "learning_rate": 3e-3,
        "logging_steps": 2,
        "save_strategy": "steps",
        "save_steps": 4,
        "eval_strategy": "no",
        "copy_eval_schedule": "linear",
        "copy_eval_steps": 2,
        "copy_num_samples": 8,
        "dataloader_pin_memory": False,
        "disable_tqdm": True,
        "report_to": "none",
        "seed": 0,
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The CPU demo, run once for the session exactly as `grokcopy demo` runs it (2 threads)."""
    import subprocess

    out = tmp_path_factory.mktemp("demo") / "run"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([*GROKCOPY, "demo", "--output_dir", str(out), "--disable_tqdm", "true"],
                          capture_output=True, text=True, env=env, timeout=1500)
    return out, proc


# Helpers shared by the failure-handling tests (test_failures.py, test_cluster_faults.py, test_bad_input.py).

def write_config(path: Path, config: dict) -> Path:
    """`config` as a JSON file for `grokcopy train PATH`."""
    path.write_text(json.dumps(config))
    return path


def steps(history: Path) -> list[int]:
    """The steps of a history file (copy_history.jsonl, induction_history.jsonl), in file order."""
    from grokcopy.run_dir import read_jsonl

    return [r["step"] for r in read_jsonl(history)]


def tree(folder: Path) -> list[str]:
    """Every path under `folder`, relative and sorted: compare before and after to see nothing was touched."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def assert_one_line_error(proc, *needles, code=2) -> str:
    """`proc` exited `code` with no traceback and exactly one `grokcopy: error:` line holding every needle."""
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("grokcopy: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
