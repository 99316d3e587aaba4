"""Pushing a run as a checkpoint series, through the local Hub server and the real clients."""

import json
import uuid

import numpy as np
import pytest
import torch
from conftest import tiny_config
from transformers import AutoModelForCausalLM, TrainerCallback

from grokcopy.training.config import parse_args
from grokcopy.training.pipeline import build_trainer

BRANCH_FILES = {"config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "copy_eval.json",
                "induction.json", "induction.png", "README.md"}


def series_config(corpus_file, out, **extra):
    settings = {"hub_checkpoint_series": True, "hub_model_id": f"user/run-{uuid.uuid4().hex[:6]}",
                "hub_push_wait": 120, **extra}
    return tiny_config(corpus_file, out, **settings)


def branches(api, repo):
    return sorted(b.name for b in api.list_repo_refs(repo).branches)


def test_every_checkpoint_is_a_branch_with_its_analyses(api, corpus_file, tmp_path):
    out = tmp_path / "run"
    trainer = build_trainer(*parse_args(series_config(corpus_file, out)))
    trainer.train()
    repo = trainer.args.hub_model_id
    assert branches(api, repo) == ["main", "step4", "step8"]
    for step in (4, 8):
        files = set(api.list_repo_files(repo, revision=f"step{step}"))
        assert BRANCH_FILES <= files and "optimizer.pt" not in files
        remote = AutoModelForCausalLM.from_pretrained(repo, revision=f"step{step}")
        local = AutoModelForCausalLM.from_pretrained(out / f"checkpoint-{step}")
        assert all(torch.equal(a, b) for a, b in zip(remote.state_dict().values(), local.state_dict().values()))
        copy_eval = json.loads(open(api.hf_hub_download(repo, "copy_eval.json", revision=f"step{step}")).read())
        assert copy_eval["step"] == step
    main_files = set(api.list_repo_files(repo))
    assert {"copy_history.jsonl", "model.safetensors", "README.md"} <= main_files
    assert api.model_info(repo).sha == api.model_info(repo, revision="main").sha
    card = open(api.hf_hub_download(repo, "README.md")).read()
    assert "model-index" in card and "step4, step8" in card and "copy exact match" in card
    assert json.loads((out / "hub_pushes.json").read_text())["pushed"] == [4, 8]
    assert trainer.hub_callback.failures == 0

    # Downloading the series and analysing it reproduces what training measured locally.
    from grokcopy.hub.series import analyze_series

    from grokcopy.analysis.induction_config import InductionConfig
    from grokcopy.copytest.task import CopyTaskConfig

    records = analyze_series(repo, out_dir=tmp_path / "series", copy=CopyTaskConfig.from_training_args(trainer.args),
                             induction=InductionConfig.from_training_args(trainer.args), progress=False)
    assert [r["revision"] for r in records] == ["step4", "step8"]
    for record in records:
        local_copy = json.loads((out / f"checkpoint-{record['step']}" / "copy_eval.json").read_text())
        local_induction = json.loads((out / f"checkpoint-{record['step']}" / "induction.json").read_text())
        assert record["exact_match"] == local_copy["exact_match"]
        assert record["token_accuracy"] == local_copy["token_accuracy"]
        assert record["tokens"] == local_copy["tokens"]
        assert np.allclose(record["induction"]["induction"], local_induction["induction"], atol=1e-6)


class Fault(TrainerCallback):
    """Break the Hub at step 2, before the first checkpoint is saved at step 4."""

    def __init__(self, hub, kind):
        self.hub, self.kind = hub, kind

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 2:
            {"down": self.hub.stop, "500": lambda: self.hub.fail_with(500),
             "hang": lambda: self.hub.hang(3600)}[self.kind]()


@pytest.mark.parametrize("kind", ["down", "500", "hang"])
def test_training_survives_a_broken_hub_and_pushes_once_it_is_back(api, hub, corpus_file, tmp_path, kind):
    out = tmp_path / "run"
    config = series_config(corpus_file, out, hub_push_wait=0.5, hub_push_timeout=1)
    trainer = build_trainer(*parse_args(config), callbacks=[Fault(hub, kind)])
    repo = trainer.args.hub_model_id
    trainer.train()  # completes although no push can land
    assert trainer.state.global_step == 8
    for step in (4, 8):
        assert (out / f"checkpoint-{step}" / "model.safetensors").is_file()
        assert (out / f"checkpoint-{step}" / "optimizer.pt").is_file()
    assert trainer.hub_callback.pending
    hub.heal()
    if not hub.is_running:
        hub.start()
    assert trainer.hub_callback.wait(90), "pushes did not land after the Hub came back"
    assert branches(api, repo) == ["main", "step4", "step8"]
    if kind != "hang":  # a hang is absorbed by the client's own retries; errors reach our backoff loop
        assert trainer.hub_callback.failures > 0


def test_restart_pushes_checkpoints_that_never_reached_the_hub(api, hub, corpus_file, tmp_path):
    out = tmp_path / "run"
    hub.stop()
    first = build_trainer(*parse_args(series_config(corpus_file, out, hub_push_wait=0.2, hub_push_timeout=1)))
    first.train()
    repo = first.args.hub_model_id
    assert json.loads((out / "hub_pushes.json").read_text()) == {"repo_id": repo, "pushed": []}
    hub.start()
    # A new process resumes the run for 4 more steps; the checkpoints the first never pushed go up too.
    config = series_config(corpus_file, out, hub_model_id=repo, max_steps=12)
    second = build_trainer(*parse_args(config))
    second.train(resume_from_checkpoint=str(out / "checkpoint-8"))
    assert branches(api, repo) == ["main", "step12", "step4", "step8"]


def test_trainer_push_to_hub_still_works(api, corpus_file, tmp_path):
    repo = f"user/plain-{uuid.uuid4().hex[:6]}"
    config = tiny_config(corpus_file, tmp_path / "run", push_to_hub=True, hub_model_id=repo, max_steps=4)
    trainer = build_trainer(*parse_args(config))
    trainer.train()
    trainer.push_to_hub()
    assert "model.safetensors" in api.list_repo_files(repo)


def test_push_metric_space_loads_with_evaluate(api):
    import evaluate

    from grokcopy.hub.push import push_metric

    for space in (f"user{uuid.uuid4().hex[:4]}/copy_accuracy", f"user/copy_acc_{uuid.uuid4().hex[:4]}"):
        push_metric(space)
        metric = evaluate.load(space)
        assert metric.compute(predictions=[[1, 2]], references=[[1, 3]]) == {"exact_match": 0.0, "token_accuracy": 0.5}


def test_push_command_sends_pending_checkpoints(api, hub, corpus_file, tmp_path):
    import subprocess

    from conftest import GROKCOPY

    out = tmp_path / "run"
    with hub.down():
        trainer = build_trainer(*parse_args(series_config(corpus_file, out, hub_push_wait=0.2, hub_push_timeout=1)))
        trainer.train()
    proc = subprocess.run([*GROKCOPY, "push", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert branches(api, trainer.args.hub_model_id) == ["main", "step4", "step8"]
    nothing = subprocess.run([*GROKCOPY, "push", str(tmp_path / "none")], capture_output=True, text=True, timeout=300)
    assert nothing.returncode == 2 and "hub_pushes.json" in nothing.stderr


def test_induction_and_copy_test_cli_on_a_hub_revision(api, corpus_file, tmp_path):
    import subprocess

    from conftest import GROKCOPY

    trainer = build_trainer(*parse_args(series_config(corpus_file, tmp_path / "run")))
    trainer.train()
    repo = trainer.args.hub_model_id
    proc = subprocess.run([*GROKCOPY, "induction", repo, "--revision", "step4", "--json", str(tmp_path / "i.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    remote = json.loads((tmp_path / "i.json").read_text())
    local = json.loads((tmp_path / "run" / "checkpoint-4" / "induction.json").read_text())
    assert np.allclose(remote["induction"], local["induction"], atol=1e-6) and remote["revision"] == "step4"
    copy = subprocess.run([*GROKCOPY, "copy-test", repo, "--revision", "step8", "--num_samples", "8"],
                          capture_output=True, text=True, timeout=300)
    assert copy.returncode == 0, copy.stderr
    assert json.loads(copy.stdout[copy.stdout.index("{"):])["exact_match"] >= 0.0
    missing = subprocess.run([*GROKCOPY, "induction", repo, "--revision", "step999"], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "step999" in missing.stderr


def test_a_run_puts_its_final_figures_summary_and_card_on_main(api, corpus_file, tmp_path):
    from grokcopy.training.pipeline import run_training

    out = tmp_path / "run"
    config = series_config(corpus_file, out)
    run_training(*parse_args(config))
    repo = config["hub_model_id"]
    main_files = set(api.list_repo_files(repo))
    assert {"copy_curve.png", "summary.json", "copy_history.jsonl", "model.safetensors"} <= main_files
    summary = json.loads(open(api.hf_hub_download(repo, "summary.json")).read())
    assert summary == json.loads((out / "summary.json").read_text())
    card = open(api.hf_hub_download(repo, "README.md")).read()
    assert "license: apache-2.0" in card and "pipeline_tag: text-generation" in card
    assert "library_name: transformers" in card and "pretrained from scratch" in card


def test_a_refused_push_is_not_retried_and_says_so(api, hub, corpus_file, tmp_path, caplog):
    out = tmp_path / "run"
    hub.fail_with(403)  # a token without write access, from the first request on
    trainer = build_trainer(*parse_args(series_config(corpus_file, out, hub_push_wait=30, hub_push_timeout=5)))
    with caplog.at_level("ERROR", logger="grokcopy.hub.push"):
        trainer.train()  # training is never stopped by the Hub
    assert trainer.state.global_step == 8
    assert trainer.hub_callback.failures == 1 and trainer.hub_callback.refused  # no retry loop
    assert not trainer.hub_callback.pending and not trainer.hub_callback.wait(1)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "refused" in errors[0] and "grokcopy push" in errors[0]
    hub.heal()


def fake_run(out, steps):
    """A run folder with complete (tiny) checkpoints, as the Trainer leaves them: pushing needs no training."""
    from safetensors.torch import save_file

    for step in steps:
        folder = out / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        save_file({"w": torch.full((2,), float(step))}, str(folder / "model.safetensors"))
        (folder / "config.json").write_text("{}")
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    (out / "copy_history.jsonl").write_text("".join(json.dumps({"step": s, "exact_match": 0.0}) + "\n" for s in steps))
    return out


def commits_sent(hub, repo):
    return [path for method, path in hub.requests if method == "POST" and f"/{repo}/commit/" in path]


@pytest.mark.parametrize("status, retried", [(408, True), (429, True), (500, True), (503, True), (401, False),
                                             (403, False), (404, False)])
def test_a_failed_commit_is_retried_unless_refused_and_commits_keep_their_order(api, hub, tmp_path, status, retried):
    """huggingface_hub's background commits with grokcopy's retry policy: 408/429/5xx are retried (the next
    checkpoint waits its turn), 401/403/404 stop all pushing after that one request; hub_pushes.json says what
    landed."""
    from grokcopy.hub.push import HubCheckpointCallback

    out = fake_run(tmp_path / "run", (1, 2, 3))
    repo = f"user/policy-{uuid.uuid4().hex[:6]}"
    callback = HubCheckpointCallback(repo, timeout=5)
    hub.fail_with(status, times=1, match="/commit/")
    assert callback.push_pending(out, timeout=60) is retried
    assert callback.failures == 1 and not callback.pending
    pushed = json.loads((out / "hub_pushes.json").read_text())
    if retried:
        assert callback.refused is None and pushed == {"repo_id": repo, "pushed": [1, 2, 3]}
        assert branches(api, repo) == ["main", "step1", "step2", "step3"]
        assert [c.title for c in api.list_repo_commits(repo)][:3] == [f"main follows step {s}" for s in (3, 2, 1)]
        assert len(commits_sent(hub, repo)) == 7  # the failed one again, then a branch and a main commit per step
    else:
        assert callback.refused and str(status) in callback.refused and pushed == {"repo_id": repo, "pushed": []}
        assert len(commits_sent(hub, repo)) == 1 and not callback.wait(1)


def test_close_gives_up_what_has_not_landed(api, hub, tmp_path):
    """After the final wait, `close()` drops the queued pushes and stops the retrying one, so that the process
    can exit while the Hub is unreachable; the record keeps them unpushed, and `grokcopy push` sends them."""
    import time

    from grokcopy.hub.push import HubCheckpointCallback

    out = fake_run(tmp_path / "run", (1, 2))
    callback = HubCheckpointCallback(f"user/closed-{uuid.uuid4().hex[:6]}", timeout=1)
    with hub.down():
        assert not callback.push_pending(out, timeout=0.5) and callback.pending == {1, 2}
        start = time.monotonic()
        callback.close()
        assert not callback.wait(30) and not callback.pending and time.monotonic() - start < 10
    assert callback.failures >= 1
    assert json.loads((out / "hub_pushes.json").read_text())["pushed"] == []


def test_card_metadata_names_a_hub_base_model(tmp_path):
    from types import SimpleNamespace

    from transformers import LlamaConfig

    from grokcopy.hub.model_card import render_card

    (tmp_path / "copy_history.jsonl").write_text(json.dumps({"step": 4, "tokens": 40, "exact_match": 0.5,
                                                             "token_accuracy": 0.6}) + "\n")
    args = SimpleNamespace(hub_license="mit", learning_rate=1e-3)
    card = render_card("user/cont", tmp_path, ["step4"], LlamaConfig(), args, "Some data.", base_model="org/base-1b",
                       datasets=["org/web-text"])
    assert "base_model: org/base-1b" in card and "continued from `org/base-1b`" in card
    assert "license: mit" in card and "- org/web-text" in card


def test_log_save_schedule_gives_the_series_step0_and_pythias_early_grid(api, corpus_file, tmp_path):
    out = tmp_path / "run"
    trainer = build_trainer(*parse_args(series_config(corpus_file, out, save_schedule="log", save_steps=4)))
    trainer.train()
    assert [p.name for p in sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))] == [
        "checkpoint-0", "checkpoint-1", "checkpoint-2", "checkpoint-4", "checkpoint-8"]
    for step in (0, 1, 2):
        folder = out / f"checkpoint-{step}"
        assert json.loads((folder / "copy_eval.json").read_text())["step"] == step
        assert json.loads((folder / "induction.json").read_text())["step"] == step
    repo = trainer.args.hub_model_id
    assert branches(api, repo) == ["main", "step0", "step1", "step2", "step4", "step8"]
    untrained = AutoModelForCausalLM.from_pretrained(repo, revision="step0")
    local = AutoModelForCausalLM.from_pretrained(out / "checkpoint-0")
    assert all(torch.equal(a, b) for a, b in zip(untrained.state_dict().values(), local.state_dict().values()))


def test_a_plain_trainer_waits_for_the_last_push_at_the_end(api, corpus_file, tmp_path):
    """HubCheckpointCallback in any Trainer: train() returns once the queued checkpoints landed."""
    from transformers import Trainer

    from grokcopy.hub.push import HubCheckpointCallback

    copy_trainer = build_trainer(*parse_args(tiny_config(corpus_file, tmp_path / "ref", save_steps=4)))
    repo = f"user/plain-series-{uuid.uuid4().hex[:6]}"
    callback = HubCheckpointCallback(repo)
    trainer = Trainer(model=copy_trainer.model, args=copy_trainer.args, train_dataset=copy_trainer.train_dataset,
                      processing_class=copy_trainer.processing_class, callbacks=[callback])
    trainer.train()
    assert not callback.pending and branches(api, repo) == ["main", "step4", "step8"]
