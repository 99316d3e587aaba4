"""The analysis subcommands of `grokcopy` (copy-test, induction, ablate, series), and how the CLI turns a
settings dataclass into flags; cli.py builds the parser and dispatches.

Each command parses into the library's own typed arguments (`CopyTaskConfig`, `InductionConfig`, a
`SavedModel`) and calls one library function; what it prints is its own. A settings dataclass's fields
become flags here (`add_settings`): the dataclass holds the one set of defaults and help texts."""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

from grokcopy.errors import ConfigError, SeriesError, main_error, one_line


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (`grokcopy: error: ...`, exit 2) and no abbreviations: `--learning_rat`
    must not silently mean `--learning_rate`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        main_error(message)


def at_least(low: int):
    """An argparse type: an integer >= `low`."""
    def integer(text: str) -> int:
        value = int(text)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    integer.__name__ = "int"  # argparse names the type in "invalid int value"
    return integer


positive_int = at_least(1)


def layer_sets(text: str) -> list[list[int]]:
    """An argparse type: comma-separated sets of layers joined by '+', e.g. "1+2,1+3"."""
    from grokcopy.analysis.ablation import parse_layer_sets

    try:
        return parse_layer_sets(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def show_default(value) -> str:
    """A default as `--help` shows it, the same for `grokcopy train --help` and every command's flags."""
    if isinstance(value, str) and (not value.isprintable() or value != value.strip() or not value):
        return repr(value)
    return str(value)


def add_settings(parser, config_cls, prefix: str = "", *, default_text=None, aliases=None) -> dict[str, str]:
    """One flag per field of the settings dataclass `config_cls` that has a default: `--prefix-name` (and
    `--prefix_name`), typed from the field (an integer with a `min` in its metadata is checked against it; a
    Literal is a choice; a bool a switch), with the field's help and default. The parsed value is None when
    the flag is not given (a switch: False), so the caller's config takes its own default, or a run's: one
    set of defaults, the dataclass's. `default_text(field)` words the shown default; `aliases` adds flags per
    field name. Returns {parameter name: flag} for messages that name a parameter."""
    hints = typing.get_type_hints(config_cls)
    flags = {}
    for f in fields(config_cls):
        if f.default is MISSING:
            continue  # a required input: the caller adds it as the command needs it
        name, kind = prefix + f.name, hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):  # X | None: X
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        options = {k: f.metadata[k] for k in ("metavar",) if k in f.metadata}
        if kind is bool:
            options.update(action="store_true")
        elif typing.get_origin(kind) is typing.Literal:
            options.update(choices=typing.get_args(kind), default=None)
        else:
            low = f.metadata.get("min")
            options.update(type=at_least(low) if kind is int and low is not None else kind, default=None)
        shown = default_text(f) if default_text else show_default(f.default)
        text = f.metadata.get("help", "")
        text += "" if kind is bool or "(default:" in text else f" (default: {shown})"  # or the help says it
        names = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
        parser.add_argument(*names, *(aliases or {}).get(f.name, ()), dest=name, help=text.replace("%", "%%"),
                            **options)
        flags[name] = names[0]
    return flags


def given(ns, config_cls, prefix: str = "") -> dict:
    """The fields of `config_cls` given on the command line (flags made by add_settings)."""
    values = {f.name: getattr(ns, prefix + f.name, None) for f in fields(config_cls)}
    return {k: v for k, v in values.items() if v is not None}


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


def writable_json(path: str | None) -> None:
    """--json: refused before any work when it cannot be written where asked."""
    if path and Path(path).is_dir():
        raise ConfigError(f"--json: {path} is a folder; give a file name")
    if path and not Path(path).expanduser().resolve().parent.is_dir():
        raise ConfigError(f"--json: the folder of {path} does not exist")


def tell(notes: list[str]) -> None:
    for note in notes:
        print(note, file=sys.stderr)


def copy_test(ns) -> int:
    """`grokcopy copy-test MODEL`: the copy test with the run's own settings where none are given."""
    from grokcopy.analysis import saved_model
    from grokcopy.copytest.task import CopyTaskConfig

    writable_json(ns.json)
    analysis = saved_model.copy_test(saved_model.SavedModel(ns.model, ns.revision), given(ns, CopyTaskConfig),
                                     batch_size=ns.batch_size, progress=True)
    tell(analysis.notes)
    text = json.dumps(analysis.record, indent=2)
    if ns.json:
        Path(ns.json).write_text(text + "\n")
    print(text)
    return 0


def ablate(ns) -> int:
    """`grokcopy ablate MODEL`: the run's own copy test with each head and each layer's attention zero-ablated."""
    from grokcopy.analysis import saved_model
    from grokcopy.analysis.ablation import ablation_table

    writable_json(ns.json)
    settings = dict(num_samples=ns.num_samples, batch_size=ns.batch_size, ablations_per_pass=ns.ablations_per_pass,
                    per_head=not ns.induction_heads_only, layers_together=ns.layers_together)
    if ns.every and not ns.over_checkpoints:
        raise ValueError("--every picks checkpoints: it needs --over-checkpoints")
    if ns.over_checkpoints:
        if not ns.json:
            raise ValueError("--over-checkpoints writes one JSON line per checkpoint: name the file with --json")
        from grokcopy.safe_io import write_jsonl

        records = list(saved_model.ablate_checkpoints(ns.model, ns.every, **settings))
        write_jsonl(records, Path(ns.json))
        for r in records:
            print(f"step {r['step']:>6}: exact match {r['exact_match']:.3f}" + "".join(
                f"; layer {layer} ablated {value:.3f}" for layer, value in enumerate(r.get("layer_ablated_exact_match", [])))
                + "".join(f"; {name} {value:.3f}" for name, value in (r.get("group_ablated_exact_match") or {}).items()
                          if name != "induction_heads"))
        return 0
    analysis = saved_model.ablate(saved_model.SavedModel(ns.model, ns.revision), progress=True, **settings)
    *notes, samples = analysis.notes
    tell([*notes, samples + ("" if ns.num_samples else "; --num-samples sets another number")])
    if ns.json:
        Path(ns.json).write_text(json.dumps(analysis.record, indent=1) + "\n")
    print(ablation_table(analysis.record))
    if analysis.record.get("copies_by_induction") is not None:
        print(f"copies by induction: {'yes' if analysis.record['copies_by_induction'] else 'no'} (its induction heads "
              f"ablated together leave {analysis.record['induction_heads_ablated_exact_match']:.3f} of "
              f"{analysis.record['exact_match']:.3f})")
    return 0


def forecast(ns) -> int:
    """`grokcopy forecast RUN`: whether and when the run will copy by induction; --evaluate / --build-reference DIRS."""
    from grokcopy.forecast.reference import Forecaster, forecast_run, shipped_forecaster

    if (ns.evaluate or ns.build_reference) and not ns.out:
        raise ValueError("--evaluate and --build-reference write to --out: name a folder (or file)")
    if ns.build_reference:
        from grokcopy.experiments.forecast_evaluation import build_reference

        record = build_reference(ns.runs, ns.out)
        print(f"{len(record['runs'])} runs of {', '.join(record['experiments'])} -> {ns.out}")
        return 0
    forecaster = Forecaster(json.loads(Path(ns.reference).read_text())) if ns.reference else shipped_forecaster()
    if ns.evaluate:
        from grokcopy.experiments.forecast_evaluation import evaluate

        record = evaluate(ns.runs, ns.out, forecaster)
        print(Path(ns.out, "forecast_evaluation.md").read_text())
        return 0
    if len(ns.runs) != 1:
        raise ValueError(f"forecast takes one run folder ({len(ns.runs)} given; --evaluate scores many)")
    writable_json(ns.json)
    result = forecast_run(ns.runs[0], ns.at_step, ns.horizon, forecaster)
    print(result.text())
    if ns.json:
        Path(ns.json).write_text(json.dumps(result.to_json(), indent=1) + "\n")
    return 0


def induction(ns) -> int:
    """`grokcopy induction MODEL`: induction-head scores, s the run's own or fitted to the context."""
    from grokcopy.analysis import saved_model
    from grokcopy.analysis.induction_config import InductionConfig
    from grokcopy.analysis.plots import plot_induction_heatmap

    writable_json(ns.json)
    icl = icl_tokens(ns.icl_tokens)
    analysis = saved_model.induction(saved_model.SavedModel(ns.model, ns.revision), given(ns, InductionConfig),
                                     seed=ns.seed, with_bos=not ns.no_bos, icl_input_ids=icl)
    tell(analysis.notes)
    record = analysis.record
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
    """`grokcopy series REPO`: errors as one `grokcopy: error: ...` line and exit status 2."""
    from grokcopy.analysis.induction_config import InductionConfig
    from grokcopy.copytest.task import CopyTaskConfig
    from grokcopy.hub.revisions import read_revisions_file
    from grokcopy.hub.series import OUTPUTS, analyze_series
    from grokcopy.hub.workers import launch_process

    try:
        revisions = read_revisions_file(ns.revisions_file) if ns.revisions_file else ns.revisions
        records = analyze_series(
            ns.repo, revisions=revisions, every=ns.every, out_dir=ns.out,
            copy=CopyTaskConfig(**given(ns, CopyTaskConfig)),
            induction=InductionConfig(**given(ns, InductionConfig, "induction_")), keep_weights=ns.keep_weights,
            tokens_per_step=ns.tokens_per_step, batch_size=ns.batch_size, device=ns.device, dtype=ns.dtype,
            include_suspect=ns.include_suspect, progress=not ns.no_progress, base_model=ns.base_model,
            base_revision=ns.base_revision)
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
