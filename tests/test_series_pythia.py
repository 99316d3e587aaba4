"""`grokcopy series` on a Pythia-shaped suite through the local Hub server, with Pythia's real defects.

The fixture is a tiny GPT-NeoX trained "smoothly" (weights move along a fixed direction, a little
noise per checkpoint) with branches step0, 1, 2, 4, ..., 64, 100, ..., 800 and main == step800:
- the early branches hold `pytorch_model.bin` only, step32 a sharded .bin with its index, step64
  `model.safetensors`, step100 on sharded safetensors with an index (as the final model);
- step1 holds step0's file (EleutherAI/pythia#83: a plain duplicate);
- step4 holds main's files (pythia#205: the final model under an early name);
- step200 holds the final model's first shard (pythia#206: embeddings and layer 0 of the final model).
"""

import json
import os
import shutil
import string
import subprocess
import uuid

import pytest
import torch
from conftest import GROKCOPY
from hub_server import free_port
from safetensors.torch import save_file

from grokcopy.cli import main as grokcopy_main

torch.set_num_threads(1)

STEPS = (0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 300, 400, 500, 600, 700, 800)
FINAL = 800
SAMPLES = 4
SHARD_1 = ("model-00001-of-00002.safetensors", "pytorch_model-00001-of-00002.bin")
COMMON = ["--copy-samples", str(SAMPLES), "--tokens-per-step", "1000", "--no-progress", "--device", "cpu"]


def tokenizer():
    from grokcopy.training.data import train_tokenizer

    return train_tokenizer(["the quick brown fox jumps over the lazy dog\n",
                            string.ascii_letters + string.digits + " .,;:!?\n"], kind="char")


def neox_config(tok, hidden=32):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=2 * hidden, max_position_embeddings=256, tie_word_embeddings=False,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def trajectory(config, steps, final, seed=0):
    """{step: state dict} of a run whose weights move steadily from their init toward the final model."""
    from transformers import GPTNeoXForCausalLM

    torch.manual_seed(seed)
    start = {k: v.clone() for k, v in GPTNeoXForCausalLM(config).state_dict().items()}
    scale = {k: float(v.std()) if v.numel() > 1 and float(v.std()) > 0 else 0.02 for k, v in start.items()}
    direction = {k: torch.randn_like(v) * scale[k] for k, v in start.items()}
    return {s: {k: (v + s / final * direction[k] + 1e-3 * scale[k] * torch.randn_like(v)).contiguous()
                for k, v in start.items()} for s in steps}


def save(folder, config, tok, weights, layout):
    """A checkpoint folder in one of the layouts real repos have."""
    folder.mkdir(parents=True)
    config.save_pretrained(folder)
    tok.save_pretrained(folder)
    if layout == "bin":
        torch.save(weights, folder / "pytorch_model.bin")
        return folder
    if layout == "safetensors":
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
        return folder
    # sharded: embeddings and layer 0 in the first shard, the rest in the second, and the index
    suffix = "safetensors" if layout == "sharded-safetensors" else "bin"
    prefix = "model" if suffix == "safetensors" else "pytorch_model"
    names = [f"{prefix}-0000{i}-of-00002.{suffix}" for i in (1, 2)]
    first = {k for k in weights if "embed_in" in k or ".layers.0." in k}
    weight_map = {k: names[0] if k in first else names[1] for k in weights}
    for name in names:
        shard = {k: v for k, v in weights.items() if weight_map[k] == name}
        save_file(shard, folder / name, metadata={"format": "pt"}) if suffix == "safetensors" else \
            torch.save(shard, folder / name)
    total = sum(v.numel() * v.element_size() for v in weights.values())
    (folder / f"{prefix}.{suffix}.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return folder


def layout_of(step):
    if step <= 16:
        return "bin"
    return {32: "sharded-bin", 64: "safetensors"}.get(step, "sharded-safetensors")


def upload(api, repo_id, branch, folder):
    if branch != "main":
        api.create_branch(repo_id, branch=branch)
    api.upload_folder(folder_path=folder, repo_id=repo_id, revision=branch, commit_message=f"checkpoint {branch}")


@pytest.fixture(scope="module")
def pythia(hub, tmp_path_factory):
    from huggingface_hub import HfApi

    api, root, tok = HfApi(), tmp_path_factory.mktemp("pythia"), tokenizer()
    config = neox_config(tok)
    weights = trajectory(config, [s for s in STEPS if s not in (1, 4)], FINAL)
    repo_id = api.create_repo(f"pythia-tiny-{uuid.uuid4().hex[:6]}").repo_id
    folders = {}
    for step in STEPS:
        if step == 1:  # pythia#83: step1 serves step0's file
            folder = shutil.copytree(folders["step0"], root / "step1")
        elif step == 4:  # pythia#205: an early branch serving the final model
            folder = save(root / "step4", config, tok, weights[FINAL], "sharded-safetensors")
        else:
            folder = save(root / f"step{step}", config, tok, weights[step], layout_of(step))
        folders[f"step{step}"] = folder
    # pythia#206: step200's first shard is the final model's
    shutil.copy(folders[f"step{FINAL}"] / SHARD_1[0], folders["step200"] / SHARD_1[0])
    for step in STEPS:
        upload(api, repo_id, f"step{step}", folders[f"step{step}"])
    upload(api, repo_id, "main", folders[f"step{FINAL}"])
    return repo_id, folders


@pytest.fixture(scope="module")
def pythia_series(pythia, tmp_path_factory):
    """The whole suite analysed once by the real CLI in one process (the tests below read its output)."""
    repo_id, _ = pythia
    out = tmp_path_factory.mktemp("pythia_series") / "series"
    proc = subprocess.run([*GROKCOPY, "series", repo_id, "--out", str(out), *COMMON], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return out, proc


def records_of(out):
    return {r["revision"]: r for r in json.loads((out / "series.json").read_text())["records"]}


def local_analysis(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    task = build_copy_task(tok, CopyTaskConfig(num_samples=SAMPLES), max_length=model_context_length(model))
    return score_copy_task(model, task), analyze_induction(model, seq_len=100, with_bos=True).to_dict()


def test_pythia_shaped_suite_duplicates_suspects_layouts_and_continuity(pythia, pythia_series):
    repo_id, folders = pythia
    out, proc = pythia_series
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = records_of(out)
    assert list(records) == [f"step{s}" for s in STEPS]  # training order; main is no checkpoint name

    assert records["step1"]["duplicate_of"] == "step0" and records["step1"]["suspect"] is None  # pythia#83
    assert records["step4"]["duplicate_of"] == f"step{FINAL}"  # pythia#205: owned by the final step, not step4
    assert "final model's weights" in records["step4"]["suspect"]
    assert records["step200"]["duplicate_of"] is None  # pythia#206: analysed, but suspect
    assert records["step200"]["suspect"] == (f"shard {SHARD_1[0]} equals the final model's (main's sha256); "
                                             "the rest differ")
    assert records["step200"]["exact_match"] is not None
    analysed = [n for n, r in records.items() if not r["duplicate_of"]]
    assert all(records[n]["suspect"] is None for n in analysed if n != "step200")
    assert {records[n]["weight_files"][0] for n in ("step0", "step32", "step64", "step100")} == {
        "pytorch_model.bin", SHARD_1[1], "model.safetensors", SHARD_1[0]}
    for name in ("step2", "step32", "step100"):  # .bin, sharded .bin, sharded safetensors: as loaded locally
        copy, induction = local_analysis(folders[name])
        assert records[name]["exact_match"] == copy["exact_match"]
        assert records[name]["copy"]["per_position"] == copy["per_position"]
        assert records[name]["induction"] == induction
        assert records[name]["tokens"] == int(name[4:]) * 1000

    # Continuity: distances per group to the previous analysed revision and to the first; only step200 flagged.
    groups = {"embeddings", "layer.0", "layer.1", "unembedding", "other"}
    assert records["step0"]["continuity"] == {"previous": None, "to_previous": None, "first": "step0",
                                              "to_first": None}
    assert records["step8"]["continuity"]["previous"] == "step2"  # step4 is a duplicate, not analysed
    for name in analysed[1:]:
        assert set(records[name]["continuity"]["to_first"]) == groups
    flagged = {n: r["discontinuity"] for n, r in records.items() if r.get("discontinuity")}
    assert list(flagged) == ["step200"]
    assert {f.split(":")[0] for f in flagged["step200"]} == {"embeddings", "layer.0"}  # the final model's shard
    assert all("off the path" in f for f in flagged["step200"])
    to_first = [records[n]["continuity"]["to_first"]["layer.1"] for n in analysed[1:] if n != "step200"]
    assert to_first == sorted(to_first)  # a smooth run moves steadily away from its init

    state = json.loads((out / "series.json").read_text())
    assert set(state["suspects"]) == {"step4", "step200"} and list(state["discontinuities"]) == ["step200"]
    assert state["landmarks"]["revisions_on_curve"] == len(analysed) - 1  # step200 left out
    assert "[SUSPECT: shard model-00001-of-00002.safetensors" in proc.stdout
    assert "step4: step 4, 4,000 tokens: duplicate of step800 (not analysed) [SUSPECT" in proc.stdout
    assert ("16 revisions: 2 duplicates, 2 suspect (step4, step200; left out of the curves), 1 with a "
            "discontinuity (step200)") in proc.stdout
    assert not (out / "weights").exists() and not list(out.glob("series.part*"))
    assert len(list((out / "weight_samples").iterdir())) == len(analysed)


def test_revisions_file_csv_and_bfloat16(api, pythia, tmp_path):
    from grokcopy.hub.store import series_histories

    repo_id, _ = pythia
    listing = tmp_path / "checkpoints.csv"
    listing.write_text("step,revision,tokens\n0,step0,0\n64,step64,64000\n200,step200,200000\n")
    out = tmp_path / "csv"
    assert grokcopy_main(["series", repo_id, "--revisions-file", str(listing), "--out", str(out), "--dtype",
                          "bfloat16", *COMMON]) == 0
    records = records_of(out)
    assert list(records) == ["step0", "step64", "step200"]
    assert records["step200"]["suspect"].startswith(f"shard {SHARD_1[0]} equals the final model's")
    for record in records.values():  # bf16 weights: the copy test and the induction analysis both run
        assert record["settings"]["dtype"] == "bfloat16" and record["exact_match"] is not None
        assert record["induction_error"] is None and len(record["induction_max"]) == 2
    assert [r["step"] for r in series_histories(out)["copy_history"]] == [0, 64]  # the suspect left out
    # --include-suspect keeps it on the curves (same records: nothing is analysed again)
    assert grokcopy_main(["series", repo_id, "--revisions-file", str(listing), "--out", str(out), "--dtype",
                          "bfloat16", "--include-suspect", *COMMON]) == 0
    assert records_of(out)["step200"]["analysed_at"] == records["step200"]["analysed_at"]
    assert [r["step"] for r in series_histories(out)["copy_history"]] == [0, 64, 200]
    with pytest.raises(SystemExit) as exit_info:
        grokcopy_main(["series", repo_id, "--revisions-file", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert exit_info.value.code == 2


def test_two_processes_split_the_revisions_and_the_main_one_merges(pythia, pythia_series, tmp_path):
    repo_id, _ = pythia
    single = records_of(pythia_series[0])
    out = tmp_path / "torchrun"
    launcher = [*GROKCOPY[:1], "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(free_port()), "-m", "grokcopy.cli", "series", repo_id, "--out", str(out), *COMMON]
    proc = subprocess.run(launcher, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = records_of(out)
    assert list(records) == list(single)
    analysed = [n for n, r in records.items() if not r["duplicate_of"]]
    by_process = {p: [n for n in analysed if records[n]["process"] == p] for p in (0, 1)}
    assert sorted(by_process[0] + by_process[1]) == sorted(analysed) and abs(len(by_process[0]) - len(by_process[1])) <= 1
    for name, record in records.items():  # the same numbers, flags and verdicts as one process
        for key in ("duplicate_of", "suspect", "exact_match", "token_accuracy", "induction", "continuity",
                    "discontinuity"):
            assert record.get(key) == single[name].get(key), (name, key)
    assert proc.stdout.count("step200: step 200") == 1  # one summary, from the main process
    assert not list(out.glob("series.part*"))

    # Killed before the merge: process 1's records only in its part file, the last one of each process
    # nowhere (in flight). The rerun gives each process one of the two again.
    in_flight = sorted([by_process[0][-1], by_process[1][-1]], key=analysed.index)
    state = json.loads((out / "series.json").read_text())
    (out / "series.part1.json").write_text(json.dumps({"records": [records[n] for n in by_process[1][:-1]]}))
    state["records"] = [r for r in state["records"] if r["revision"] not in by_process[1] + in_flight]
    (out / "series.json").write_text(json.dumps(state))
    # A rerun under torchrun resumes: only that one is analysed again, and nothing is lost.
    proc = subprocess.run(launcher, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = records_of(out)
    assert list(again) == list(records) and not list(out.glob("series.part*"))
    assert [n for n in analysed if again[n]["analysed_at"] != records[n]["analysed_at"]] == in_flight
    assert [again[n]["process"] for n in in_flight] == [0, 1]
    assert all(again[n]["induction"] == records[n]["induction"] for n in in_flight)


def test_report_compares_series_like_runs_and_draws_the_formation_chart(api, pythia, pythia_series, tmp_path):
    """Two sizes of a suite (same data, same batch) in one `grokcopy report`, as training runs are."""
    from grokcopy.experiments.conditions import find_runs, load_runs
    from grokcopy.hub.store import series_histories

    tok = tokenizer()
    config = neox_config(tok, hidden=48)
    bigger = api.create_repo(f"pythia-tiny-48-{uuid.uuid4().hex[:6]}").repo_id
    weights = trajectory(config, (0, 100, 400, FINAL), FINAL, seed=3)
    for step, w in weights.items():
        upload(api, bigger, f"step{step}", save(tmp_path / f"b{step}", config, tok, w, "safetensors"))
    second = tmp_path / "series-48"
    assert grokcopy_main(["series", bigger, "--out", str(second), *COMMON]) == 0

    first = pythia_series[0]
    history = series_histories(first)
    steps = [r["step"] for r in history["copy_history"]]
    assert 200 not in steps and 1 not in steps and 4 not in steps  # suspect and duplicates: not on the curve
    assert steps == sorted(steps) and len(steps) == 13 and history["tokens_per_step"] == 1000
    assert [r["step"] for r in history["induction_history"]] == steps
    assert [r["name"] for r in load_runs(find_runs([first, second]))] == ["series", "series-48"]

    report = tmp_path / "report"
    assert grokcopy_main(["report", str(first), str(second), "--out", str(report)]) == 0
    record = json.loads((report / "report.json").read_text())
    assert {c["label"] for c in record["conditions"]} == {f"series={pythia[0]}", f"series={bigger}"}
    assert {"curves.png", "induction_formation.png"} <= set(record["figures"])
    assert all((report / name).stat().st_size > 0 for name in record["figures"])
    by_label = {c["label"]: c for c in record["conditions"]}
    formation = by_label[f"series={pythia[0]}"]["stats"]["formation"]  # per layer, over the condition's runs
    assert [row["layer"] for row in formation] == [0, 1] and all(row["n_runs"] == 1 for row in formation)
    assert by_label[f"series={bigger}"]["stats"]["steps"] == FINAL
    with pytest.raises(SystemExit) as exit_info:
        grokcopy_main(["report", str(tmp_path / "b0"), "--out", str(report)])
    assert exit_info.value.code == 2
