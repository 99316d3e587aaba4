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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grokcopy.cli_commands import (
    OneLineParser,
    ablate,
    add_series_parser,
    copy_test,
    induction,
    positive_float,
    positive_int,
    series,
)
from grokcopy.copytest.task import SYMBOL_KINDS
from grokcopy.errors import ConfigError, RunWriteError, SeriesError, TrainingInterrupted, main_error, one_line


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
    from grokcopy.run_dir import PUSH_RECORD, SUMMARY

    if not Path(ns.output_dir).is_dir():
        raise ConfigError(f"{ns.output_dir}: not a folder (the output_dir of a run, with its {PUSH_RECORD})")
    record_file = Path(ns.output_dir) / PUSH_RECORD
    if not record_file.is_file() and not ns.hub_model_id:
        raise ConfigError(f"{record_file} not found: not a run with hub_checkpoint_series; give --hub_model_id")
    repo = ns.hub_model_id or json.loads(record_file.read_text())["repo_id"]
    callback = HubCheckpointCallback(repo, private=ns.private or None, timeout=ns.timeout)
    done = callback.push_pending(ns.output_dir, timeout=ns.wait)
    if done and (Path(ns.output_dir) / SUMMARY).is_file():  # a finished run: its final files onto main too
        done = callback.push_final(ns.output_dir, timeout=ns.wait)
    print(f"{repo}: pushed {sorted(callback.pushed)}" + ("" if done else f"; still pending {sorted(callback.pending)}"))
    return 0 if done else 1


def _push_metric(ns) -> int:
    from grokcopy.hub.push import push_metric

    space = push_metric(ns.space_id, private=ns.private or None)
    print(f"pushed: evaluate.load(\"{space}\")")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="grokcopy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from grokcopy import __version__

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
    for name, kind, help_text in (("num-samples", positive_int, "samples (paper: 500)"),
                                  ("num-sequences", positive_int, "sequences per sample (paper: 50; fitted to the "
                                                                  "model's context)"),
                                  ("prefix-length", positive_int, "prefix symbols per sequence (paper: 12)"),
                                  ("suffix-length", positive_int, "suffix symbols to reproduce (paper: 6)"),
                                  ("query-stride", positive_int, "query sequences i = stride, 2 stride, ... (paper: 5)"),
                                  ("symbol-pattern", str, "tokens: only vocabulary entries matching this regex"),
                                  ("separator", str, "after each sequence (paper: a newline; needs a trained token)"),
                                  ("seed", int, "seed of the samples (paper setup: 1234)")):
        copy.add_argument(f"--{name}", f"--{name.replace('-', '_')}", type=kind, help=help_text)
    copy.add_argument("--symbols", choices=SYMBOL_KINDS)
    copy.add_argument("--batch-size", "--batch_size", type=positive_int, default=16)
    copy.add_argument("--json", help="also write the result to this file")
    ind = sub.add_parser("induction", help="induction-head analysis (A, EP, I, prev-token, prefix matching)",
                         description="Induction-head scores per layer x head. The repeated-sequence length s is the "
                                     "run's own (on a grokcopy run) or the paper's 100, shortened to fit the model's "
                                     "context; a longer one is refused.")
    ind.add_argument("model")
    ind.add_argument("--revision", default="main")
    ind.add_argument("--seq-len", "--seq_len", type=positive_int, help="s: random tokens repeated twice")
    ind.add_argument("--batch-size", "--batch_size", type=positive_int, default=8)
    ind.add_argument("--seed", type=int, default=0)
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
                     help="copy-test samples (default: 100, or the run's own number if smaller)")
    abl.add_argument("--batch-size", "--batch_size", type=positive_int, default=16)
    abl.add_argument("--ablations-per-pass", "--ablations_per_pass", type=positive_int,
                     help="ablations scored in one forward pass, batch size x this many rows (default: all of a "
                          "layer's, the layers below it computed once)")
    abl.add_argument("--json", help="write the result here")
    push = sub.add_parser("push", help="push a run's checkpoints that are not on the Hub yet, one branch each")
    push.add_argument("output_dir")
    push.add_argument("--hub_model_id", help="repo (default: the one recorded in OUTPUT_DIR/hub_pushes.json)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--timeout", type=positive_float, default=60.0, help="HTTP timeout of one request (s)")
    push.add_argument("--wait", type=positive_float, default=None, help="give up after this many seconds")
    add_series_parser(sub)
    sweep = sub.add_parser("sweep", allow_abbrev=False,
                           help="run a sweep file's members (trainer_configs/sweeps/); --field value applies to all")
    sweep.add_argument("sweep", help="sweep YAML: base config, grid / members / seeds")
    sweep.add_argument("--only", help="comma-separated member names to run, in this order (default: all, in the file's order)")
    sweep.add_argument("--output_dir", help="the sweep's folder (default: its output_dir); members go below it")
    sweep.add_argument("--print-commands", action="store_true", help="print one train command per member instead")
    sweep.add_argument("--launcher", choices=["torchrun", "accelerate"], help="with --print-commands")
    sweep.add_argument("--nproc", type=positive_int, help="processes per member (torchrun --nproc_per_node)")
    sweep.add_argument("--accelerate-config", help="accelerate launch --config_file")
    sweep.add_argument("--dry-run", action="store_true", help="validate every member and print the plan only")
    sweep.add_argument("--parallel", type=int, default=1, metavar="K",
                       help="train K members at once, each in its own process with cores/K threads")
    sweep.add_argument("--archive", metavar="DIR", help="copy each finished member's histories (no weights) to "
                       "DIR/<member>, e.g. docs/reproduction/<sweep>")
    report = sub.add_parser("report", help="compare runs or sweeps: figures, grokking statistics, the paper's claims")
    report.add_argument("runs", nargs="+", help="run folders or sweep folders (their members are used)")
    report.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    report.add_argument("--jump-threshold", type=float, default=0.5,
                        help="copy exact match that defines the jump (first interpolated step reaching it)")
    report.add_argument("--loss-target", type=float, help="training loss (nats) every run's steps and tokens are "
                        "measured to (default: the highest of the runs' lowest smoothed losses + 5%% of the fall)")
    report.add_argument("--loss-window", type=positive_int, default=5, help="logged losses in the moving average")
    report.add_argument("--held-out-from", type=int, metavar="SEED", help="seeds >= SEED were never used to choose the "
                        "recipe: report their rate of runs that grok apart from the others")
    report.add_argument("--threshold", type=float, default=0.3, help="induction score I of a formed head")
    metric = sub.add_parser("push-metric", help="upload metrics/copy_accuracy as a Hub Space")
    metric.add_argument("space_id", help="NAMESPACE/copy_accuracy")
    metric.add_argument("--private", action="store_true")
    return parser


class FieldsHelp(argparse.Action):
    """`grokcopy train --help`: every field a config accepts, grouped, with its help text and default."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from grokcopy.training.config import field_groups

        print(parser.format_usage().rstrip() + " [--field value ...]\n")
        print(parser.description + "\n")
        for title, rows in field_groups().items():
            print(f"{title}:")
            for name, default, text in rows:
                print(f"  --{name} (default: {default})" + (f"\n      {text}" if text else ""))
            print()
        parser.exit()


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
            from grokcopy.experiments.sweep_runner import run_sweep

            return run_sweep(ns.sweep, rest, only=ns.only, output_dir=ns.output_dir, print_commands=ns.print_commands,
                             dry_run=ns.dry_run, launcher=ns.launcher, nproc=ns.nproc,
                             accelerate_config=ns.accelerate_config, parallel=ns.parallel, archive=ns.archive)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if ns.command == "report":
            from grokcopy.experiments.report import run_report

            return run_report(ns)
        if ns.command == "series":
            return series(ns)
        commands = {"copy-test": copy_test, "induction": induction, "ablate": ablate, "push": _push, "push-metric": _push_metric}
        try:
            return commands[ns.command](ns)
        except (OSError, ValueError) as err:  # a missing model, revision or file, an unknown architecture,
            main_error(one_line(err))          # a copy test this tokenizer cannot make: say which, in one line
    except (ConfigError, SeriesError) as err:
        main_error(str(err))
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
