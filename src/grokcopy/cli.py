"""The `grokcopy` command line.

    grokcopy train CONFIG [--any_field value ...]   pretrain with a YAML/JSON config
    grokcopy demo [--any_field value ...]           the 2-core CPU demo (trainer_configs/demo.yaml)
    grokcopy copy-test MODEL [--revision R]         the paper's copy test on a saved or Hub model
    grokcopy induction MODEL [--revision R]         induction-head scores per layer x head
    grokcopy series REPO --out DIR                  copy test + induction analysis of a checkpoint series
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

from grokcopy.analysis.induction import UnsupportedArchitectureError
from grokcopy.training.config import ConfigError, main_error


def _train(config, overrides) -> int:
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    model_args, data_args, training_args = parse_args(config, overrides)
    summary = run_training(model_args, data_args, training_args)
    print(json.dumps(summary, indent=2))
    return 0


def _copy_test(ns) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
    from grokcopy.training.modeling import model_context_length

    tokenizer = AutoTokenizer.from_pretrained(ns.model, revision=ns.revision)
    model = AutoModelForCausalLM.from_pretrained(ns.model, revision=ns.revision)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
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
    import torch
    from transformers import AutoModelForCausalLM

    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.analysis.plots import plot_induction_heatmap

    model = AutoModelForCausalLM.from_pretrained(ns.model, revision=ns.revision)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    icl = None
    if ns.icl_tokens:
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
    from grokcopy.hub.push import PUSH_RECORD, HubCheckpointCallback

    record_file = Path(ns.output_dir) / PUSH_RECORD
    if not record_file.is_file() and not ns.hub_model_id:
        raise ConfigError(f"{record_file} not found: not a run with hub_checkpoint_series; give --hub_model_id")
    repo = ns.hub_model_id or json.loads(record_file.read_text())["repo_id"]
    callback = HubCheckpointCallback(repo, private=ns.private or None, timeout=ns.timeout)
    done = callback.push_pending(ns.output_dir, timeout=ns.wait)
    print(f"{repo}: pushed {sorted(callback.pushed)}" + ("" if done else f"; still pending {sorted(callback.pending)}"))
    return 0 if done else 1


def _push_metric(ns) -> int:
    from grokcopy.hub.push import push_metric

    space = push_metric(ns.space_id, private=ns.private or None)
    print(f"pushed: evaluate.load(\"{space}\")")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grokcopy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="pretrain from a config; --field value overrides any field")
    train.add_argument("config", help="YAML or JSON file of TrainingArguments + grokcopy fields")
    demo = sub.add_parser("demo", help="the CPU demo: watch a tiny LLaMA grok to copy (~10 min on 2 cores)")
    demo.add_argument("--output_dir", default="runs/demo")
    copy = sub.add_parser("copy-test", help="run the paper's copy test on a model (folder or Hub id)")
    copy.add_argument("model")
    copy.add_argument("--revision", default="main")
    copy.add_argument("--num_samples", type=int, default=500)
    copy.add_argument("--num_sequences", type=int, default=50)
    copy.add_argument("--symbols", choices=["tokens", "hex"], default="tokens")
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
    from grokcopy.hub.series import add_series_parser

    add_series_parser(sub)
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
    report = sub.add_parser("report", help="compare runs or sweeps: figures, grokking statistics, the paper's claims")
    report.add_argument("runs", nargs="+", help="run folders or sweep folders (their members are used)")
    report.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    report.add_argument("--loss-tolerance", type=float, default=0.05,
                        help="loss plateau band: share of the total fall (or nats with --absolute)")
    report.add_argument("--absolute", action="store_true", help="--loss-tolerance is in nats, not a share")
    report.add_argument("--loss-window", type=int, default=5, help="logged losses in the moving average")
    report.add_argument("--jump-window", type=float, help="steps over which the copy jump's rise is measured "
                                                          "(default: the widest gap between copy tests)")
    report.add_argument("--align-tolerance", type=float, default=0.25,
                        help="claim (a): relative spread of jump steps below which they align")
    report.add_argument("--threshold", type=float, default=0.3, help="induction score I of a formed head")
    metric = sub.add_parser("push-metric", help="upload metrics/copy_accuracy as a Hub Space")
    metric.add_argument("space_id", help="NAMESPACE/copy_accuracy")
    metric.add_argument("--private", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns, rest = parser.parse_known_args(argv)
    try:
        if ns.command == "train":
            return _train(ns.config, rest)
        if ns.command == "demo":
            from grokcopy.experiments.demo import run_demo

            return run_demo(ns.output_dir, rest)
        if ns.command == "sweep":
            from grokcopy.experiments.sweep import run_sweep

            return run_sweep(ns.sweep, rest, only=ns.only, output_dir=ns.output_dir, print_commands=ns.print_commands,
                             dry_run=ns.dry_run, launcher=ns.launcher, nproc=ns.nproc,
                             accelerate_config=ns.accelerate_config)
        if rest:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
        if ns.command == "report":
            from grokcopy.experiments.report import run_report

            return run_report(ns)
        if ns.command == "series":
            from grokcopy.hub.series import run_series

            return run_series(ns)
        commands = {"copy-test": _copy_test, "induction": _induction, "push": _push, "push-metric": _push_metric}
        try:
            return commands[ns.command](ns)
        except OSError as err:  # a missing model, revision or file: say which, in one line
            main_error(" ".join(str(err).split()))
        except UnsupportedArchitectureError as err:
            main_error(str(err))
    except ConfigError as err:
        main_error(str(err))
    except RuntimeError as err:
        from grokcopy.training.trainer import CheckpointSaveError, TrainingDivergedError

        if not isinstance(err, (CheckpointSaveError, TrainingDivergedError)):
            raise
        main_error(str(err), code=1)


if __name__ == "__main__":
    sys.exit(main())
