"""The `grokcopy` command line.

    grokcopy train CONFIG [--any_field value ...]   pretrain with a YAML/JSON config
    grokcopy demo [--any_field value ...]           the 2-core CPU demo (trainer_configs/demo.yaml)
    grokcopy copy-test MODEL [--revision R]         the paper's copy test on a saved or Hub model
    grokcopy induction MODEL [--revision R]         induction-head scores per layer x head
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

from grokcopy.copytest.task import SYMBOL_KINDS
from grokcopy.errors import ConfigError, SeriesError, UnsupportedArchitectureError, main_error, one_line


def _train(config, overrides) -> int:
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    model_args, data_args, training_args = parse_args(config, overrides)
    summary = run_training(model_args, data_args, training_args)
    if training_args.process_index == 0:  # one summary, not one per process
        print(json.dumps(summary, indent=2))
    return 0


def _copy_test(ns) -> int:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
    from grokcopy.devices import default_device

    tokenizer = AutoTokenizer.from_pretrained(ns.model, revision=ns.revision)
    model = AutoModelForCausalLM.from_pretrained(ns.model, revision=ns.revision)
    model.to(default_device())
    config = CopyTaskConfig(num_samples=ns.num_samples, num_sequences=ns.num_sequences, symbols=ns.symbols,
                            seed=ns.seed)
    task = build_copy_task(tokenizer, config, max_length=model_context_length(model))
    if task.note:
        print(task.note, file=sys.stderr)
    result = score_copy_task(model, task, batch_size=ns.batch_size, progress=True)
    text = json.dumps(result, indent=2)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    print(text)
    return 0


def _induction(ns) -> int:
    from transformers import AutoModelForCausalLM

    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.analysis.plots import plot_induction_heatmap
    from grokcopy.devices import default_device

    model = AutoModelForCausalLM.from_pretrained(ns.model, revision=ns.revision)
    model.to(default_device())
    icl = None
    if ns.icl_tokens:
        import torch

        icl = torch.load(ns.icl_tokens) if ns.icl_tokens.endswith(".pt") else None
    scores = analyze_induction(model, seq_len=ns.seq_len, batch_size=ns.batch_size, seed=ns.seed,
                               with_bos=not ns.no_bos, icl_input_ids=icl)
    record = {"model": ns.model, "revision": ns.revision, **scores.to_dict()}
    text = json.dumps(record, indent=1)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    if ns.plot:
        plot_induction_heatmap(record, ns.plot)
    best = [max(row) for row in record["induction"]]
    print("\n".join(f"layer {k}: max I = {v:.3f} (head {record['induction'][k].index(v)})" for k, v in enumerate(best)))
    if not ns.json:
        print(text)
    return 0


def _push(ns) -> int:
    from grokcopy.hub.push import HubCheckpointCallback
    from grokcopy.run_dir import PUSH_RECORD, SUMMARY

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


def _summary_line(record: dict) -> str:
    head = f"{record['revision']}: step {record.get('step')}"
    if record.get("tokens") is not None:
        head += f", {record['tokens']:,} tokens"
    suspect = f" [SUSPECT: {record['suspect']}]" if record.get("suspect") else ""
    if record.get("duplicate_of"):
        return f"{head}: duplicate of {record['duplicate_of']} (not analysed){suspect}"
    if record.get("error"):
        return f"{head}: FAILED: {record['error']}"
    parts = []
    if record.get("exact_match") is not None:
        parts.append(f"copy exact {record['exact_match']:.3f}, token acc {record['token_accuracy']:.3f}")
    else:
        parts.append(f"copy test failed: {record.get('copy_error')}")
    if record.get("induction_max"):
        parts.append("max I per layer " + " ".join(f"{v:.2f}" for v in record["induction_max"]))
    else:
        parts.append(f"induction: {record.get('induction_error')}")
    if record.get("discontinuity"):
        parts.append("DISCONTINUITY: " + "; ".join(record["discontinuity"]))
    return f"{head}: " + "; ".join(parts) + suspect


def _series(ns) -> int:
    """The `series` subcommand: errors as one `grokcopy: error: ...` line and exit status 2."""
    from grokcopy.hub.revisions import read_revisions_file
    from grokcopy.hub.series import OUTPUTS, analyze_series
    from grokcopy.hub.workers import launch_process

    try:
        revisions = read_revisions_file(ns.revisions_file) if ns.revisions_file else ns.revisions
        records = analyze_series(
            ns.repo, revisions=revisions, every=ns.every, out_dir=ns.out, copy_samples=ns.copy_samples,
            symbols=ns.symbols, seed=ns.seed, keep_weights=ns.keep_weights, tokens_per_step=ns.tokens_per_step,
            induction_seq_len=ns.induction_seq_len, batch_size=ns.batch_size, device=ns.device, dtype=ns.dtype,
            include_suspect=ns.include_suspect, progress=not ns.no_progress, base_model=ns.base_model,
            base_revision=ns.base_revision)
    except SeriesError as err:
        main_error(str(err))
    if launch_process()[0] != 0:  # under torchrun the main process reports the merged series
        return 0
    for record in records:
        print(_summary_line(record))
    suspects = [r["revision"] for r in records if r.get("suspect")]
    jumps = [r["revision"] for r in records if r.get("discontinuity")]
    print(f"{len(records)} revisions: {sum(1 for r in records if r.get('duplicate_of'))} duplicates, "
          f"{len(suspects)} suspect ({', '.join(suspects) or 'none'}; "
          f"{'kept on' if ns.include_suspect else 'left out of'} the curves), "
          f"{len(jumps)} with a discontinuity ({', '.join(jumps) or 'none'})")
    out = Path(ns.out)
    written = [out / name for name in OUTPUTS if (out / name).is_file()]
    print("wrote " + ", ".join(str(p) for p in written))
    failed = [r["revision"] for r in records if r.get("error")]
    if failed:
        print(f"grokcopy: error: {len(failed)} revision(s) could not be analysed ({', '.join(failed)}); "
              "the others are recorded; rerun the same command to retry them", file=sys.stderr)
        return 1
    return 0


def _add_series_parser(subparsers) -> None:
    """`grokcopy series REPO [--revisions A,B | --all | --every K] --out DIR [...]` on an argparse subparsers."""
    parser = subparsers.add_parser(
        "series", help="copy test + induction heads across a Hub repo's checkpoint branches",
        description="Run the copy test and the induction analysis on every checkpoint branch of a Hub repo "
                    "(Pythia stepN, OLMo stepN-tokensXB, Trainer checkpoint-N); writes series.json, series.csv, "
                    "series_copy.png and series_induction.png to --out and resumes there.")
    parser.add_argument("repo", help="Hub model repo id, e.g. EleutherAI/pythia-160m")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--revisions", help="comma-separated branches / tags to analyse (any naming)")
    which.add_argument("--revisions-file", metavar="FILE", help="revisions published outside the refs: one per "
                       "line, or a CSV with a 'revision' column (e.g. OLMo's revisions.txt)")
    which.add_argument("--all", action="store_true", help="every checkpoint branch and tag (the default)")
    which.add_argument("--every", type=int, metavar="K", help="every K-th checkpoint branch (and the last)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes there)")
    parser.add_argument("--copy-samples", type=int, default=100, help="copy-test samples per revision")
    parser.add_argument("--symbols", choices=SYMBOL_KINDS, default="tokens", help="copy-test symbols")
    parser.add_argument("--seed", type=int, default=1234, help="copy-test seed")
    parser.add_argument("--tokens-per-step", type=int, help="tokens per optimizer step where the name and "
                        "trainer_state.json give none (default: 2097152 for EleutherAI/pythia*)")
    parser.add_argument("--induction-seq-len", type=int, default=100, help="random tokens repeated twice")
    parser.add_argument("--batch-size", type=int, default=16, help="copy-test batch size")
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokcopy", description=__doc__,
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
    copy = sub.add_parser("copy-test", help="run the paper's copy test on a model (folder or Hub id)")
    copy.add_argument("model")
    copy.add_argument("--revision", default="main")
    copy.add_argument("--num_samples", type=int, default=500)
    copy.add_argument("--num_sequences", type=int, default=50)
    copy.add_argument("--symbols", choices=SYMBOL_KINDS, default="tokens")
    copy.add_argument("--seed", type=int, default=1234)
    copy.add_argument("--batch_size", type=int, default=16)
    copy.add_argument("--json", help="also write the result to this file")
    ind = sub.add_parser("induction", help="induction-head analysis (A, EP, I, prev-token, prefix matching)")
    ind.add_argument("model")
    ind.add_argument("--revision", default="main")
    ind.add_argument("--seq_len", type=int, default=100, help="s: random tokens repeated twice")
    ind.add_argument("--batch_size", type=int, default=8)
    ind.add_argument("--seed", type=int, default=0)
    ind.add_argument("--no_bos", action="store_true", help="no leading BOS token")
    ind.add_argument("--icl_tokens", help="a .pt LongTensor [batch, >=500] of held-out tokens for the ICL score")
    ind.add_argument("--json", help="write the scores here")
    ind.add_argument("--plot", help="write the layer x head heatmap of I here (.png)")
    push = sub.add_parser("push", help="push a run's checkpoints that are not on the Hub yet, one branch each")
    push.add_argument("output_dir")
    push.add_argument("--hub_model_id", help="repo (default: the one recorded in OUTPUT_DIR/hub_pushes.json)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--timeout", type=float, default=60.0, help="HTTP timeout of one request (s)")
    push.add_argument("--wait", type=float, default=None, help="give up after this many seconds")
    _add_series_parser(sub)
    sweep = sub.add_parser("sweep", allow_abbrev=False,
                           help="run a sweep file's members (trainer_configs/sweeps/); --field value applies to all")
    sweep.add_argument("sweep", help="sweep YAML: base config, grid / members / seeds")
    sweep.add_argument("--only", help="comma-separated member names to run (default: all)")
    sweep.add_argument("--output_dir", help="the sweep's folder (default: its output_dir); members go below it")
    sweep.add_argument("--print-commands", action="store_true", help="print one train command per member instead")
    sweep.add_argument("--launcher", choices=["torchrun", "accelerate"], help="with --print-commands")
    sweep.add_argument("--nproc", type=int, help="processes per member (torchrun --nproc_per_node)")
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
    report.add_argument("--loss-window", type=int, default=5, help="logged losses in the moving average")
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
            return _series(ns)
        commands = {"copy-test": _copy_test, "induction": _induction, "push": _push, "push-metric": _push_metric}
        try:
            return commands[ns.command](ns)
        except OSError as err:  # a missing model, revision or file: say which, in one line
            main_error(one_line(err))
        except UnsupportedArchitectureError as err:
            main_error(str(err))
    except (ConfigError, SeriesError) as err:
        main_error(str(err))
    except RuntimeError as err:
        from grokcopy.training.trainer import CheckpointSaveError, TrainingDivergedError

        if not isinstance(err, (CheckpointSaveError, TrainingDivergedError)):
            raise
        main_error(str(err), code=1)


if __name__ == "__main__":
    sys.exit(main())
