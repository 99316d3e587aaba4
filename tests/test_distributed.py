"""`torchrun --nproc_per_node 2` on CPU (gloo), with DDP and with FSDP2: the copy test and the induction
analysis are split across the processes and give what one process with the same global batch gives."""

import json
import os
import subprocess
import sys

import numpy as np
from conftest import tiny_config
from hub_server import free_port
from safetensors.torch import load_file

from grokcopy.run_dir import read_jsonl


def train(config, tmp_path, name, nproc):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(config))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--master_port", str(free_port()), "-m"] if nproc > 1 else [sys.executable, "-m"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*launcher, "grokcopy.cli", "train", str(path)], capture_output=True, text=True,
                          timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


FSDP = {"fsdp": "full_shard auto_wrap", "fsdp_config": {"transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
                                                         "version": 2}}


def test_ddp_and_fsdp_match_one_process_with_the_same_global_batch(corpus_file, tmp_path):
    # 9 copy samples: the second process scores one fewer (padding path); 8 induction sequences split 4 + 4.
    common = dict(max_steps=8, save_steps=4, copy_eval_steps=2, copy_num_samples=9, induction_eval_steps=4)
    train(tiny_config(corpus_file, tmp_path / "one", per_device_train_batch_size=8, **common), tmp_path, "one", 1)
    for name, extra in (("ddp", {}), ("fsdp", FSDP)):
        config = tiny_config(corpus_file, tmp_path / name, per_device_train_batch_size=4, **common, **extra)
        train(config, tmp_path, name, 2)
        assert_same_run(tmp_path / "one", tmp_path / name)


def assert_same_run(first, second):
    one, two = (read_jsonl(folder / "copy_history.jsonl") for folder in (first, second))
    assert [r["step"] for r in two] == [r["step"] for r in one] == [0, 2, 4, 6, 8]  # one writer, no duplicates
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]
    for a, b in zip(one, two):
        assert a["num_samples"] == b["num_samples"] == 9
        assert abs(a["exact_match"] - b["exact_match"]) < 1e-9 and abs(a["token_accuracy"] - b["token_accuracy"]) < 1e-9
        assert a["per_position"] == b["per_position"]
        if a["loss"] is not None:  # the logged loss is the mean over both processes' halves of the batch
            assert abs(a["loss"] - b["loss"]) < 1e-4 * a["loss"]
    ind_one, ind_two = (read_jsonl(folder / "induction_history.jsonl") for folder in (first, second))
    assert [r["step"] for r in ind_two] == [r["step"] for r in ind_one] == [0, 1, 2, 4, 8]
    for a, b in zip(ind_one, ind_two):
        for key in ("attention", "ep", "induction", "prev_token", "prefix_matching"):
            assert np.allclose(a[key], b[key], atol=1e-5), key
    w_one, w_two = (load_file(folder / "model.safetensors") for folder in (first, second))
    assert all(np.allclose(w_one[k].numpy(), w_two[k].numpy(), atol=1e-4) for k in w_one)
    assert (second / "checkpoint-8" / "induction.json").is_file() and (second / "copy_curve.png").is_file()
