"""A real-text corpus that needs no download: the Python standard library's source, as fixed-size documents.

The demo corpus builds its fast early loss fall in (a deterministic cycle). Code is real text whose statistics a
model has to learn and whose repeats are its own (identifiers defined and used a few lines later), and Python
ships it: every machine that runs grokcopy has it, offline. The corpus is fixed by the Python version; the builder
writes a manifest (version, files, characters, SHA-256) beside it, so a run says exactly what it trained on.

    grokcopy corpus runs/corpora/python-stdlib    # train.jsonl + manifest.json
"""

from __future__ import annotations

import hashlib
import json
import sys
import sysconfig
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
TRAIN_FILE = "train.jsonl"


def stdlib_sources(root: str | Path | None = None) -> list[Path]:
    """Every .py file of the standard library (site-packages and caches excluded), in a fixed order."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "__pycache__"}
    return sorted(p for p in root.rglob("*.py") if not skip & set(p.relative_to(root).parts))


def build_stdlib_corpus(out_dir: str | Path, document_chars: int = 128, seed: int = 0,
                        root: str | Path | None = None) -> dict:
    """Write `out_dir/train.jsonl` ({"text": ...} per line: consecutive `document_chars`-character pieces of
    the sources, shuffled with `seed`) and `out_dir/manifest.json`; return the manifest. Rebuilding with the
    same Python, size and seed gives the same file (the manifest's sha256 says so); an existing corpus with
    the same manifest is kept as it is."""
    if document_chars < 2:
        raise ValueError(f"document_chars: expected >= 2, got {document_chars}")
    files = stdlib_sources(root)
    if not files:
        raise FileNotFoundError(f"no .py files under {root or sysconfig.get_paths()['stdlib']}")
    text = "".join(p.read_text(encoding="utf-8", errors="replace") for p in files)
    pieces = [text[i:i + document_chars] for i in range(0, len(text) - document_chars + 1, document_chars)]
    order = np.random.default_rng(seed).permutation(len(pieces))
    body = "".join(json.dumps({"text": pieces[i]}) + "\n" for i in order)
    manifest = {"source": "python standard library (*.py)", "python": sys.version.split()[0],
                "files": len(files), "characters": len(text), "documents": len(pieces),
                "document_chars": document_chars, "seed": seed,
                "sha256": hashlib.sha256(body.encode()).hexdigest()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    existing = out / MANIFEST
    if existing.is_file() and json.loads(existing.read_text()) == manifest and (out / TRAIN_FILE).is_file():
        return manifest
    temporary = out / (TRAIN_FILE + ".tmp")
    temporary.write_text(body)
    temporary.replace(out / TRAIN_FILE)
    existing.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
