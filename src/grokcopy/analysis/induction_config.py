"""The induction analysis's settings, defined once, and its one rule for fitting them to a model's context.

`InductionConfig`'s fields, defaults and help are what the `induction_*` training arguments, the CLI's
flags (`grokcopy induction`, `grokcopy series`) and a series' records derive from. This module imports
no torch: the command line reads it to build its flags.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from grokcopy.copytest.task import check_minimums, setting
from grokcopy.settings import PrefixedSettings

PAPER_SEQ_LEN = 100  # s of the paper: 100 random tokens repeated twice


@dataclass(frozen=True)
class InductionConfig(PrefixedSettings):
    """What the induction analysis reads: `seq_len` (s; None: the paper's 100, or the longest repeat that fits
    the model's context, see `fit`) and `batch_size` repeated sequences averaged."""

    seq_len: int | None = setting(None, "s: random tokens repeated twice (unset: the paper's 100, or the longest "
                                        "that fits the model's context).", minimum=1)
    batch_size: int = setting(8, "Repeated sequences averaged per analysis.", minimum=1)

    def __post_init__(self):
        check_minimums(type(self), self, error=ValueError)

    @classmethod
    def from_training_args(cls, args) -> "InductionConfig":
        return cls.from_settings(args, "induction_")

    def fit(self, model, *, with_bos: bool = True, name: str = "seq_len") -> tuple["InductionConfig", str]:
        """This config with `seq_len` fitted to the model's context (`fit_seq_len`), and a note saying how."""
        seq_len, note = fit_seq_len(model, self.seq_len, with_bos=with_bos, name=name)
        return replace(self, seq_len=seq_len), note


def fit_seq_len(model, requested: int | None = None, *, with_bos: bool = True,
                default: int = PAPER_SEQ_LEN, name: str = "seq_len") -> tuple[int, str]:
    """The repeated-sequence length s that fits the model's context ((1 if BOS) + 2 s tokens), and a
    note saying how it was chosen. `requested` None: the paper's 100, shortened to fit. A requested s
    that does not fit raises ValueError in one line naming `name`: positions past the context were never
    trained, and scores read there say nothing about the model (a 40-token model scored on 201 tokens)."""
    from grokcopy.analysis.architectures import model_context_length, unwrap_model

    context = model_context_length(unwrap_model(model))
    longest = None if context is None else (context - int(with_bos)) // 2
    if requested is not None:
        if longest is not None and requested > longest:
            raise ValueError(f"{name}: {requested} needs {int(with_bos) + 2 * requested} tokens, more than the "
                             f"model's context of {context}; use at most {longest} (or leave it unset: it is fitted)")
        return requested, f"s = {requested} (as asked)"
    if longest is None or longest >= default:
        return default, f"s = {default} (the paper's)"
    if longest < 2:
        raise ValueError(f"{name}: the model's context of {context} tokens is too short for the analysis")
    return longest, f"s = {longest}: the longest repeat that fits the model's context of {context} tokens"
