"""A run survives the cluster: preemption signals and Ctrl-C, requeues, two writers in one folder, one
run per folder, a changed setting on resume, a save cut short, sweeps stopped or with a dead member,
and torn, mixed or foreign folders handed to the report and the analyses; each with real processes
and real signals where the fault is a process's.

Faults from inside a run (SIGKILL, NaN, a full disk, damaged checkpoints) are in test_failures.py;
input refused before a run starts in test_bad_input.py."""

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import GROKCOPY, assert_one_line_error, last_line, steps, tiny_config, tree, write_config

from grokcopy.errors import EXIT_PREEMPTED
from grokcopy.run_dir import RUN_LOCK, checkpoint_problem, checkpoints, read_json, read_jsonl
from grokcopy.training.config import ConfigError, parse_args
from grokcopy.training.pipeline import run_training


def start(config_path: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*GROKCOPY, "train", str(config_path), *extra], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc=None, timeout=300.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError("the process ended first: " + proc.stderr.read()[-3000:])
        time.sleep(0.05)
    raise AssertionError("timed out")


def history_reaches(out: Path, step: int):
    def reached():
        path = out / "copy_history.jsonl"
        return path.is_file() and bool(steps(path)) and max(steps(path)) >= step
    return reached


LONG = {"max_steps": 3000, "save_strategy": "no", "copy_eval_steps": 5, "induction_eval_steps": 50}


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(corpus_file, tmp_path):
    out = tmp_path / "run"
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, out, **LONG))
    first = start(path)
    try:
        wait_for(history_reaches(out, 5), first)
        second = subprocess.run([*GROKCOPY, "train", str(path)], capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"is in use by process {first.pid} on" in last_line(second.stderr)
        # --overwrite_output_dir must not move a folder in use either
        third = subprocess.run([*GROKCOPY, "train", str(path), "--overwrite_output_dir", "true"],
                               capture_output=True, text=True, timeout=300)
        assert third.returncode == 2 and f"in use by process {first.pid}" in last_line(third.stderr)
        assert not list(tmp_path.glob("run.previous-*")) and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert json.loads((out / RUN_LOCK).read_text())["pid"] == first.pid  # killed holding it
    # A killed run's lock is stale; `auto` starts over (no checkpoint), moving the partial run aside
    fourth = subprocess.run([*GROKCOPY, "train", str(path), "--max_steps", "4", "--resume_from_checkpoint", "auto"],
                            capture_output=True, text=True, timeout=300)
    assert fourth.returncode == 0, fourth.stderr[-3000:]
    assert f"took over the lock of process {first.pid}" in fourth.stderr
    assert (tmp_path / "run.previous-1" / "copy_history.jsonl").is_file()
    assert steps(out / "copy_history.jsonl")[0] == 0 and steps(out / "copy_history.jsonl")[-1] == 4
    assert not (out / RUN_LOCK).exists()  # released at the end


def test_sigterm_saves_a_checkpoint_at_the_step_and_auto_resumes_with_a_recorded_change(corpus_file, tmp_path):
    out = tmp_path / "run"
    path = write_config(tmp_path / "c.json", tiny_config(corpus_file, out, **LONG, resume_from_checkpoint="auto"))
    proc = start(path)  # `auto` on an empty folder: a first start
    wait_for(history_reaches(out, 10), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, stderr[-3000:]
    line = last_line(stderr)
    assert "Traceback" not in stderr and line.startswith("grokcopy: error: SIGTERM: training stopped at step ")
    stopped = int(line.split("stopped at step ")[1].split(";")[0])
    assert f"continue from checkpoint-{stopped} with the same command" in line
    folder = out / f"checkpoint-{stopped}"
    assert checkpoint_problem(folder) is None  # saved at the step although save_strategy is "no"
    for name in ("copy_eval.json", "induction.json"):
        assert read_json(folder / name)["step"] == stopped
    assert not (out / RUN_LOCK).exists()

    # the same command resumes (with an allowed, recorded change of max_steps, so that it ends soon)
    resumed = subprocess.run([*GROKCOPY, "train", str(path), "--max_steps", str(stopped + 10),
                              "--resume_allow_changes", "max_steps"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    copy_steps = steps(out / "copy_history.jsonl")
    assert copy_steps == sorted(set(copy_steps)) and stopped in copy_steps and copy_steps[-1] == stopped + 10
    config = read_json(out / "run_config.json")
    assert config["training"]["max_steps"] == 3000  # the run's own setting, and its change from that step on
    assert config["changes"][0]["step"] == stopped
    assert config["changes"][0]["fields"] == {"max_steps": {"from": 3000, "to": stopped + 10}}


@pytest.mark.parametrize("name, code", [("SIGUSR1", EXIT_PREEMPTED), ("SIGINT", 130)], ids=["SIGUSR1", "ctrl-c"])
def test_sigusr1_and_ctrl_c_also_stop_at_a_checkpoint_saying_where_to_resume_from(corpus_file, tmp_path, name, code):
    out = tmp_path / "run"
    proc = start(write_config(tmp_path / "c.json", tiny_config(corpus_file, out, **LONG)))
    wait_for(history_reaches(out, 5), proc)
    proc.send_signal(getattr(signal, name))
    _, stderr = proc.communicate(timeout=300)
    line = assert_one_line_error(subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr),
                                 f"{name}: training stopped at step ", code=code)
    stopped = int(line.split("stopped at step ")[1].split(";")[0])
    assert f"continue from checkpoint-{stopped} with the same command and --resume_from_checkpoint auto" in line
    assert [p.name for p in checkpoints(out)] == [f"checkpoint-{stopped}"]
    assert checkpoint_problem(out / f"checkpoint-{stopped}") is None
    copy_steps = steps(out / "copy_history.jsonl")
    assert copy_steps == sorted(set(copy_steps)) and copy_steps[-1] <= stopped  # what it wrote is whole


def test_the_first_ctrl_c_stops_at_the_step_boundary_and_the_second_at_once():
    """A KeyboardInterrupt raised inside a finalizer is swallowed by Python; a flag cannot be."""
    import os

    from transformers import TrainerControl

    from grokcopy.training.callbacks import StopOnInterrupt

    before = signal.getsignal(signal.SIGINT)
    with StopOnInterrupt() as interrupt:
        control = TrainerControl()
        interrupt.on_step_end(None, None, control)
        assert not control.should_training_stop
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)  # the handler runs in the main thread between bytecodes
        assert interrupt.requested
        interrupt.on_step_end(None, None, control)
        assert control.should_training_stop
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back


def test_overwrite_output_dir_sets_the_old_run_aside_and_a_resume_never_mixes_them(corpus_file, tmp_path):
    """(A fresh run into a folder holding a run is refused: test_bad_input.py.)"""
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, seed=1)))
    before = tree(out)
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4, overwrite_output_dir=True)))
    assert tree(tmp_path / "run.previous-1") == before  # the old run, whole, beside the new one
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-4"]
    # resuming the new run picks up its own checkpoint, never the old run's checkpoint-8
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, resume_from_checkpoint="last",
                                         resume_allow_changes="max_steps")))
    assert steps(out / "copy_history.jsonl") == [0, 2, 4, 6, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run.previous-1"]


@pytest.mark.parametrize("field, value", [("per_device_train_batch_size", 4), ("seed", 1), ("block_size", 64),
                                          ("copy_num_samples", 4), ("induction_seq_len", 20),
                                          ("tokenizer_type", "bpe")])
def test_a_resume_that_would_change_the_data_or_the_measurement_is_refused(corpus_file, tmp_path, field, value):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4)))
    before = (out / "run_config.json").read_text()
    config = tiny_config(corpus_file, out, max_steps=4, resume_from_checkpoint="last", **{field: value})
    with pytest.raises(ConfigError, match=rf"^resume_from_checkpoint: (.*, )?{field} \([^)]* -> '?{value}'?\).* "
                                          "differ from the run"):
        run_training(*parse_args(config, ["--resume_allow_changes", "all"]))
    assert (out / "run_config.json").read_text() == before


def test_an_allowed_change_is_recorded_and_every_copy_record_names_its_test(corpus_file, tmp_path):
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4)))
    resume = tiny_config(corpus_file, out, max_steps=8, learning_rate=1e-3, resume_from_checkpoint="last")
    with pytest.raises(ConfigError, match=r"learning_rate \(0.003 -> 0.001\), max_steps \(4 -> 8\) differ .* add "
                                          r"--resume_allow_changes learning_rate,max_steps"):
        run_training(*parse_args(resume))
    run_training(*parse_args({**resume, "resume_allow_changes": "learning_rate,max_steps"}))
    config = read_json(out / "run_config.json")
    assert config["training"]["learning_rate"] == 3e-3
    assert config["changes"][0]["step"] == 4
    assert config["changes"][0]["fields"]["learning_rate"] == {"from": 3e-3, "to": 1e-3}
    records = read_jsonl(out / "copy_history.jsonl")
    assert [r["step"] for r in records] == [0, 2, 4, 6, 8]
    shapes = {json.dumps(r["copy_shape"], sort_keys=True) for r in records}
    assert len(shapes) == 1 and records[0]["copy_shape"]["num_samples"] == 8


def test_a_checkpoint_saved_without_its_analyses_gets_them_on_resume(corpus_file, tmp_path):
    """SIGTERM after checkpoint-4/trainer_state.json was written, before its copy test and induction analysis."""
    import shutil

    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8)))
    shutil.rmtree(out / "checkpoint-8")
    for name in ("copy_eval.json", "induction.json", "induction.png"):
        (out / "checkpoint-4" / name).unlink()
    for name in ("copy_history.jsonl", "induction_history.jsonl"):
        kept = [r for r in read_jsonl(out / name) if r["step"] < 4]
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in kept))
    (out / "summary.json").unlink()
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=8, resume_from_checkpoint="auto")))
    assert steps(out / "copy_history.jsonl") == [0, 2, 4, 6, 8]
    assert 4 in steps(out / "induction_history.jsonl")
    assert read_json(out / "checkpoint-4" / "copy_eval.json")["step"] == 4
    assert read_json(out / "checkpoint-4" / "induction.json")["step"] == 4


def test_a_parallel_sweep_passes_sigterm_to_its_members_and_leaves_no_orphan(corpus_file, tmp_path):
    base = tmp_path / "base.json"
    write_config(base, tiny_config(corpus_file, tmp_path / "unused", **LONG))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": "base.json", "output_dir": str(tmp_path / "runs"),
                                     "grid": {"learning_rate": [3e-3, 1e-3]}, "names": {"learning_rate": "lr"}}))
    proc = subprocess.Popen([*GROKCOPY, "sweep", str(sweep), "--parallel", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    members = [tmp_path / "runs" / "lr0.003", tmp_path / "runs" / "lr0.001"]
    wait_for(lambda: all(history_reaches(m, 5)() for m in members), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, err[-3000:]
    assert "SIGTERM: passed to 2 running member(s)" in out
    record = read_json(tmp_path / "runs" / "sweep.json")
    assert {m["name"]: m["status"] for m in record["members"]} == {"lr0.003": "interrupted", "lr0.001": "interrupted"}
    for member in members:
        assert not (member / RUN_LOCK).exists()  # its process ended: no orphan trains on
        assert len(checkpoints(member)) == 1 and checkpoint_problem(checkpoints(member)[0]) is None


def test_a_sweep_member_that_died_before_its_first_checkpoint_starts_over(corpus_file, tmp_path, capsys):
    from grokcopy.cli import main

    base = tiny_config(corpus_file, "unused", max_steps=4, save_steps=2, induction_analysis=False)
    del base["output_dir"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "output_dir": str(tmp_path / "runs"),
                                                         "seeds": [0]}))
    attempt = tmp_path / "runs" / "seed0"
    attempt.mkdir(parents=True)
    (attempt / "run_config.json").write_text("{}")
    (attempt / "copy_history.jsonl").write_text('{"step": 0}\n')
    assert main(["sweep", str(tmp_path / "tiny.yaml")]) == 0
    assert "seed0: done" in capsys.readouterr().out
    assert steps(attempt / "copy_history.jsonl") == [0, 2, 4]
    assert sorted(p.name for p in (tmp_path / "runs" / "seed0.previous-1").iterdir()) == [
        "copy_history.jsonl", "run_config.json"]


def finished_run(corpus_file, tmp_path) -> Path:
    out = tmp_path / "run"
    run_training(*parse_args(tiny_config(corpus_file, out, max_steps=4)))
    return out


def report(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([*GROKCOPY, "report", *map(str, paths), "--out", str(paths[0]) + "-report"],
                          capture_output=True, text=True, timeout=300)


def test_the_report_refuses_mixed_or_foreign_folders_in_one_line(corpus_file, tmp_path):
    run = finished_run(corpus_file, tmp_path)
    history = run / "copy_history.jsonl"
    good = history.read_text()
    lines = good.splitlines()
    cases = [
        (lambda: history.write_text("".join(f"{lines[i // 2]}\n" for i in range(2 * len(lines)))),
         "step 0 appears twice"),
        (lambda: history.write_text(lines[1] + "\n" + lines[0] + "\n"), "comes after step"),
        (lambda: history.write_text("[1, 2]\n"), "line 1 is a JSON list, not a record"),
        (lambda: history.write_text(json.dumps({**json.loads(lines[0]), "exact_match": "0.5"}) + "\n"),
         "exact_match is '0.5', not a number"),
    ]
    for damage, needle in cases:
        damage()
        proc = report(run)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "copy_history.jsonl" in last_line(proc.stderr) and needle in last_line(proc.stderr)
    history.write_text(good)
    config = run / "run_config.json"
    for text in ('"a string"', "[1, 2]"):
        config.write_text(text)
        proc = report(run)
        assert proc.returncode == 2 and "run_config.json: expected a JSON object" in last_line(proc.stderr)


def test_report_marks_an_unfinished_run_and_names_a_failed_sweep_member(corpus_file, tmp_path):
    run = finished_run(corpus_file, tmp_path)
    sweep = tmp_path / "sweep"
    shutil.copytree(run, sweep / "complete", ignore=shutil.ignore_patterns("checkpoint-*"))
    stopped = sweep / "stopped"
    shutil.copytree(run, stopped, ignore=shutil.ignore_patterns("checkpoint-*"))
    run_config = read_json(stopped / "run_config.json")
    run_config["training"]["max_steps"] = 16  # killed at step 4 of 16: no summary.json
    (stopped / "run_config.json").write_text(json.dumps(run_config))
    (stopped / "summary.json").unlink()
    (sweep / "sweep.json").write_text(json.dumps({"members": [
        {"name": "complete", "status": "complete"}, {"name": "stopped", "status": "running"},
        {"name": "broken", "status": "failed", "error": "train_files: could not read x.jsonl"}]}))
    proc = report(sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: run stopped is unfinished (stopped at step 4 of 16)" in proc.stdout
    assert "note: run complete is unfinished" not in proc.stdout
    assert "note: sweep member broken has no run to report (failed: train_files: could not read x.jsonl)" in proc.stdout
    record = read_json(tmp_path / "sweep-report" / "report.json")
    assert {r["name"]: r["unfinished"] for r in record["runs"]} == {"complete": None,
                                                                    "stopped": "stopped at step 4 of 16"}
    assert [m["name"] for m in record["missing"]] == ["broken"]
    markdown = (tmp_path / "sweep-report" / "report.md").read_text()
    assert "stopped (**unfinished**: stopped at step 4 of 16)" in markdown and "**broken**" in markdown


def test_a_torn_sweep_record_and_a_member_without_a_name_are_one_line(tmp_path):
    folder = tmp_path / "sweep"
    folder.mkdir()
    for text, needle in (('{"members": [{"na', "not a sweep record"), ('{"members": [{"status": "complete"}]}',
                                                                      "member 1 has no name")):
        (folder / "sweep.json").write_text(text)
        proc = report(folder)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr and needle in last_line(proc.stderr)


def test_analysing_a_run_whose_settings_no_run_could_have_had_is_one_line(corpus_file, tmp_path):
    run = finished_run(corpus_file, tmp_path)
    config = read_json(run / "run_config.json")
    config["training"]["induction_seq_len"] = -5
    (run / "run_config.json").write_text(json.dumps(config))
    proc = subprocess.run([*GROKCOPY, "induction", str(run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "induction_seq_len is -5, not a positive integer" in last_line(proc.stderr)


def test_a_run_without_a_copy_test_is_not_counted_as_a_run_that_never_jumped(corpus_file, tmp_path):
    run = finished_run(corpus_file, tmp_path)
    (run / "copy_history.jsonl").write_text("")
    proc = report(run)
    assert proc.returncode == 2 and "no run in it (no copy_history.jsonl with a copy test" in last_line(proc.stderr)


def test_copy_test_on_a_folder_of_another_tool_is_one_line(corpus_file, tmp_path):
    run = finished_run(corpus_file, tmp_path)
    (run / "run_config.json").write_text("[1, 2]")
    proc = subprocess.run([*GROKCOPY, "copy-test", str(run)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "run_config.json: not a grokcopy run config" in last_line(proc.stderr)


def test_a_requeued_finished_run_trains_nothing_and_one_killed_while_finishing_is_finished(corpus_file, tmp_path):
    out = tmp_path / "run"
    config = tiny_config(corpus_file, out, max_steps=8, resume_from_checkpoint="auto")
    run_training(*parse_args(config))
    before = (out / "copy_history.jsonl").read_text()
    assert run_training(*parse_args(config))["steps"] == 8  # the Trainer alone would take step 9
    assert (out / "copy_history.jsonl").read_text() == before and [p.name for p in checkpoints(out)] == [
        "checkpoint-4", "checkpoint-8"]
    (out / "summary.json").unlink()  # killed after checkpoint-8, before the final model and summary
    (out / "model.safetensors").unlink()
    summary = run_training(*parse_args(config))
    assert summary["steps"] == 8 and steps(out / "copy_history.jsonl") == [0, 2, 4, 6, 8]
    assert (out / "model.safetensors").is_file() and [p.name for p in checkpoints(out)] == ["checkpoint-4",
                                                                                         "checkpoint-8"]
    from safetensors.torch import load_file

    final, saved = load_file(out / "model.safetensors"), load_file(out / "checkpoint-8" / "model.safetensors")
    assert all((final[k] == saved[k]).all() for k in saved)  # the trained model, not a fresh one


def test_a_run_of_an_earlier_version_with_the_paper_shape_written_out_resumes():
    from grokcopy.training.resume import setting_changes

    stored = {"training": {"copy_num_sequences": 50, "copy_query_stride": 5, "induction_seq_len": 100, "seed": 0}}
    now = {"training": {"copy_num_sequences": None, "copy_query_stride": None, "induction_seq_len": None, "seed": 0}}
    assert setting_changes(stored, now) == {}
    assert setting_changes(stored, {"training": {**now["training"], "copy_query_stride": 1}}) == {
        "copy_query_stride": (5, 1)}
