"""The demo's corpus: text with a learnable background and passages that repeat, as web text has.

Natural text alone does not form induction heads within minutes on 2 CPU cores (see
README, "What the demo is"), so the demo trains on generated documents: a background of symbols
with a skewed frequency (learned in the first few dozen steps, so the loss falls first) in which
random passages reappear later in the same document at random offsets (copyable only by an
induction mechanism, never at a fixed offset). Deterministic for a seed; written once to the
cache as JSONL and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import write_jsonl

ALPHABET = string.digits + string.ascii_letters  # 62 symbols, hex digits included


@dataclass(frozen=True)
class DemoCorpusConfig:
    num_documents: int = 200_000
    document_chars: int = 255  # + EOS = one 256-token block per document
    zipf_exponent: float = 1.2
    spans_per_document: int = 3
    span_min: int = 6
    span_max: int = 14
    seed: int = 0

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def generate_documents(config: DemoCorpusConfig):
    """Yield documents: skewed background with `spans_per_document` passages repeated later."""
    rng = np.random.default_rng(config.seed)
    symbols = np.array(list(ALPHABET))
    ranks = np.arange(1, len(symbols) + 1, dtype=np.float64)
    weights = ranks ** -config.zipf_exponent
    probs = weights / weights.sum()
    n = config.document_chars
    for _ in range(config.num_documents):
        doc = symbols[rng.choice(len(symbols), size=n, p=probs)]
        for _ in range(config.spans_per_document):
            length = int(rng.integers(config.span_min, config.span_max + 1))
            span = symbols[rng.integers(0, len(symbols), size=length)]
            first = int(rng.integers(0, n - 2 * length))
            second = int(rng.integers(first + length, n - length + 1))
            doc[first:first + length] = span
            doc[second:second + length] = span
        yield "".join(doc)


def demo_corpus_files(cache_dir: str | None = None, config: DemoCorpusConfig = DemoCorpusConfig()) -> list[str]:
    """Path of the demo corpus, generated on first use (atomically) and cached."""
    root = Path(cache_dir or os.environ.get("GROKCOPY_CACHE", Path.home() / ".cache" / "grokcopy"))
    path = root / f"demo_corpus_{config.key}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(({"text": doc} for doc in generate_documents(config)), path)
    return [str(path)]
