"""The analysis subcommands of `grokcopy` (copy-test, induction, series) and the argument types the CLI
shares; cli.py builds the parser and dispatches."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grokcopy.copytest.task import SYMBOL_KINDS
from grokcopy.errors import ConfigError, SeriesError, main_error, one_line

COPY_SHAPE = ("num_sequences", "prefix_length", "suffix_length", "query_stride", "symbol_pattern", "separator")
TEXT_FIELDS = ("symbol_pattern", "separator")


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


def load_model(ns):
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


def icl_tokens(path: str | None):
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


COPY_FIELDS = ("num_samples", "num_sequences", "prefix_length", "suffix_length", "query_stride", "symbols", "seed",
               "symbol_pattern", "separator")


def model_copy_task(ns, model, given: dict | None = None):
    """The copy test `grokcopy copy-test` runs on `ns.model`: each field as given on the command line (`given`,
    default: read from `ns`), else the run's own (a grokcopy run measures what the run measured), else the
    paper's; fitted to the model's context."""
    from transformers import AutoTokenizer

    from grokcopy.analysis.architectures import model_context_length
    from grokcopy.copytest.task import CopyTaskConfig, build_copy_task
    from grokcopy.run_dir import run_analysis_settings

    tokenizer = AutoTokenizer.from_pretrained(ns.model, revision=ns.revision)
    run = run_analysis_settings(ns.model)
    given = {k: getattr(ns, k, None) for k in COPY_FIELDS} if given is None else given
    fields = {k: v if v is not None else run.get(f"copy_{k}") for k, v in given.items()}
    config = CopyTaskConfig(**{k: v for k, v in fields.items() if v is not None})
    if run:
        print(f"copy test: the run's own settings where not given ({', '.join(k for k, v in given.items() if v is None and run.get(f'copy_{k}') is not None)})",
              file=sys.stderr)
    task = build_copy_task(tokenizer, config, max_length=model_context_length(model))
    if task.note:
        print(task.note, file=sys.stderr)
    return task


def copy_test(ns) -> int:
    from grokcopy.copytest.scoring import score_copy_task

    model = load_model(ns)
    task = model_copy_task(ns, model)
    result = score_copy_task(model, task, batch_size=ns.batch_size, progress=True)
    text = json.dumps(result, indent=2)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    print(text)
    return 0


ABLATION_SAMPLES = 100  # a drop from 0.95 to 0.6 is many standard errors on 100 samples; a score takes 500


def writable_json(path: str | None) -> None:
    """--json: refused before any work when it cannot be written where asked."""
    if path and Path(path).is_dir():
        raise ConfigError(f"--json: {path} is a folder; give a file name")
    if path and not Path(path).expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--json: the folder of {path} does not exist")


def ablate(ns) -> int:
    """`grokcopy ablate MODEL`: the run's own copy test with each head and each layer's attention zero-ablated."""
    from grokcopy.analysis.ablation import ablate_heads, ablation_table
    from grokcopy.analysis.architectures import model_family, unwrap_model
    from grokcopy.run_dir import run_analysis_settings

    writable_json(ns.json)
    model = load_model(ns)
    model_family(unwrap_model(model))  # an architecture the analyses do not know: said before any work
    run_samples = run_analysis_settings(ns.model).get("copy_num_samples")
    samples = ns.num_samples or min(ABLATION_SAMPLES, run_samples or ABLATION_SAMPLES)
    task = model_copy_task(ns, model, given={**dict.fromkeys(COPY_FIELDS), "num_samples": samples})
    print(f"head ablation: {samples} samples" + (f" (the run's copy test has {run_samples})" if run_samples else "")
          + "; --num-samples sets another number", file=sys.stderr)
    result = ablate_heads(model, task, batch_size=ns.batch_size, ablations_per_pass=ns.ablations_per_pass,
                          progress=True)
    record = {"model": ns.model, "revision": ns.revision, **result}
    if ns.json:
        Path(ns.json).write_text(json.dumps(record, indent=1) + "\n")
    print(ablation_table(result))
    return 0


def induction(ns) -> int:
    from grokcopy.analysis.induction import analyze_induction, fit_seq_len
    from grokcopy.analysis.plots import plot_induction_heatmap
    from grokcopy.run_dir import run_analysis_settings

    icl = icl_tokens(ns.icl_tokens)
    model = load_model(ns)
    requested = ns.seq_len if ns.seq_len is not None else run_analysis_settings(ns.model).get("induction_seq_len")
    try:  # positions past the context were never trained: scores read there say nothing
        seq_len, note = fit_seq_len(model, requested, with_bos=not ns.no_bos)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    from_run = ns.seq_len is None and requested is not None
    print(f"induction: s = {seq_len} (the run's own induction_seq_len)" if from_run else f"induction: {note}",
          file=sys.stderr)
    scores = analyze_induction(model, seq_len=seq_len, batch_size=ns.batch_size, seed=ns.seed,
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


def summary_line(record: dict) -> str:
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


def series(ns) -> int:
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
            base_revision=ns.base_revision,
            copy_shape={k: getattr(ns, k) for k in COPY_SHAPE if getattr(ns, k) is not None})
    except SeriesError as err:
        main_error(str(err))
    if launch_process()[0] != 0:  # under torchrun the main process reports the merged series
        return 0
    for record in records:
        print(summary_line(record))
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


def add_series_parser(subparsers) -> None:
    """`grokcopy series REPO [--revisions A,B | --all | --every K] --out DIR [...]` on an argparse subparsers."""
    parser = subparsers.add_parser(
        "series", allow_abbrev=False, help="copy test + induction heads across a Hub repo's checkpoint branches",
        description="Run the copy test and the induction analysis on every checkpoint branch of a Hub repo "
                    "(Pythia stepN, OLMo stepN-tokensXB, Trainer checkpoint-N); writes series.json, series.csv, "
                    "series_copy.png and series_induction.png to --out and resumes there.")
    parser.add_argument("repo", help="Hub model repo id, e.g. EleutherAI/pythia-160m")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--revisions", help="comma-separated branches / tags to analyse (any naming)")
    which.add_argument("--revisions-file", metavar="FILE", help="revisions published outside the refs: one per "
                       "line, or a CSV with a 'revision' column (e.g. OLMo's revisions.txt)")
    which.add_argument("--all", action="store_true", help="every checkpoint branch and tag (the default)")
    which.add_argument("--every", type=positive_int, metavar="K", help="every K-th checkpoint branch (and the last)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (a rerun resumes there)")
    parser.add_argument("--copy-samples", type=positive_int, default=100, help="copy-test samples per revision")
    parser.add_argument("--symbols", choices=SYMBOL_KINDS, default="tokens", help="copy-test symbols")
    for name in COPY_SHAPE:  # the copy test's shape, as in copy-test (default: the paper's, fitted to the context)
        parser.add_argument(f"--{name.replace('_', '-')}", type=str if name in TEXT_FIELDS else positive_int,
                            help=f"copy test: {name.replace('_', ' ')} (default: the paper's)")
    parser.add_argument("--seed", type=int, default=1234, help="copy-test seed")
    parser.add_argument("--tokens-per-step", type=positive_int, help="tokens per optimizer step where the name and "
                        "trainer_state.json give none (default: 2097152 for EleutherAI/pythia*)")
    parser.add_argument("--induction-seq-len", type=positive_int, default=100, help="random tokens repeated twice")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="copy-test batch size")
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
