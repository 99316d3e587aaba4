"""Shared test set-up: offline, one torch thread (2-core CI), tiny real models and data."""

import json
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
GROKCOPY = [sys.executable, "-m", "grokcopy.cli"]


@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    """HF / datasets / grokcopy caches in a temp folder, so tests never reuse a user's cache."""
    root = tmp_path_factory.mktemp("caches")
    for var, sub in (("HF_HOME", "hf"), ("HF_DATASETS_CACHE", "datasets"), ("GROKCOPY_CACHE", "grokcopy")):
        os.environ[var] = str(root / sub)
    import datasets.config

    datasets.config.HF_DATASETS_CACHE = Path(os.environ["HF_DATASETS_CACHE"])
    yield root


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory):
    """A small demo-style corpus (skewed background + repeated passages) as JSONL."""
    from grokcopy.demo_corpus import DemoCorpusConfig, generate_documents

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
