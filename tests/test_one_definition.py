"""Each analysis's settings are defined once (CopyTaskConfig, InductionConfig) and every entry point derives
from them; the CLI is a thin layer over the library, which takes no argparse objects and names no flags."""

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import grokcopy
from grokcopy.analysis.induction_config import InductionConfig
from grokcopy.cli import flag_wording, main
from grokcopy.cli_commands import show_default
from grokcopy.copytest.task import COPY_BATCH_SIZE, CopyTaskConfig
from grokcopy.errors import ConfigError


def help_text(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--help"])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def train_default(text: str, field: str) -> str:
    match = re.search(rf"^  --{field} \(default: (.*)\)$", text, re.M)
    assert match, field
    return match.group(1)


def flag_default(text: str, flag: str) -> str:
    """The default an argparse --help shows for `flag` (its help wrapped over lines, as argparse does)."""
    options = " ".join(text[text.index("options:"):].split())
    start = re.search(rf"(?:^| ){flag}[ ,]", options)
    assert start, flag
    match = re.match(r".*?\(default: (.*?)\)(?: --|$)", options[start.end():])
    assert match, flag
    return match.group(1)


def test_series_and_train_show_the_same_copy_test_and_induction_defaults(capsys):
    train, series = help_text(capsys, "train", "config.yaml"), help_text(capsys, "series")
    for f in dataclasses.fields(CopyTaskConfig):
        flag = f"--{f.name.replace('_', '-')}"
        shown = train_default(train, f"copy_{f.name}")
        assert flag_default(series, flag) == shown == show_default(f.default), f.name
    for f in dataclasses.fields(InductionConfig):
        shown = train_default(train, f"induction_{f.name}")
        assert flag_default(series, f"--induction-{f.name.replace('_', '-')}") == shown == show_default(f.default)
    assert train_default(train, "copy_eval_batch_size") == flag_default(series, "--batch-size") == str(COPY_BATCH_SIZE)
    assert flag_default(series, "--num-samples") == "500"  # one number of samples everywhere
    # copy-test and induction show the same settings, as "the run's own, else" the default
    copy = help_text(capsys, "copy-test")
    for f in dataclasses.fields(CopyTaskConfig):
        assert flag_default(copy, f"--{f.name.replace('_', '-')}") == f"the run's own, else {show_default(f.default)}"
    assert flag_default(help_text(capsys, "induction"), "--seq-len") == "the run's own, else None"


def test_the_training_arguments_and_the_callback_carry_the_configs_fields():
    from grokcopy import CopyEvalCallback
    from grokcopy.training.config import CopyTrainingArguments

    args = {f.name: f for f in dataclasses.fields(CopyTrainingArguments)}
    callback = {f.name: f for f in dataclasses.fields(CopyEvalCallback)}
    for config, prefix in ((CopyTaskConfig, "copy_"), (InductionConfig, "induction_")):
        for f in dataclasses.fields(config):
            assert args[prefix + f.name].default == f.default
            assert args[prefix + f.name].metadata["help"] == f.metadata["help"]
    for f in dataclasses.fields(CopyTaskConfig):
        assert callback[f.name].default == f.default
    trained = CopyTrainingArguments(output_dir="unused", copy_num_samples=7, copy_symbols="hex", induction_seq_len=9)
    assert CopyTaskConfig.from_training_args(trained) == CopyTaskConfig(num_samples=7, symbols="hex")
    assert InductionConfig.from_training_args(trained) == InductionConfig(seq_len=9)
    assert CopyEvalCallback(num_samples=3).task_config() == CopyTaskConfig(num_samples=3)
    assert CopyTaskConfig(seed=5).settings("copy_")["copy_seed"] == 5
    with pytest.raises(ConfigError, match=r"^copy_query_stride: must be >= 1, got 0$"):
        CopyTrainingArguments(output_dir="unused", copy_query_stride=0)
    with pytest.raises(ConfigError, match=r"^induction_batch_size: must be >= 1, got 0$"):
        CopyTrainingArguments(output_dir="unused", induction_batch_size=0)


def test_library_errors_name_parameters_and_the_cli_words_them_as_flags():
    from grokcopy.experiments.options import SweepOptions

    with pytest.raises(ConfigError, match=r"^parallel: ") as err:
        SweepOptions(parallel=0)
    flags = {"parallel": "--parallel", "launcher": "--launcher", "nproc": "--nproc",
             "accelerate_config": "--accelerate-config", "print_commands": "--print-commands"}
    assert flag_wording(str(err.value), flags).startswith("--parallel: ")
    with pytest.raises(ConfigError) as err:
        SweepOptions(nproc=2)
    assert flag_wording(str(err.value), flags).startswith("--launcher, --nproc and --accelerate-config: these go "
                                                          "with --print-commands")
    assert flag_wording("out: x is a file, not a folder", {"out": "--out"}) == "--out: x is a file, not a folder"
    assert flag_wording("no run in it (left out: x)", {"out": "--out"}) == "no run in it (left out: x)"


def test_no_argparse_namespace_in_the_library():
    """Only the command line (cli.py, cli_commands.py) knows argparse: the library takes typed arguments. Code
    is read, not prose: an import of argparse, a `Namespace` (a name, an attribute or in an annotation), or a
    parameter named `ns` (the CLI's name for a parsed Namespace) anywhere else is listed as file:line."""
    package = Path(grokcopy.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.name in ("cli.py", "cli_commands.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            hit = (isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names)
                   or isinstance(node, ast.ImportFrom) and node.module == "argparse"
                   or isinstance(node, ast.Name) and node.id == "Namespace"
                   or isinstance(node, ast.Attribute) and node.attr == "Namespace"
                   or isinstance(node, ast.arg) and (node.arg == "ns" or "Namespace" in ast.unparse(node.annotation)
                                                     if node.annotation else node.arg == "ns"))
            if hit:
                found.append(f"{path.relative_to(package.parent)}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "argparse in the library:\n" + "\n".join(found)
