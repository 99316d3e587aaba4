"""Config files + command-line overrides, and one-line errors for bad configs."""

import json
import subprocess

import pytest
import yaml
from conftest import GROKCOPY, REPO, tiny_config

from grokcopy.training.config import ConfigError, parse_args


def run_cli(*args, cwd=None):
    return subprocess.run([*GROKCOPY, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def assert_one_line_error(proc, *needles):
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("grokcopy: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0]


def test_overrides_win_and_types_apply(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"learning_rate": 3e-3, "block_size": 64, "report_to": ["tensorboard"]}))
    model_args, data_args, args = parse_args(cfg, ["--learning_rate", "1e-4", "--preset", "demo"])
    assert args.learning_rate == 1e-4 and data_args.block_size == 64 and model_args.preset == "demo"
    assert args.report_to == ["tensorboard"]


def test_json_config(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"max_steps": 3, "lr_scheduler_kwargs": {"min_lr": 1e-5}}))
    _, _, args = parse_args(cfg)
    assert args.max_steps == 3 and args.lr_scheduler_kwargs == {"min_lr": 1e-5}


@pytest.mark.parametrize("config,overrides,needle", [
    ({"learning_rat": 1e-3}, [], "learning_rat"),
    ({}, ["--blok_size", "3"], "blok_size"),
    ({"learning_rate": "fast"}, [], "learning_rate"),
    ({}, ["--max_steps", "1.5"], "max_steps"),
    ({"copy_symbols": "octal"}, [], "copy_symbols"),
])
def test_bad_fields_name_the_field(config, overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_args(config, overrides)


def test_cli_unknown_field_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("learning_rate: 0.001\nnum_layerz: 3\n")
    assert_one_line_error(run_cli("train", str(cfg)), "num_layerz")


def test_cli_wrong_type_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("max_steps: 10\n")
    assert_one_line_error(run_cli("train", str(cfg), "--per_device_train_batch_size", "big"),
                          "per_device_train_batch_size")


def test_cli_missing_config_file(tmp_path):
    assert_one_line_error(run_cli("train", str(tmp_path / "nope.yaml")), "nope.yaml")


def test_cli_missing_data_file_leaves_no_output(tmp_path):
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config(tmp_path / "missing.jsonl", out)))
    assert_one_line_error(run_cli("train", str(cfg)), "train_files", "missing.jsonl")
    assert not out.exists()


def test_shipped_configs_parse():
    import torch

    cpu_overrides = [] if torch.cuda.is_available() else ["--bf16", "false", "--tf32", "false", "--optim", "adamw_torch"]
    paths = sorted((REPO / "trainer_configs").glob("*.yaml"))
    assert len(paths) >= 2
    for path in paths:
        parse_args(path, cpu_overrides if "bf16" in path.read_text() else [])


def test_paper_preset_has_162m_parameters():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from grokcopy.training.config import ModelArguments
    from grokcopy.training.modeling import model_config_kwargs

    kwargs = model_config_kwargs(ModelArguments(preset="paper-162m"))
    config = AutoConfig.for_model(kwargs.pop("model_type"), vocab_size=32000, **kwargs)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    assert 161e6 < n_params < 163e6
    assert config.head_dim == 64 and not config.tie_word_embeddings


def test_distributed_configs_load():
    """The accelerate launch configs load as accelerate reads them; the FSDP JSON is a valid fsdp_config."""
    import torch
    from accelerate.commands.config.config_args import load_config_from_file

    ddp = load_config_from_file(str(REPO / "trainer_configs" / "accelerate" / "ddp-8gpu.yaml"))
    fsdp = load_config_from_file(str(REPO / "trainer_configs" / "accelerate" / "fsdp-8gpu.yaml"))
    assert (ddp.distributed_type, ddp.num_processes) == ("MULTI_GPU", 8)
    assert fsdp.distributed_type == "FSDP" and fsdp.fsdp_config["fsdp_version"] == 2
    cpu = [] if torch.cuda.is_available() else ["--bf16", "false", "--tf32", "false", "--optim", "adamw_torch"]
    _, _, args = parse_args(REPO / "trainer_configs" / "paper-162m.yaml",
                            [*cpu, "--fsdp", "full_shard auto_wrap",
                             "--fsdp_config", str(REPO / "trainer_configs" / "fsdp" / "llama-full-shard.json")])
    assert args.fsdp_config["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    assert args.fsdp_config["version"] == 2


def test_log_level_reaches_grokcopys_loggers(corpus_file, tmp_path):
    """`--log_level info` shows grokcopy's info lines (e.g. the Hub's), the default keeps them quiet."""
    out = tmp_path / "run"
    config = write_config_file(tmp_path, tiny_config(corpus_file, out, max_steps=2, copy_stop_exact_match=0.0))
    quiet = run_cli("train", str(config))
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "[grokcopy|INFO]" not in quiet.stderr
    loud = run_cli("train", str(config), "--output_dir", str(tmp_path / "loud"), "--log_level", "info")
    assert loud.returncode == 0 and "[grokcopy|INFO] copy exact match" in loud.stderr  # the stop rule's line


def write_config_file(folder, config):
    path = folder / "config.json"
    path.write_text(json.dumps(config))
    return path


def test_version_help_and_train_help_list_every_field_grouped():
    import subprocess
    import sys

    import grokcopy

    assert run_cli("--version").stdout.strip() == f"grokcopy {grokcopy.__version__}"
    # the top-level help builds the parser without importing torch (the speed of `grokcopy --help`)
    code = "import sys; from grokcopy.cli import build_parser; build_parser().format_help(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    helped = run_cli("train", "--help")
    assert helped.returncode == 0
    text = helped.stdout
    for group in ("copy test:", "induction heads:", "Hub:", "model:", "data:", "training:"):
        assert f"\n{group}\n" in text, group
    for name in ("--learning_rate (default: 5e-05)", "--copy_num_samples (default: 500)", "--preset (default: None)",
                 "--hub_checkpoint_series (default: False)", "--block_size (default: 1024)"):
        assert name in text, name
    assert text.index("--copy_num_samples") < text.index("copy test:") + 2000  # in its group, not in training


def test_null_unsets_what_a_base_config_set(tmp_path):
    """A config's (or a sweep's) `null` sets a field whose default is None back to None, on the command line
    too (`--save_total_limit None`), instead of being dropped with the base's value left in force; on a field
    with a real default it means that default."""
    import yaml

    from grokcopy.experiments.sweep import command, load_sweep
    from grokcopy.training.config import config_to_argv, parse_args

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "run"), "preset": "tiny", "save_total_limit": 7,
                                    "learning_rate": 3e-3}))
    assert parse_args(base)[2].save_total_limit == 7
    assert parse_args(base, ["--save_total_limit", "None"])[2].save_total_limit is None
    assert parse_args({"output_dir": "x", "save_total_limit": None, "learning_rate": None})[2].learning_rate == 5e-5
    assert config_to_argv({"save_total_limit": None, "learning_rate": None}) == ["--save_total_limit", "None"]
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"base": "base.yaml", "output_dir": str(tmp_path / "sweep"),
                                          "fixed": {"save_total_limit": None}, "seeds": [0]}))
    sweep = load_sweep(sweep_file)
    line = command(sweep, sweep.members[0], [])
    assert "--save_total_limit None" in line
    args = line.split()[3:]  # grokcopy train BASE ...
    assert parse_args(base, args)[2].save_total_limit is None
