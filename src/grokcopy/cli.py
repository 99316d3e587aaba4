"""The `grokcopy` command line.

    grokcopy train CONFIG [--any_field value ...]   pretrain with a YAML/JSON config
    grokcopy demo [--any_field value ...]           the 2-core CPU demo (trainer_configs/demo.yaml)
    grokcopy copy-test MODEL [--revision R]         the paper's copy test on a saved or Hub model
    grokcopy induction MODEL [--revision R]         induction-head scores per layer x head
    grokcopy ablate MODEL [--revision R]            the copy test with each head / layer's attention zero-ablated
    grokcopy series REPO --out DIR                  copy test + induction analysis of a checkpoint series
                                                    (torchrun --nproc_per_node N -m grokcopy.cli series ...: split)
    grokcopy sweep SWEEP.yaml [--field value ...]   train a sweep's members one after another (or print commands)
    grokcopy report RUN_DIR... --out DIR            figures, grokking statistics and the paper's claims
    grokcopy push OUTPUT_DIR                        push checkpoints a run could not push (Hub was down)
    grokcopy push-metric NAMESPACE/copy_accuracy    share the metric as a Hub Space for evaluate.load
    grokcopy corpus OUT_DIR                         the Python standard library as a real-text corpus
    grokcopy forecast RUN_DIR [--at-step K]         will the run copy by induction, headless or not, and when
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from grokcopy.cli_commands import (
    OneLineParser,
    ablate,
    add_settings,
    forecast,
    copy_test,
    given,
    induction,
    layer_sets,
    positive_float,
    positive_int,
    series,
    show_default,
)
from grokcopy.errors import (
    ConfigError,
    RunWriteError,
    SeriesError,
    TrainingInterrupted,
    main_error,
    one_line,
)


def _train(config, overrides) -> int:
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    model_args, data_args, training_args = parse_args(config, overrides)
    summary = run_training(model_args, data_args, training_args)
    if training_args.process_index == 0:  # one summary, not one per process
        print(json.dumps(summary, indent=2))
    return 0


def _push(ns) -> int:
    from grokcopy.hub.push import HubCheckpointCallback
    from grokcopy.run_dir import PUSH_RECORD, RunFolder

    run = RunFolder(ns.output_dir)
    if not run.root.is_dir():
        raise ConfigError(f"{ns.output_dir}: not a folder (the output_dir of a run, with its {PUSH_RECORD})")
    if not run.hub_pushes.is_file() and not ns.hub_model_id:
        raise ConfigError(f"{run.hub_pushes} not found: not a run with hub_checkpoint_series; give --hub_model_id")
    repo = ns.hub_model_id or run.read_hub_pushes().get("repo_id")
    if not repo:
        raise ConfigError(f"{run.hub_pushes} names no repo; give --hub_model_id")
    callback = HubCheckpointCallback(repo, private=ns.private or None, timeout=ns.timeout)
    done = callback.push_pending(ns.output_dir, timeout=ns.wait)
    if done and run.summary.is_file():  # a finished run: its final files onto main too
        done = callback.push_final(ns.output_dir, timeout=ns.wait)
    print(f"{repo}: pushed {sorted(callback.pushed)}" + ("" if done else f"; still pending {sorted(callback.pending)}"))
    callback.close()  # what did not land stays unpushed in the record; exiting does not wait for it
    return 0 if done else 1


def _corpus(ns) -> int:
    from grokcopy.training.text_corpus import TRAIN_FILE, build_stdlib_corpus

    manifest = build_stdlib_corpus(ns.out_dir, ns.document_chars, ns.seed)
    print(f"{manifest['documents']:,} documents of {manifest['document_chars']} characters from "
          f"{manifest['files']:,} files (Python {manifest['python']}) -> {Path(ns.out_dir) / TRAIN_FILE}")
    return 0


def _push_metric(ns) -> int:
    from grokcopy.hub.push import push_metric

    space = push_metric(ns.space_id, private=ns.private or None)
    print(f"pushed: evaluate.load(\"{space}\")")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Every subcommand's arguments. Settings come from the library's dataclasses (add_settings): their
    defaults and help are defined there once. Builds without importing torch (the speed of `--help`)."""
    from grokcopy import __version__
    from grokcopy.analysis.induction_config import InductionConfig
    from grokcopy.analysis.saved_model import ABLATION_SAMPLES
    from grokcopy.copytest.task import COPY_BATCH_SIZE, CopyTaskConfig
    from grokcopy.experiments.options import ReportConfig, SweepOptions

    def the_runs_own(f):
        return f"the run's own, else {show_default(f.default)}"

    parser = OneLineParser(prog="grokcopy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"grokcopy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="pretrain from a config; --field value overrides any field", add_help=False,
                           description="Pretrain with a YAML/JSON config; any field below can be overridden as "
                                       "--field value (or --field-value).")
    train.add_argument("config", help="YAML or JSON file of TrainingArguments + grokcopy fields")
    train.add_argument("-h", "--help", action=FieldsHelp, help="list every field, grouped, with its help and default")
    demo = sub.add_parser("demo", help="the CPU demo: watch a tiny LLaMA grok to copy (~10 min on 2 cores)")
    demo.add_argument("--output_dir", default="runs/demo")
    copy = sub.add_parser("copy-test", help="run the paper's copy test on a model (folder or Hub id)",
                          description="The paper's copy test. On a grokcopy run's folder (or one of its checkpoints) "
                                      "it uses the run's own copy-test settings unless told otherwise.")
    copy.add_argument("model")
    copy.add_argument("--revision", default="main")
    add_settings(copy, CopyTaskConfig, default_text=the_runs_own)
    copy.add_argument("--batch-size", "--batch_size", type=positive_int, default=COPY_BATCH_SIZE,
                      help=f"samples per forward pass (default: {COPY_BATCH_SIZE})")
    copy.add_argument("--json", help="also write the result to this file")
    ind = sub.add_parser("induction", help="induction-head analysis (A, EP, I, prev-token, prefix matching)",
                         description="Induction-head scores per layer x head. The repeated-sequence length s is the "
                                     "run's own (on a grokcopy run) or the paper's 100, shortened to fit the model's "
                                     "context; a longer one is refused.")
    ind.add_argument("model")
    ind.add_argument("--revision", default="main")
    add_settings(ind, InductionConfig, default_text=the_runs_own)
    ind.add_argument("--seed", type=int, default=0, help="seed of the random tokens (default: 0)")
    ind.add_argument("--no-bos", "--no_bos", action="store_true", help="no leading BOS token")
    ind.add_argument("--icl-tokens", "--icl_tokens", help="a .pt LongTensor [batch, >=500] of held-out tokens for the ICL score")
    ind.add_argument("--json", help="write the scores here")
    ind.add_argument("--plot", help="write the layer x head heatmap of I here (.png)")
    abl = sub.add_parser("ablate", help="copy test with each attention head (and each layer) zero-ablated",
                         description="Head-level causal scores: the copy test (the run's own, as copy-test runs it) "
                                     "with each head's slice of the attention output projection's input set to "
                                     "zero, one head at a time, then each layer's whole attention.")
    abl.add_argument("model")
    abl.add_argument("--revision", default="main")
    abl.add_argument("--num-samples", "--num_samples", type=positive_int,
                     help=f"copy-test samples (default: {ABLATION_SAMPLES}, or the run's own number if smaller)")
    abl.add_argument("--batch-size", "--batch_size", type=positive_int, default=COPY_BATCH_SIZE,
                     help=f"samples per forward pass (default: {COPY_BATCH_SIZE})")
    abl.add_argument("--ablations-per-pass", "--ablations_per_pass", type=positive_int,
                     help="ablations scored in one forward pass, batch size x this many rows (default: all of a "
                          "layer's, the layers below it computed once)")
    abl.add_argument("--induction-heads-only", "--induction_heads_only", action="store_true",
                     help="on a run folder: only the run's induction heads (I >= 0.3 at its last analysis) ablated "
                          "together, no per-head grid (two copy tests instead of one per head)")
    abl.add_argument("--layers-together", "--layers_together", type=layer_sets,
                     help='sets of layers whose whole attention is ablated at once, e.g. "1+2,1+3": a backup that '
                          "takes over only when one layer is gone shows only in a joint ablation")
    abl.add_argument("--over-checkpoints", "--over_checkpoints", action="store_true",
                     help="MODEL is a run folder: ablate each of its complete checkpoints (oldest first) and write one "
                          "JSON line per checkpoint to --json (the ablation over training, from what was kept)")
    abl.add_argument("--every", type=positive_int, help="with --over-checkpoints: only checkpoints at multiples of this")
    abl.add_argument("--json", help="write the result here")
    push = sub.add_parser("push", help="push a run's checkpoints that are not on the Hub yet, one branch each")
    push.add_argument("output_dir")
    push.add_argument("--hub_model_id", help="repo (default: the one recorded in OUTPUT_DIR/hub_pushes.json)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--timeout", type=positive_float, default=60.0, help="HTTP timeout of one request (s)")
    push.add_argument("--wait", type=positive_float, default=None, help="give up after this many seconds")
    _series_parser(sub, CopyTaskConfig, InductionConfig, COPY_BATCH_SIZE)
    sweep = sub.add_parser("sweep", allow_abbrev=False,
                           help="run a sweep file's members (trainer_configs/sweeps/); --field value applies to all")
    sweep.add_argument("sweep", help="sweep YAML: base config, grid / members / seeds")
    sweep.set_defaults(parameter_flags=add_settings(sweep, SweepOptions))
    report = sub.add_parser("report", help="compare runs or sweeps: figures, grokking statistics, the paper's claims")
    report.add_argument("runs", nargs="+", help="run folders or sweep folders (their members are used)")
    report.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    report.set_defaults(parameter_flags={"out": "--out", **add_settings(report, ReportConfig)})
    corpus = sub.add_parser("corpus", help="build a real-text corpus that needs no download: the Python standard "
                                           "library's source as fixed-size documents (train.jsonl + manifest.json)")
    corpus.add_argument("out_dir", help="folder for train.jsonl and manifest.json")
    corpus.add_argument("--document-chars", type=int, default=128, help="characters per document (default 128)")
    corpus.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    fc = sub.add_parser("forecast", help="forecast whether and when a run will copy by induction (from its folder)",
                        description="From a run folder's records up to --at-step only: P(copies by induction by the "
                                    "horizon), P(headless), P(no jump), and the jump step with an 80%% interval. "
                                    "--evaluate scores forecasts on experiment folders; --build-reference makes a "
                                    "reference set from them.")
    fc.add_argument("runs", nargs="+", help="a run folder; with --evaluate or --build-reference, experiment folders")
    fc.add_argument("--at-step", "--at_step", type=positive_int, help="forecast from records up to this step "
                                                                         "(default: the run's last record)")
    fc.add_argument("--horizon", type=positive_int, help="the step the probabilities refer to (default: the run's "
                                                         "max_steps)")
    fc.add_argument("--json", help="also write the forecast here")
    fc.add_argument("--evaluate", action="store_true", help="score forecasts at 25/50/75%% of the way to each jump "
                                                            "of the runs under the folders; writes --out")
    fc.add_argument("--build-reference", "--build_reference", action="store_true",
                    help="write a reference set (summaries of the runs under the folders) to --out")
    fc.add_argument("--reference", help="a reference set (JSON) to fit on instead of the one grokcopy ships")
    fc.add_argument("--out", help="folder for --evaluate, file for --build-reference")
    metric = sub.add_parser("push-metric", help="upload metrics/copy_accuracy as a Hub Space")
    metric.add_argument("space_id", help="NAMESPACE/copy_accuracy")
    metric.add_argument("--private", action="store_true")
    return parser


def _series_parser(subparsers, copy_config, induction_config, copy_batch_size: int) -> None:
    """`grokcopy series REPO [--revisions A,B | --all | --every K] --out DIR [...]`."""
    parser = subparsers.add_parser(
        "series", allow_abbrev=False, help="copy test + induction heads across a Hub repo's checkpoint branches",
        description="Run the copy test and the induction analysis on every checkpoint branch of a Hub repo "
                    "(Pythia stepN, OLMo stepN-tokensXB, Trainer checkpoint-N); writes series.json, series.csv, "
                    "series_copy.png and series_induction.png to --out and resumes there. The copy test's and the "
                    "induction analysis's settings and defaults are those of a training run (copy_*, induction_*).")
    parser.add_argument("repo", help="Hub model repo id, e.g. EleutherAI/pythia-160m")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--revisions", help="comma-separated branches / tags to analyse (any naming)")
    which.add_argument("--revisions-file", metavar="FILE", help="revisions published outside the refs: one per "
                       "line, or a CSV with a 'revision' column (e.g. OLMo's revisions.txt)")
    which.add_argument("--all", action="store_true", help="every checkpoint branch and tag (the default)")
    which.add_argument("--every", type=positive_int, metavar="K", help="every K-th checkpoint branch (and the last)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes there)")
    add_settings(parser, copy_config, aliases={"num_samples": ["--copy-samples"]})  # the copy test, as copy-test's
    add_settings(parser, induction_config, "induction_")
    parser.add_argument("--tokens-per-step", type=positive_int, help="tokens per optimizer step where the name and "
                        "trainer_state.json give none (default: 2097152 for EleutherAI/pythia*)")
    parser.add_argument("--batch-size", type=positive_int, default=copy_batch_size,
                        help=f"copy-test samples per forward pass (default: {copy_batch_size})")
    parser.add_argument("--device", help="torch device for the analysis (default: cuda if available, each process "
                        "its own under torchrun, else cpu)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"),
                        help="weights' dtype for the analysis (default: bfloat16 on a GPU, else float32)")
    parser.add_argument("--include-suspect", action="store_true", help="keep suspect revisions (weights of the "
                        "final model under an earlier name, ...) on the curves and in the landmarks")
    parser.add_argument("--keep-weights", action="store_true", help="keep downloaded files in DIR/weights")
    parser.add_argument("--base-model", help="base model of a PEFT adapter series (default: each adapter's own "
                        "base_model_name_or_path)")
    parser.add_argument("--base-revision", default="main", help="revision of --base-model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def flag_wording(message: str, flags: dict[str, str]) -> str:
    """A library error names its parameters (`out: ...`, `launcher, nproc and accelerate_config: only with
    print_commands ...`); on the command line they are flags: `--out: ...`."""
    head, colon, rest = message.partition(": ")
    if not colon or not all(name in flags for name in re.split(r", | and | or ", head)):
        return message
    head = re.sub(r"[\w-]+", lambda m: flags.get(m[0], m[0]), head)
    for name, flag in flags.items():  # a parameter named further on (only names that cannot be English words)
        if "_" in name:
            rest = re.sub(rf"(?<![\w-]){name}(?![\w-])", flag, rest)
    return f"{head}: {rest}"


class FieldsHelp(argparse.Action):
    """`grokcopy train --help`: every field a config accepts, grouped, with its help text and default."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(parser.format_usage().rstrip() + " [--field value ...]\n")
        print(parser.description + "\n")
        for title, rows in field_groups().items():
            print(f"{title}:")
            for name, default, text in rows:
                print(f"  --{name} (default: {show_default(default)})" + (f"\n      {text}" if text else ""))
            print()
        parser.exit()


def field_groups() -> dict[str, list[tuple[str, object, str]]]:
    """Every config field as (name, default, help), grouped the way a user thinks of them: the copy test,
    induction heads, the Hub, the model, the data, then the rest of TrainingArguments."""
    from dataclasses import MISSING, fields

    from grokcopy.training.config import ARGUMENT_CLASSES, DataArguments, ModelArguments

    groups: dict[str, list] = {name: [] for name in ("copy test", "induction heads", "Hub", "model", "data", "training")}
    for cls in ARGUMENT_CLASSES:
        for f in fields(cls):
            if not f.init or f.name.startswith("_"):
                continue
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else "required")
            row = (f.name, default, " ".join(str(f.metadata.get("help", "")).split()))
            if cls is ModelArguments:
                groups["model"].append(row)
            elif cls is DataArguments:
                groups["data"].append(row)
            elif f.name.startswith(("copy_", "copyable_")):
                groups["copy test"].append(row)
            elif f.name.startswith("induction_"):
                groups["induction heads"].append(row)
            elif f.name.startswith("hub_") or f.name in ("push_to_hub", "hub_checkpoint_series"):
                groups["Hub"].append(row)
            else:
                groups["training"].append(row)
    return groups


def _configure_logging() -> None:
    """The `grokcopy` loggers print like transformers' (to stderr, level from log_level in a run)."""
    import logging

    root = logging.getLogger("grokcopy")
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("[grokcopy|%(levelname)s] %(message)s"))
        root.addHandler(handler)
        root.propagate = False


def main(argv: list[str] | None = None) -> int:
    _configure_logging()
    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    try:
        if ns.command == "train":
            return _train(ns.config, rest)
        if ns.command == "demo":
            from grokcopy.experiments.demo import run_demo

            return run_demo(ns.output_dir, rest)
        if ns.command == "sweep":
            from grokcopy.experiments.options import SweepOptions
            from grokcopy.experiments.sweep_runner import run_sweep

            return run_sweep(ns.sweep, rest, SweepOptions(**given(ns, SweepOptions)))
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if ns.command == "report":
            from grokcopy.experiments.options import ReportConfig
            from grokcopy.experiments.report import run_report

            return run_report(ReportConfig(**given(ns, ReportConfig)))
        if ns.command == "series":
            return series(ns)
        commands = {"copy-test": copy_test, "induction": induction, "ablate": ablate, "push": _push,
                    "push-metric": _push_metric, "corpus": _corpus, "forecast": forecast}
        try:
            return commands[ns.command](ns)
        except (OSError, ValueError) as err:  # a missing model, revision or file, an unknown architecture,
            main_error(one_line(err))          # a copy test this tokenizer cannot make: say which, in one line
    except (ConfigError, SeriesError) as err:
        main_error(flag_wording(str(err), getattr(ns, "parameter_flags", {})))
    except KeyboardInterrupt as err:
        code = err.exit_code if isinstance(err, TrainingInterrupted) else 130
        if ns.command == "sweep":
            main_error(f"{err or 'interrupted'}; run the same sweep command again to go on (complete members are "
                       "skipped, a member with a checkpoint resumes from it)", code=code)
        if isinstance(err, TrainingInterrupted):
            main_error(str(err), code=code)
        main_error("interrupted", code=130)
    except RuntimeError as err:
        from grokcopy.training.trainer import CheckpointSaveError, TrainingDivergedError

        if not isinstance(err, (CheckpointSaveError, TrainingDivergedError, RunWriteError)):
            raise
        main_error(str(err), code=1)


if __name__ == "__main__":
    sys.exit(main())
