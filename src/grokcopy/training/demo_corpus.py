"""The demo's corpus: plain "prose" that is learned at once, and "identifier" documents whose random
strings repeat later in the same document, as hashes, IDs and quoted passages repeat in web text.

Why generated and not natural text: measured on 2 CPU cores, natural text (KJV, Python docs) forms
no induction head within ten minutes (README, "What the demo is"). Two kinds of documents, each one
training block long:

* prose (a share `1 - identifier_share`): a fixed, nearly deterministic successor chain over the
  alphabet (each symbol is followed by its chosen successor with probability `prose_certainty`),
  a stand-in for the easily learned statistics of language. Its loss falls in the first steps.
  With `prose_symbols` (symbols of its own) and `prose_single_cycle`, the chain is one cycle through
  all of them; the demo's 20-symbol cycle makes every prose document a phrase said twice.
* identifiers: uniformly random symbols in which `spans_per_document` random passages of
  `span_min`-`span_max` symbols appear twice, the second time at a random later offset (never a
  fixed one, which a model could learn through positions). Only an induction mechanism (find the
  earlier occurrence, copy what followed) predicts the second copy. With `newline_share` > 0 each
  symbol is a newline with that probability (identifiers on lines, as in logs and lists), and a
  repeated passage repeats its newlines. With `small_alphabet_share` > 0 that share of identifier documents
  uses only the first `small_alphabet` symbols: there every symbol recurs many times in a document, so one
  matched symbol does not find the earlier occurrence of a passage, and copying needs the two or three preceding
  symbols matched (a higher-order induction circuit, which may need more depth: the claim-3 depth design).

Why newlines: the copy test separates its sequences with a newline (the paper's format). A model that
never saw one meets an untrained embedding there, and its score says how it reacts to that token, not
whether it copies: measured on two demo models with induction heads (docs/reproduction/demo-seeds/
PROTOCOL.md), exact match 0.20 and 0.72 with the newline and 0.97 and 0.96 with a trained symbol or
no separator at all.

Deterministic for a seed; written once to the cache as JSONL and reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from grokcopy.run_dir import write_jsonl

# 256 symbols: digits and ASCII letters (hex digits included) and 194 Latin letters from U+00C0 on.
# A large alphabet keeps chance matches rare, so copying can rely on the last symbol seen.
ALPHABET = string.digits + string.ascii_letters + "".join(chr(c) for c in range(0xC0, 0xC0 + 194))
PROSE_ALPHABET_START = 0x4E00  # CJK ideographs: as many "words" as prose_symbols asks for


@dataclass(frozen=True)
class DemoCorpusConfig:
    num_documents: int = 160_000
    document_chars: int = 40  # one 40-token block per document (the demo packs without EOS)
    identifier_share: float = 1.0
    spans_per_document: int = 1
    span_min: int = 6
    span_max: int = 14
    prose_certainty: float = 0.95
    prose_symbols: int = 0  # > 0: prose uses its own symbols (like words vs. hashes), none shared with identifiers
    prose_single_cycle: bool = False  # the successor chain is one cycle through all prose symbols: no repeats
    newline_share: float = 0.0  # identifier documents: the probability that a symbol is a newline
    small_alphabet_share: float = 0.0  # identifier documents drawn from the first `small_alphabet` symbols only
    small_alphabet: int = 8
    seed: int = 0

    def __post_init__(self):
        if not 0.0 <= self.newline_share < 1.0:
            raise ValueError(f"newline_share: expected a probability in [0, 1), got {self.newline_share}")
        if not 0.0 <= self.small_alphabet_share <= 1.0:
            raise ValueError(f"small_alphabet_share: expected a probability in [0, 1], got {self.small_alphabet_share}")
        if not 2 <= self.small_alphabet <= len(ALPHABET):
            raise ValueError(f"small_alphabet: expected 2-{len(ALPHABET)} symbols, got {self.small_alphabet}")

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not fields["newline_share"]:  # added later: the corpora made before keep their cache names
            del fields["newline_share"]
        if not fields["small_alphabet_share"]:
            del fields["small_alphabet_share"], fields["small_alphabet"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def generate_documents(config: DemoCorpusConfig):
    """Yield the corpus' documents (strings of `document_chars` symbols from ALPHABET)."""
    rng = np.random.default_rng(config.seed)
    symbols = np.array(list(ALPHABET) + ["\n"])
    k, n = len(ALPHABET), config.document_chars
    prose = symbols[:k]
    if config.prose_symbols > 0:
        prose = np.array([chr(PROSE_ALPHABET_START + i) for i in range(config.prose_symbols)])
    successor = rng.permutation(len(prose))  # the prose "grammar": one likely successor per symbol
    if config.prose_single_cycle:
        order, successor = successor, np.empty_like(successor)
        successor[order] = np.roll(order, -1)  # order[i] is followed by order[i + 1], the last by the first
    for _ in range(config.num_documents):
        if rng.random() >= config.identifier_share:
            doc = np.empty(n, dtype=np.int64)
            doc[0] = rng.integers(len(prose))
            noise = rng.random(n) >= config.prose_certainty
            random_next = rng.integers(0, len(prose), size=n)
            for t in range(1, n):
                doc[t] = random_next[t] if noise[t] else successor[doc[t - 1]]
            yield "".join(prose[doc])
            continue
        else:
            small = config.small_alphabet_share > 0 and rng.random() < config.small_alphabet_share  # no draw when off
            doc = rng.integers(0, config.small_alphabet if small else k, size=n)
            if config.newline_share > 0:
                doc[rng.random(n) < config.newline_share] = k  # index k: the newline (symbols[k])
            for _ in range(config.spans_per_document):
                length = int(rng.integers(config.span_min, config.span_max + 1))
                first = int(rng.integers(0, n - 2 * length))
                second = int(rng.integers(first + length, n - length + 1))
                doc[second:second + length] = doc[first:first + length]
            yield "".join(symbols[doc])


def demo_corpus_files(cache_dir: str | None = None, config: DemoCorpusConfig = DemoCorpusConfig()) -> list[str]:
    """Path of the demo corpus, generated on first use (atomically) and cached."""
    root = Path(cache_dir or os.environ.get("GROKCOPY_CACHE", Path.home() / ".cache" / "grokcopy"))
    path = root / f"demo_corpus_{config.key}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(({"text": doc} for doc in generate_documents(config)), path)
    return [str(path)]
