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

from grokcopy.copytest.task import SYMBOL_KINDS
from grokcopy.errors import ConfigError, SeriesError, TrainingInterrupted, main_error, one_line


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (`grokcopy: error: ...`, exit 2) and no abbreviations: `--learning_rat`
    must not silently mean `--learning_rate`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        main_error(message)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _load_model(ns):
    """The model to analyse; a local folder is checked first (no config, missing or truncated weights)."""
    from transformers import AutoModelForCausalLM

    from grokcopy.devices import default_device
    from grokcopy.run_dir import model_folder_problem

    path = Path(ns.model).expanduser()
    if path.exists() or ns.model.startswith(("/", "./", "../", "~")):
        problem = model_folder_problem(path) if path.exists() else "no such folder"
        if problem:
            raise ConfigError(f"{ns.model}: {problem}")
    model = AutoModelForCausalLM.from_pretrained(ns.model, revision=ns.revision)
    return model.to(default_device())


def _icl_tokens(path: str | None):
    """--icl_tokens: a .pt file of a LongTensor [batch, >= 500] (held-out text for Olsson's ICL score)."""
    if path is None:
        return None
    import torch

    if not Path(path).is_file():
        raise ConfigError(f"--icl_tokens: file not found: {path}")
    if not path.endswith(".pt"):
        raise ConfigError(f"--icl_tokens: {path} is not a .pt file (torch.save of a LongTensor [batch, >= 500])")
    try:
        tokens = torch.load(path, weights_only=True)
    except Exception as err:  # pickle, zip and torch errors alike: the file is not what it should be
        raise ConfigError(f"--icl_tokens: {path} cannot be read: {one_line(err)}") from None
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype != torch.long or tokens.shape[1] < 500:
        what = f"a {tokens.dtype} tensor of shape {list(tokens.shape)}" if isinstance(tokens, torch.Tensor) \
            else type(tokens).__name__
        raise ConfigError(f"--icl_tokens: {path} holds {what}; expected a LongTensor [batch, >= 500]")
    return tokens


def _train(config, overrides) -> int:
    from grokcopy.training.config import parse_args
    from grokcopy.training.pipeline import run_training

    model_args, data_args, training_args = parse_args(config, overrides)
    summary = run_training(model_args, data_args, training_args)
    print(json.dumps(summary, indent=2))
    return 0


def _copy_test(ns) -> int:
    from transformers import AutoTokenizer

    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.copytest.scoring import score_copy_task
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task

    model = _load_model(ns)
    tokenizer = AutoTokenizer.from_pretrained(ns.model, revision=ns.revision)
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
    from grokcopy.analysis.induction import analyze_induction
    from grokcopy.analysis.plots import plot_induction_heatmap

    icl = _icl_tokens(ns.icl_tokens)
    model = _load_model(ns)
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
    from grokcopy.run_dir import PUSH_RECORD

    if not Path(ns.output_dir).is_dir():
        raise ConfigError(f"{ns.output_dir}: not a folder (the output_dir of a run, with its {PUSH_RECORD})")
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


def _summary_line(record: dict) -> str:
    head = f"{record['revision']}: step {record.get('step')}"
    if record.get("tokens") is not None:
        head += f", {record['tokens']:,} tokens"
    if record.get("duplicate_of"):
        return f"{head}: duplicate of {record['duplicate_of']} (not analysed)"
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
    return f"{head}: " + "; ".join(parts)


def _series(ns) -> int:
    """The `series` subcommand: errors as one `grokcopy: error: ...` line and exit status 2."""
    from grokcopy.hub.series import OUTPUTS, analyze_series

    try:
        records = analyze_series(
            ns.repo, revisions=ns.revisions, every=ns.every, out_dir=ns.out, copy_samples=ns.copy_samples,
            symbols=ns.symbols, seed=ns.seed, keep_weights=ns.keep_weights, tokens_per_step=ns.tokens_per_step,
            induction_seq_len=ns.induction_seq_len, batch_size=ns.batch_size, device=ns.device,
            progress=not ns.no_progress, base_model=ns.base_model, base_revision=ns.base_revision)
    except SeriesError as err:
        main_error(str(err))
    for record in records:
        print(_summary_line(record))
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
        "series", allow_abbrev=False, help="copy test + induction heads across a Hub repo's checkpoint branches",
        description="Run the copy test and the induction analysis on every checkpoint branch of a Hub repo "
                    "(Pythia stepN, OLMo stepN-tokensXB, Trainer checkpoint-N); writes series.json, series.csv, "
                    "series_copy.png and series_induction.png to --out and resumes there.")
    parser.add_argument("repo", help="Hub model repo id, e.g. EleutherAI/pythia-160m")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--revisions", help="comma-separated branches / tags to analyse (any naming)")
    which.add_argument("--all", action="store_true", help="every checkpoint branch (the default)")
    which.add_argument("--every", type=positive_int, metavar="K", help="every K-th checkpoint branch (and the last)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes there)")
    parser.add_argument("--copy-samples", type=positive_int, default=100, help="copy-test samples per revision")
    parser.add_argument("--symbols", choices=SYMBOL_KINDS, default="tokens", help="copy-test symbols")
    parser.add_argument("--seed", type=int, default=1234, help="copy-test seed")
    parser.add_argument("--tokens-per-step", type=positive_int, help="tokens per optimizer step where the name and "
                        "trainer_state.json give none (default: 2097152 for EleutherAI/pythia*)")
    parser.add_argument("--induction-seq-len", type=positive_int, default=100, help="random tokens repeated twice")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="copy-test batch size")
    parser.add_argument("--device", help="torch device for the analysis (default: cuda if available, else cpu)")
    parser.add_argument("--keep-weights", action="store_true", help="keep downloaded files in DIR/weights")
    parser.add_argument("--base-model", help="base model of a PEFT adapter series (default: each adapter's own "
                        "base_model_name_or_path)")
    parser.add_argument("--base-revision", default="main", help="revision of --base-model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="grokcopy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="pretrain from a config; --field value overrides any field")
    train.add_argument("config", help="YAML or JSON file of TrainingArguments + grokcopy fields")
    demo = sub.add_parser("demo", help="the CPU demo: watch a tiny LLaMA grok to copy (~10 min on 2 cores)")
    demo.add_argument("--output_dir", default="runs/demo")
    copy = sub.add_parser("copy-test", help="run the paper's copy test on a model (folder or Hub id)")
    copy.add_argument("model")
    copy.add_argument("--revision", default="main")
    copy.add_argument("--num_samples", type=positive_int, default=500)
    copy.add_argument("--num_sequences", type=positive_int, default=50)
    copy.add_argument("--symbols", choices=SYMBOL_KINDS, default="tokens")
    copy.add_argument("--seed", type=int, default=1234)
    copy.add_argument("--batch_size", type=positive_int, default=16)
    copy.add_argument("--json", help="also write the result to this file")
    ind = sub.add_parser("induction", help="induction-head analysis (A, EP, I, prev-token, prefix matching)")
    ind.add_argument("model")
    ind.add_argument("--revision", default="main")
    ind.add_argument("--seq_len", type=positive_int, default=100, help="s: random tokens repeated twice")
    ind.add_argument("--batch_size", type=positive_int, default=8)
    ind.add_argument("--seed", type=int, default=0)
    ind.add_argument("--no_bos", action="store_true", help="no leading BOS token")
    ind.add_argument("--icl_tokens", help="a .pt LongTensor [batch, >=500] of held-out tokens for the ICL score")
    ind.add_argument("--json", help="write the scores here")
    ind.add_argument("--plot", help="write the layer x head heatmap of I here (.png)")
    push = sub.add_parser("push", help="push a run's checkpoints that are not on the Hub yet, one branch each")
    push.add_argument("output_dir")
    push.add_argument("--hub_model_id", help="repo (default: the one recorded in OUTPUT_DIR/hub_pushes.json)")
    push.add_argument("--private", action="store_true")
    push.add_argument("--timeout", type=positive_float, default=60.0, help="HTTP timeout of one request (s)")
    push.add_argument("--wait", type=positive_float, default=None, help="give up after this many seconds")
    _add_series_parser(sub)
    sweep = sub.add_parser("sweep", allow_abbrev=False,
                           help="run a sweep file's members (trainer_configs/sweeps/); --field value applies to all")
    sweep.add_argument("sweep", help="sweep YAML: base config, grid / members / seeds")
    sweep.add_argument("--only", help="comma-separated member names to run (default: all)")
    sweep.add_argument("--output_dir", help="the sweep's folder (default: its output_dir); members go below it")
    sweep.add_argument("--print-commands", action="store_true", help="print one train command per member instead")
    sweep.add_argument("--launcher", choices=["torchrun", "accelerate"], help="with --print-commands")
    sweep.add_argument("--nproc", type=positive_int, help="processes per member (torchrun --nproc_per_node)")
    sweep.add_argument("--accelerate-config", help="accelerate launch --config_file")
    sweep.add_argument("--dry-run", action="store_true", help="validate every member and print the plan only")
    report = sub.add_parser("report", help="compare runs or sweeps: figures, grokking statistics, the paper's claims")
    report.add_argument("runs", nargs="+", help="run folders or sweep folders (their members are used)")
    report.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    report.add_argument("--loss-tolerance", type=float, default=0.05,
                        help="loss plateau band: share of the total fall (or nats with --absolute)")
    report.add_argument("--absolute", action="store_true", help="--loss-tolerance is in nats, not a share")
    report.add_argument("--loss-window", type=positive_int, default=5, help="logged losses in the moving average")
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
            return _series(ns)
        commands = {"copy-test": _copy_test, "induction": _induction, "push": _push, "push-metric": _push_metric}
        try:
            return commands[ns.command](ns)
        except (OSError, ValueError) as err:  # a missing model, revision or file, an unknown architecture,
            main_error(one_line(err))          # a copy test this tokenizer cannot make: say which, in one line
    except ConfigError as err:
        main_error(str(err))
    except KeyboardInterrupt as err:
        if ns.command == "sweep":
            main_error("interrupted; run the same sweep command again to go on (complete members are skipped, "
                       "a member with a checkpoint resumes from it)", code=130)
        main_error(str(err) if isinstance(err, TrainingInterrupted) else "interrupted", code=130)
    except RuntimeError as err:
        from grokcopy.training.trainer import CheckpointSaveError, TrainingDivergedError

        if not isinstance(err, (CheckpointSaveError, TrainingDivergedError)):
            raise
        main_error(str(err), code=1)


if __name__ == "__main__":
    sys.exit(main())
