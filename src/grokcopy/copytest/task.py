"""The paper's context-copying test (Lv et al. 2025, Fig. 1), built from random symbols.

One sample = N random sequences, each a `prefix_length` prefix + `suffix_length` suffix, every
prefix and every suffix unique within the sample, each followed by a separator (the paper's newline;
`separator` sets another, e.g. for a model whose training data never held a newline, whose untrained
embedding would decide the score). A query appends
the prefix of sequence i (i = stride, 2*stride, ... <= N); the model must continue with that
sequence's suffix. Symbols are random vocabulary ids (`tokens`, special tokens and the newline
excluded) or random hexadecimal strings tokenized by the model's tokenizer (`hex`, as in the
paper's figure). Samples depend only on the seed and the tokenizer, never on training data, so
the same test can be rerun on every checkpoint of a series.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Literal, get_type_hints

import numpy as np

from grokcopy.errors import CopyTaskError  # noqa: F401 (re-exported)
from grokcopy.settings import PrefixedSettings

HEX_DIGITS = string.hexdigits[:16]
SYMBOL_KINDS = ("tokens", "hex")  # random vocabulary ids, or hex strings as in the paper's Fig. 1
SymbolKind = Literal["tokens", "hex"]


def check_symbol_kind(kind: str, name: str = "copy symbols") -> None:
    if kind not in SYMBOL_KINDS:
        raise CopyTaskError(f"{name}: expected {' or '.join(SYMBOL_KINDS)}, got {kind!r}")


# The paper's test (Fig. 1): 50 sequences of a 12-symbol prefix + 6-symbol suffix, every 5th queried.
PAPER_SHAPE = {"num_sequences": 50, "prefix_length": 12, "suffix_length": 6, "query_stride": 5}
COPY_BATCH_SIZE = 16  # samples per forward pass: changes the speed and the memory, never the numbers


def setting(default, text: str, minimum: int | None = None):
    """A settings field: its default, the help `text` every entry point shows (training arguments, callbacks,
    CLI flags), and (`minimum`) the smallest value it accepts."""
    metadata = {"help": text} if minimum is None else {"help": text, "min": minimum}
    return field(default=default, metadata=metadata)


def check_minimums(cls, source, prefix: str = "", error: type[Exception] = CopyTaskError) -> None:
    """Each field of the settings dataclass `cls`, read from `source` (an object or a mapping holding it as
    `prefix` + name), below the `min` its metadata gives: refused in one line naming it as `source` does."""
    for f in fields(cls):
        low = f.metadata.get("min")
        key = prefix + f.name
        value = source.get(key) if isinstance(source, Mapping) else getattr(source, key, None)
        if low is not None and value is not None and value < low:
            raise error(f"{key}: must be >= {low}, got {value}")


def with_settings(config_cls, prefix: str = "", after: str | None = None):
    """Class decorator (under @dataclass): one field `prefix` + name for each field of the settings dataclass
    `config_cls`, with its type, default and help, placed after the field `after` (default: at the end). A
    setting is declared once, in `config_cls`, however many argument classes and callbacks carry it."""
    hints = get_type_hints(config_cls)

    def add(cls):
        generated = {}
        for f in fields(config_cls):
            generated[prefix + f.name] = hints[f.name]
            # only the help: HfArgumentParser hands a field's metadata to argparse (the minimum is checked from
            # config_cls itself, check_minimums)
            setattr(cls, prefix + f.name, field(default=f.default, metadata={"help": f.metadata.get("help", "")}))
        order = {}
        for name, annotation in cls.__dict__.get("__annotations__", {}).items():
            order[name] = annotation
            if name == after:
                order.update(generated)
        order.update(generated)  # at the end, unless placed after `after` (an update keeps a key's place)
        cls.__annotations__ = order
        return cls

    return add


@dataclass(frozen=True)
class CopyTaskConfig(PrefixedSettings):
    """The copy test's settings, defined once: the `copy_*` training arguments, `CopyEvalCallback`'s fields,
    the CLI's flags (copy-test, ablate, series) and the records derive from these fields, their defaults and
    their help. A shape field left None is the paper's value fitted to the model's context (`fit_shape`); a
    field that is set is taken as given, or refused when it cannot fit."""

    num_samples: int = setting(500, "Samples per copy test (paper: 500).", minimum=1)
    num_sequences: int | None = setting(None, "Random sequences per sample (paper: 50; unset: fitted to the "
                                              "model's context).", minimum=1)
    prefix_length: int | None = setting(None, "Prefix symbols per sequence (paper: 12; unset: fitted).", minimum=1)
    suffix_length: int | None = setting(None, "Suffix symbols to reproduce (paper: 6; unset: fitted).", minimum=1)
    query_stride: int | None = setting(None, "Query sequences i = stride, 2*stride, ... (paper: 5; unset: fitted).",
                                       minimum=1)
    symbols: SymbolKind = setting("tokens", "tokens (random vocabulary ids) or hex (as in the paper's Fig. 1).")
    symbol_pattern: str | None = setting(None, "tokens: use only vocabulary entries whose text fully matches this "
                                               "regex.")
    separator: str = setting("\n", "Separator after each sequence (the paper's newline). It must be a token the "
                                    "model trained on: an untrained embedding decides the score.")
    seed: int = setting(1234, "Seed of the samples (fixed across a run and a series).")

    def __post_init__(self):
        check_minimums(type(self), self)

    @classmethod
    def from_training_args(cls, args) -> "CopyTaskConfig":
        return cls.from_settings(args, "copy_")


@dataclass
class CopySample:
    """Token ids of one sample: the shared context and, per query, (sequence index, prefix, suffix)."""

    context: list[int]
    queries: list[tuple[int, list[int], list[int]]] = field(default_factory=list)


@dataclass
class CopyTask:
    config: CopyTaskConfig
    samples: list[CopySample]
    num_sequences: int  # after fitting the model's context
    query_indices: list[int]
    note: str = ""

    @property
    def max_length(self) -> int:
        return max(len(s.context) + max(len(p) + len(q) for _, p, q in s.queries) for s in self.samples)

    @property
    def shape(self) -> dict:
        """What a score of this test measured (after fitting the context): recorded with every score, so a
        history never mixes tests of two shapes unnoticed."""
        return {**self.config.settings(), "num_samples": len(self.samples), "num_sequences": self.num_sequences,
                "queries": list(self.query_indices)}


def separator_ids(tokenizer, separator: str = "\n") -> list[int]:
    if not separator:
        raise CopyTaskError("copy separator: an empty string cannot separate the copy test's sequences")
    ids = tokenizer.encode(separator, add_special_tokens=False)
    if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
        raise CopyTaskError(f"the tokenizer cannot encode the copy test's separator {separator!r} (set another with "
                            "copy_separator / --separator)")
    return ids


def eligible_token_ids(tokenizer, exclude=(), pattern: str | None = None) -> np.ndarray:
    """Vocabulary ids a random `tokens` sequence may use: no special tokens, no separator, and (with
    `pattern`) only tokens whose text fully matches it, e.g. to leave out byte-fallback pieces."""
    banned = set(tokenizer.all_special_ids) | set(exclude)
    ids = [i for i in range(len(tokenizer)) if i not in banned]
    if pattern is not None:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise CopyTaskError(f"copy_symbol_pattern: {pattern!r} is not a regular expression: {err}") from None
        ids = [i for i in ids if regex.fullmatch(tokenizer.convert_ids_to_tokens(i) or "")]
    return np.array(ids, dtype=np.int64)


def fit_num_sequences(config: CopyTaskConfig, sep_len: int, max_length: int | None) -> int:
    """How many sequences fit: N * (prefix + suffix + sep) + prefix + suffix <= max_length (the query)."""
    n_want = config.num_sequences or PAPER_SHAPE["num_sequences"]
    if max_length is None:
        return n_want
    prefix, suffix = config.prefix_length, config.suffix_length
    return min(n_want, (max_length - prefix - suffix) // (prefix + suffix + sep_len))


def fit_shape(config: CopyTaskConfig, sep_len: int, max_length: int | None,
              prefix: str = "copy_") -> tuple[CopyTaskConfig, str]:
    """The one fitting rule: the config with every shape field set, and a note saying what was fitted.

    Unset fields take the paper's values, then give way in this order until one query fits the context:
    fewer sequences; every sequence queried instead of every 5th; a shorter prefix and suffix (2:1, as
    the paper's). A field that was set is never changed: when it keeps the test from fitting it is
    refused in one line naming it (with `prefix`, e.g. `copy_query_stride`) and the largest value that fits."""
    given = {k: getattr(config, k) for k in PAPER_SHAPE}
    shape = {k: v if v is not None else PAPER_SHAPE[k] for k, v in given.items()}
    fitted = replace(config, **shape)
    if max_length is None:
        return fitted, ""

    def sequences(p: int, s: int) -> int:
        return min(shape["num_sequences"], (max_length - p - s) // (p + s + sep_len))

    n = sequences(shape["prefix_length"], shape["suffix_length"])
    notes = []
    if n < shape["query_stride"] and given["query_stride"] is None and n >= 1:
        shape["query_stride"] = 1
        notes.append("every sequence queried")
    if n < shape["query_stride"] and given["prefix_length"] is None and given["suffix_length"] is None:
        for p in range(shape["prefix_length"] - 1, 1, -1):
            s = max(1, round(p * PAPER_SHAPE["suffix_length"] / PAPER_SHAPE["prefix_length"]))
            stride = shape["query_stride"] if given["query_stride"] is not None else 1
            if sequences(p, s) >= stride:
                shape.update(prefix_length=p, suffix_length=s, query_stride=stride)
                n = sequences(p, s)
                notes.append(f"prefix {p} + suffix {s} symbols" + ("" if stride > 1 else ", every sequence queried"))
                break
    if n < shape["query_stride"]:
        raise CopyTaskError(_does_not_fit(shape, given, sep_len, max_length, n, prefix))
    if n < shape["num_sequences"]:
        notes.insert(0, f"{n} of {shape['num_sequences']} sequences")
    shape["num_sequences"] = n
    note = (f"copy test fitted to the model's context of {max_length} tokens: {'; '.join(dict.fromkeys(notes))}; "
            f"queries at i = {', '.join(str(i) for i in range(shape['query_stride'], n + 1, shape['query_stride']))}"
            if notes else "")
    return replace(config, **shape), note


def _does_not_fit(shape: dict, given: dict, sep_len: int, max_length: int, n: int, prefix: str) -> str:
    p, s, stride = shape["prefix_length"], shape["suffix_length"], shape["query_stride"]
    need = stride * (p + s + sep_len) + p + s
    head = (f"the model's context of {max_length} tokens is too short for the copy test: one query needs "
            f"{stride} sequences of {p} + {s} symbols ({need} tokens)")
    if given["query_stride"] is not None and n >= 1:
        return f"{prefix}query_stride: {head}; use at most {n} (or leave it unset: it is fitted)"
    blame = [k for k in ("prefix_length", "suffix_length") if given[k] is not None]
    if blame:
        return f"{prefix}{blame[0]}: {head}; use a shorter one (or leave both unset: they are fitted)"
    return head


def _unique_rows(rng, symbols: np.ndarray, n: int, length: int) -> np.ndarray:
    """n distinct random rows of `length` symbols (rejection sampling, bounded)."""
    if len(symbols) ** length < 2 * n:
        raise CopyTaskError(f"vocabulary too small for the copy test: {len(symbols)} usable symbols cannot make "
                            f"{n} distinct {length}-symbol strings with room to spare")
    rows: dict[bytes, np.ndarray] = {}
    for _ in range(100):
        for row in symbols[rng.integers(0, len(symbols), size=(n, length))]:
            rows.setdefault(row.tobytes(), row)
            if len(rows) == n:
                return np.stack(list(rows.values()))
    raise CopyTaskError(f"could not draw {n} distinct {length}-symbol strings")  # pragma: no cover


def build_copy_task(tokenizer, config: CopyTaskConfig = CopyTaskConfig(), max_length: int | None = None,
                    prefix: str = "copy_") -> CopyTask:
    """Draw the test's samples for this tokenizer, fitted to the model's context `max_length` (`fit_shape`;
    `prefix` names the settings in its errors: `copy_` for the training arguments)."""
    check_symbol_kind(config.symbols)
    sep = separator_ids(tokenizer, config.separator)
    config, note = fit_shape(config, len(sep), max_length, prefix)
    n_fit = config.num_sequences
    if note:
        from transformers.utils import logging  # its loggers have warning_once

        logging.get_logger(__name__).warning_once(note)  # once per process: a series builds it per revision
    queries = list(range(config.query_stride, n_fit + 1, config.query_stride))
    if config.symbols == "tokens":
        symbols = eligible_token_ids(tokenizer, exclude=sep, pattern=config.symbol_pattern)
        shortest = min(config.prefix_length, config.suffix_length)
        if config.symbol_pattern is not None and len(symbols) ** shortest < 2 * n_fit:
            raise CopyTaskError(f"copy_symbol_pattern: {config.symbol_pattern!r} matches {len(symbols)} usable "
                                f"vocabulary entries, too few for {n_fit} distinct {shortest}-symbol strings per "
                                "sample; widen the pattern")
    else:
        symbols = np.array(list(HEX_DIGITS))
        for digit in HEX_DIGITS:
            ids = tokenizer.encode(digit, add_special_tokens=False)
            if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
                raise CopyTaskError(f"hex copy test: the tokenizer cannot encode the hex digit {digit!r}")
    samples = []
    for k in range(config.num_samples):
        rng = np.random.default_rng([config.seed, k])
        prefixes = _unique_rows(rng, symbols, n_fit, config.prefix_length)
        suffixes = _unique_rows(rng, symbols, n_fit, config.suffix_length)
        if config.symbols == "tokens":
            pairs = [(p.tolist(), s.tolist()) for p, s in zip(prefixes, suffixes)]
        else:
            encode = lambda chars: tokenizer.encode("".join(chars), add_special_tokens=False)  # noqa: E731
            pairs = [(encode(p), encode(s)) for p, s in zip(prefixes, suffixes)]
        context = [t for p, s in pairs for t in (*p, *s, *sep)]
        samples.append(CopySample(context, [(i, pairs[i - 1][0], pairs[i - 1][1]) for i in queries]))
    task = CopyTask(config, samples, n_fit, queries, note)
    if max_length is not None and task.max_length > max_length:  # a multi-token hex symbol: longer than planned
        raise CopyTaskError(f"copy test samples of {task.max_length} tokens exceed the model's context of "
                            f"{max_length}; set a smaller {prefix}num_sequences")
    return task
