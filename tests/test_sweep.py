"""Sweep files: every shipped sweep parses and every member validates; the CPU twins start training;
a tiny sweep runs, skips what is complete, resumes what is not, prints launch commands; one-line errors."""

import json
import shlex

import pytest
import torch
import yaml
from conftest import REPO, tiny_config

from grokcopy.cli import main
from grokcopy.experiments.sweep import load_sweep, validate
from grokcopy.run_dir import read_jsonl
from grokcopy.training.config import load_config_file, parse_args

SWEEPS = REPO / "trainer_configs" / "sweeps"
SWEEP_FILES = sorted(p.name for p in SWEEPS.glob("*.yaml"))


def test_the_sweeps_are_there():
    assert SWEEP_FILES == ["cpu-batch-size.yaml", "cpu-claim1-stdlib.yaml", "cpu-critical-batch-tuned.yaml", "cpu-critical-batch.yaml", "cpu-depth-higher-order-pilot.yaml",
                           "cpu-depth-knockout.yaml", "cpu-depth-layerdrop-long.yaml", "cpu-depth-layerdrop-pilot.yaml", "cpu-depth-layerdrop.yaml", "cpu-depth-pilot2.yaml", "cpu-depth.yaml", "cpu-forecast-test.yaml", "cpu-learning-rate.yaml", "cpu-lr-batch.yaml",
                           "cpu-regularization.yaml", "paper-batch-size.yaml", "paper-critical-batch.yaml", "paper-learning-rate.yaml", "paper-regularization.yaml"]


TWINS = [n for n in SWEEP_FILES if n.split("-", 1)[1] in ("batch-size.yaml", "learning-rate.yaml",
                                                            "regularization.yaml")]


@pytest.mark.parametrize("name", TWINS)
def test_every_sweep_file_parses_and_every_member_validates(name):
    sweep = load_sweep(SWEEPS / name)
    base = load_config_file(sweep.base)
    gpu = name.startswith("paper")
    claim4 = name == "cpu-regularization.yaml"  # claim 4 on the demo recipe, 8 seeds (its PROTOCOL.md)
    assert sweep.base.name == ("paper-162m.yaml" if gpu else "demo.yaml" if claim4 else "demo-identifiers.yaml")
    parsed = validate(sweep, sweep.members, [], hardware_neutral=gpu and not torch.cuda.is_available())
    seeds = {0, 1, 2} if gpu else set(range(8)) if claim4 else {0, 1, 2, 3}  # CPU: >= 4 seeds per condition
    assert len(sweep.members) == (4 if claim4 else 3) * len(seeds)
    args = {m.name: parsed[m.name] for m in sweep.members}
    training = {n: a[2] for n, a in args.items()}
    assert {t.seed for t in training.values()} == seeds
    assert all(m.output_dir == sweep.output_dir / m.name for m in sweep.members)
    assert str(sweep.output_dir) == f"runs/sweeps/{name[:-5]}"
    # every member trains for the base's number of optimizer steps (the batch sweep compares them in steps)
    assert {t.max_steps for t in training.values()} == {base["max_steps"]}
    batches = {t.per_device_train_batch_size for t in training.values()}
    rates = {t.learning_rate for t in training.values()}
    if "batch-size" in name:
        assert batches == ({32, 64, 128} if gpu else {64, 128, 256}) and rates == {base["learning_rate"]}
        assert {m.name for m in sweep.members} >= {"bs32-seed0" if gpu else "bs256-seed2"}
    elif "learning-rate" in name:
        assert rates == ({1e-4, 2e-4, 4e-4} if gpu else {1.5e-3, 3e-3, 6e-3})
        assert batches == {base["per_device_train_batch_size"]}
    else:
        kinds = {n.rsplit("-seed", 1)[0]: (a[0].attention_dropout, a[2].weight_decay) for n, a in args.items()}
        assert kinds == ({"baseline": (None, 0.0), "dropout0.1": (0.1, 0.0), "wd0.1": (None, 0.1), "wd0.6": (None, 0.6)}
                         if claim4 else {"baseline": (None, 0.0), "dropout": (0.1, 0.0), "weight-decay": (None, 0.1)})
        assert batches == {base["per_device_train_batch_size"]} and rates == {base["learning_rate"]}


def test_critical_batch_sweeps_share_a_budget_and_the_stop_rule():
    """Issue #15's sweeps: the demo at B = 32 ... 2048 documents x 4 seeds and LR x B x 4 seeds, each member
    stopping at exact match 0.8 or at a budget of 12M tokens or 700 steps, whichever is more; every member with
    micro-batches for the noise scale; sweep B's grid leaves out the demo's LR (sweep A has it); the 4-layer twin."""
    demo_lr = load_config_file(REPO / "trainer_configs" / "demo.yaml")["learning_rate"]
    for name, n_members, seeds in (("cpu-critical-batch.yaml", 28, 4), ("cpu-lr-batch.yaml", 36, 4),
                                   ("cpu-depth.yaml", 4, 4), ("cpu-depth-knockout.yaml", 4, 4),
                                   ("cpu-critical-batch-tuned.yaml", 24, 4)):
        sweep = load_sweep(SWEEPS / name)
        parsed = validate(sweep, sweep.members, [])
        assert len(sweep.members) == n_members and str(sweep.output_dir) == f"runs/sweeps/{name[:-5]}"
        training = [parsed[m.name][2] for m in sweep.members]
        assert len({t.seed for t in training}) == seeds
        if name.startswith("cpu-depth"):
            assert {parsed[m.name][0].num_hidden_layers for m in sweep.members} == {4}
            assert {parsed[m.name][0].knockout_attention_layers for m in sweep.members} == (
                {"1"} if "knockout" in name else {None})
            continue
        assert {t.copy_stop_exact_match for t in training} == {0.8}
        assert all(t.gradient_noise_scale and t.gradient_accumulation_steps >= 2 for t in training)
        docs = {t.per_device_train_batch_size * t.gradient_accumulation_steps for t in training}
        assert docs == ({64, 128, 256} if "tuned" in name else {32, 64, 128, 256, 512, 1024, 2048}
                        if "critical" in name else {64, 512, 2048})
        for t in training:
            per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps * 40
            assert t.max_steps == max(700, 12_000_000 // per_step)
            assert t.copy_eval_steps <= max(10, t.max_steps // 60)  # dense enough not to quantise the jump
        rates = {t.learning_rate for t in training}
        assert rates == ({0.000375, 0.00075} if "tuned" in name else {demo_lr} if "critical" in name
                         else {0.00075, 0.003, 0.006})


def test_paper_critical_batch_spans_the_papers_batches_with_a_shared_budget():
    """The GPU sweep that tests the CPU fit's prediction: 32 ... 1,024 sequences of 1,024 tokens on 8 GPUs (the
    paper's 256-1,024 inside), 10B tokens or 60k steps, whichever is more; the stop rule and the noise scale."""
    sweep = load_sweep(SWEEPS / "paper-critical-batch.yaml")
    parsed = validate(sweep, sweep.members, [], hardware_neutral=not torch.cuda.is_available())
    training = [parsed[m.name][2] for m in sweep.members]
    assert len(training) == 18 and {t.seed for t in training} == {0, 1, 2}
    assert all(t.copy_stop_exact_match == 0.8 and t.gradient_noise_scale for t in training)
    for t in training:
        sequences = t.per_device_train_batch_size * t.gradient_accumulation_steps * 8
        assert t.max_steps == max(60_000, -(-10_000_000_000 // (sequences * 1024)))
    assert {t.per_device_train_batch_size * t.gradient_accumulation_steps * 8 for t in training} == \
        {32, 64, 128, 256, 512, 1024}


def test_only_runs_members_in_the_order_given():
    """`--only b,a` runs b first: long members can go first and seeds in turn (a cut-off sweep keeps whole seeds)."""
    from grokcopy.experiments.sweep import select
    sweep = load_sweep(SWEEPS / "cpu-critical-batch.yaml")
    picked = select(sweep, "bs2048-seed1,bs32-seed0,bs2048-seed1,bs512-seed0")
    assert [m.name for m in picked] == ["bs2048-seed1", "bs32-seed0", "bs512-seed0"]
    assert [m.name for m in select(sweep, None)] == [m.name for m in sweep.members]


SMOKE = ["--max_steps", "2", "--save_strategy", "no", "--eval_strategy", "no", "--induction_analysis", "false",
         "--disable_tqdm", "true", "--demo_corpus_config", '{"num_documents": 6000}']


@pytest.mark.parametrize("name, member", [("cpu-batch-size.yaml", "bs256-seed0"),
                                          ("cpu-learning-rate.yaml", "lr0.006-seed1"),
                                          ("cpu-regularization.yaml", "dropout0.1-seed2")])
def test_cpu_twin_member_loads_and_trains(name, member, tmp_path, capsys):
    """One member of each CPU twin, with its own fields, for 2 steps (a smaller generated corpus)."""
    out = tmp_path / "sweep"
    assert main(["sweep", str(SWEEPS / name), "--only", member, "--output_dir", str(out), *SMOKE]) == 0
    assert f"{member}: done" in capsys.readouterr().out
    run = json.loads((out / member / "run_config.json").read_text())
    state = json.loads((out / member / "trainer_state.json").read_text())
    model_config = json.loads((out / member / "config.json").read_text())
    assert state["global_step"] == 2 and run["training"]["seed"] == int(member[-1])
    if "batch" in name:
        assert run["training"]["per_device_train_batch_size"] == 256 and run["tokens_per_step"] == 256 * 40
    elif "learning" in name:
        assert run["training"]["learning_rate"] == 6e-3
    else:
        assert model_config["attention_dropout"] == 0.1 and run["training"]["weight_decay"] == 0.0
    record = json.loads((out / "sweep.json").read_text())
    statuses = {m["name"]: m["status"] for m in record["members"]}
    assert statuses.pop(member) == "complete" and set(statuses.values()) == {"pending"}
    assert len(statuses) + 1 == len(load_sweep(SWEEPS / name).members)


@pytest.fixture
def tiny_sweep(corpus_file, tmp_path):
    base = tiny_config(corpus_file, "unused", max_steps=4, save_steps=2, induction_analysis=False)
    del base["output_dir"]
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    sweep = {"base": "base.yaml", "output_dir": str(tmp_path / "runs"), "grid": {"learning_rate": [3e-3, 1e-3]},
             "names": {"learning_rate": "lr"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_tiny_sweep_runs_skips_resumes_and_prints_commands(tiny_sweep, capsys):
    runs = tiny_sweep.parent / "runs"
    commands = _lines(capsys, ["sweep", str(tiny_sweep), "--print-commands"])
    assert len(commands) == 2 and not runs.exists()  # printing runs nothing
    argv = shlex.split(commands[1])
    assert argv[:3] == ["grokcopy", "train", str(tiny_sweep.parent / "base.yaml")]
    _, _, args = parse_args(argv[2], argv[3:])  # the command trains exactly the member
    assert args.learning_rate == 1e-3 and args.output_dir == str(runs / "lr0.001") and args.max_steps == 4

    assert main(["sweep", str(tiny_sweep)]) == 0
    printed = capsys.readouterr().out
    assert "[1/2] lr0.003: training" in printed and "[2/2] lr0.001: done" in printed
    record = json.loads((runs / "sweep.json").read_text())
    assert [(m["name"], m["status"], m["steps"]) for m in record["members"]] == [
        ("lr0.003", "complete", 4), ("lr0.001", "complete", 4)]
    assert record["varied"] == ["learning_rate"]
    stamps = {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}

    assert main(["sweep", str(tiny_sweep)]) == 0  # a rerun skips both
    printed = capsys.readouterr().out
    assert printed.count("complete, skipped") == 2 and "training" not in printed
    assert stamps == {p: p.stat().st_mtime_ns for p in runs.glob("*/summary.json")}
    assert _lines(capsys, ["sweep", str(tiny_sweep), "--print-commands"]) == [
        "# lr0.003: complete (4 steps)", "# lr0.001: complete (4 steps)"]

    # longer: both are now partial; one resumes from its last checkpoint, the other is left to another machine
    longer = ["--max_steps", "6", "--save_steps", "2", "--resume_allow_changes", "max_steps"]
    commands = _lines(capsys, ["sweep", str(tiny_sweep), *longer, "--print-commands", "--launcher", "torchrun",
                               "--nproc", "2"])
    assert all(c.startswith("torchrun --nproc_per_node 2 -m grokcopy.cli train ") for c in commands)
    assert all(c.endswith("--max_steps 6 --save_steps 2 --resume_allow_changes max_steps --resume_from_checkpoint last")
               for c in commands)
    assert main(["sweep", str(tiny_sweep), *longer, "--only", "lr0.001"]) == 0
    assert "lr0.001: resuming" in capsys.readouterr().out
    assert [r["step"] for r in read_jsonl(runs / "lr0.001" / "copy_history.jsonl")] == [0, 2, 4, 6]
    statuses = {m["name"]: (m["status"], m["steps"]) for m in json.loads((runs / "sweep.json").read_text())["members"]}
    assert statuses == {"lr0.003": ("partial", 4), "lr0.001": ("complete", 6)}


def _lines(capsys, argv):
    assert main(argv) == 0
    return capsys.readouterr().out.strip().splitlines()


@pytest.mark.parametrize("change, args, needle", [
    ({"base": "nowhere.yaml"}, [], "base: config file not found"),
    ({"grid": {"learning_rat": [1e-3]}}, [], "grid: unknown field: learning_rat"),
    ({"grid": {}}, [], "no members: grid, members and seeds are all empty"),
    ({"grid": {"seed": []}}, [], "grid: seed: expected a non-empty list"),
    ({"grid": {"learning_rate": [1e-3, "fast"]}}, [], "member lrfast:"),
    ({"members": {"a": {"weight_decay": 0.1}, "b": {"weight_dekay": 0.1}}}, [], "members: unknown field: weight_dekay"),
    ({"grids": {}}, [], "unknown sweep key: grids"),
    ({}, ["--learning_rate", "1"], "--learning_rate: the sweep sets this field per member"),
    ({}, ["--only", "lr9"], "--only: no member named lr9"),
    ({}, ["--nproc", "2"], "go with --print-commands"),
    ({}, ["--max_stepz", "2"], "member lr0.003: unknown field: max_stepz"),
])
def test_sweep_errors_are_one_line_and_nothing_runs(tiny_sweep, capsys, change, args, needle):
    sweep = {**yaml.safe_load(tiny_sweep.read_text()), **change}
    tiny_sweep.write_text(yaml.safe_dump(sweep))
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(tiny_sweep), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("grokcopy: error:") and needle in err[0], err
    assert not (tiny_sweep.parent / "runs").exists()


def test_missing_sweep_file_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", str(tmp_path / "none.yaml")])
    assert capsys.readouterr().err.strip() == f"grokcopy: error: sweep file not found: {tmp_path / 'none.yaml'}"


def test_parallel_members_run_at_once_with_one_thread_each_and_are_archived(tiny_sweep, tmp_path, capsys):
    archive = tmp_path / "archive"
    assert main(["sweep", str(tiny_sweep), "--parallel", "2", "--archive", str(archive)]) == 0
    printed = capsys.readouterr().out
    assert "2 members, 2 at once, 1 thread each" in printed and printed.count(": done in") == 2
    runs = tiny_sweep.parent / "runs"
    record = json.loads((runs / "sweep.json").read_text())
    assert [(m["name"], m["status"], m["steps"]) for m in record["members"]] == [
        ("lr0.003", "complete", 4), ("lr0.001", "complete", 4)]
    for name in ("lr0.003", "lr0.001"):
        assert (runs / name / "train.log").is_file() and (runs / name / "model.safetensors").is_file()
        kept = {p.name for p in (archive / name).iterdir()}
        assert kept == {"run_config.json", "copy_history.jsonl", "summary.json", "trainer_state.json"}  # no weights
        assert read_jsonl(archive / name / "copy_history.jsonl") == read_jsonl(runs / name / "copy_history.jsonl")
    # the archive is a report's input: no training needed to regenerate it
    assert main(["report", str(archive), "--out", str(tmp_path / "report")]) == 0
    with pytest.raises(SystemExit):
        main(["sweep", str(tiny_sweep), "--parallel", "0"])


def test_a_second_only_run_keeps_what_the_first_recorded(tiny_sweep, capsys):
    """Seeds run by separate `--only` invocations: the second must not drop the first one's minutes."""
    runs = tiny_sweep.parent / "runs"
    assert main(["sweep", str(tiny_sweep), "--only", "lr0.003"]) == 0
    first = {m["name"]: m for m in json.loads((runs / "sweep.json").read_text())["members"]}
    assert first["lr0.003"]["status"] == "complete" and first["lr0.003"]["minutes"] >= 0
    assert main(["sweep", str(tiny_sweep), "--only", "lr0.001"]) == 0
    second = {m["name"]: m for m in json.loads((runs / "sweep.json").read_text())["members"]}
    assert second["lr0.001"]["status"] == "complete" and "minutes" in second["lr0.001"]
    assert second["lr0.003"]["minutes"] == first["lr0.003"]["minutes"]
    assert second["lr0.003"]["final_exact_match"] == first["lr0.003"]["final_exact_match"]
