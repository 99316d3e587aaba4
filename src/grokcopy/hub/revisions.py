"""Checkpoint revision names across suites, their training order, and tokens seen at each.

Pythia `step1000`, OLMo `step1000-tokens4B` / `stage1-step1000-tokens5B`, a Trainer run
`checkpoint-1000`: one parser, so a series can be sorted and selected without downloading it.
"""

from __future__ import annotations

import re

from grokcopy.errors import SeriesError  # noqa: F401 (re-exported)
from grokcopy.run_dir import CHECKPOINT_COPY_EVAL, TRAINER_STATE

PYTHIA_TOKENS_PER_STEP = 2_097_152  # 1024 sequences x 2048 tokens per optimizer step

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_STEP_RE = re.compile(
    r"^(?:(?P<prefix>.*?)[-_/])?step[-_]?(?P<step>\d+)"
    r"(?:[-_]tokens[-_]?(?P<tokens>\d+(?:\.\d+)?)(?P<unit>[KMGBT]?))?$", re.IGNORECASE)
_CHECKPOINT_RE = re.compile(r"^(?:(?P<prefix>.*?)[-_/])?checkpoint[-_]?(?P<step>\d+)$", re.IGNORECASE)
_STAGE_RE = re.compile(r"(?:^|(?<=[-_/]))stage[-_]?(\d+)(?=$|[-_/])", re.IGNORECASE)


# ----------------------------------------------------------------------------- revision names


def _match(name: str):
    return _STEP_RE.match(name) or _CHECKPOINT_RE.match(name)


def parse_revision(name: str) -> tuple[int, int | None] | None:
    """(step, tokens or None) from a checkpoint branch name; None for any other name.

    Pythia `step1000` -> (1000, None); OLMo `step1000-tokens4B` -> (1000, 4_000_000_000) and
    `stage1-step1000-tokens5B`, `stage2-ingredient1-step1000-tokens5B` alike (token suffixes K, M,
    B/G, T, decimals allowed, none = a plain count); Trainer `checkpoint-1000` -> (1000, None).
    """
    match = _match(name.strip())
    if match is None:
        return None
    step = int(match["step"])
    tokens = None
    if match.re is _STEP_RE and match["tokens"] is not None:
        tokens = int(round(float(match["tokens"]) * _UNITS[match["unit"].upper()]))
    return step, tokens


def revision_sort_key(name: str) -> tuple:
    """Training order: named checkpoints first, by stage, then by what else the prefix says (an OLMo-2
    anneal `ingredient`), then by step; names that are no checkpoint sort last (stably)."""
    match = _match(name.strip())
    if match is None:
        return (1, 0, "", 0)
    prefix = match["prefix"] or ""
    stage = _STAGE_RE.search(prefix)
    rest = _STAGE_RE.sub("", prefix).strip("-_/")
    return (0, int(stage.group(1)) if stage else 0, rest, int(match["step"]))


def select_revisions(names: list[str], every: int | None = None) -> list[str]:
    """Sort `names` into training order and keep every `every`-th (the first, ..., and always the last)."""
    ordered = sorted(dict.fromkeys(names), key=revision_sort_key)
    if every is None or every == 1 or not ordered:
        return ordered
    if every < 1:
        raise SeriesError(f"every: expected a positive integer, got {every}")
    kept = ordered[::every]
    if kept[-1] != ordered[-1]:
        kept.append(ordered[-1])
    return kept


def default_tokens_per_step(repo_id: str) -> int | None:
    """Pythia's 2,097,152 tokens per step for EleutherAI/pythia* repos, else unknown."""
    return PYTHIA_TOKENS_PER_STEP if repo_id.lower().startswith("eleutherai/pythia") else None


def record_tokens(record: dict, tokens_per_step: int | None) -> tuple[int | None, str | None]:
    """Tokens seen at a checkpoint: from its name, else trainer_state.json, else the grokcopy checkpoint's
    own copy_eval.json, else step x tokens_per_step."""
    if record.get("name_tokens") is not None:
        return record["name_tokens"], "revision name"
    state = record.get("trainer_state") or {}
    seen = state.get("num_input_tokens_seen")
    if isinstance(seen, (int, float)) and (seen > 0 or record.get("step") == 0):
        return int(seen), TRAINER_STATE  # 0 after step 0 means "not counted"
    copy_eval = (record.get("checkpoint_results") or {}).get(CHECKPOINT_COPY_EVAL) or {}
    if isinstance(copy_eval.get("tokens"), int) and copy_eval.get("step") == record.get("step"):
        return copy_eval["tokens"], CHECKPOINT_COPY_EVAL
    if tokens_per_step and record.get("step") is not None:
        return int(record["step"]) * int(tokens_per_step), "tokens_per_step"
    return None, None


def read_revisions_file(path) -> list[str]:
    """Revision names from a file published beside a suite (OLMo's revisions.txt, a checkpoint CSV):
    one per line (blank lines and `#` comments skipped), or a CSV whose header has a `revision` column."""
    import csv
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SeriesError(f"--revisions-file {path}: cannot be read ({type(err).__name__})") from None
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise SeriesError(f"--revisions-file {path}: no revision in it")
    if "," not in lines[0]:
        return lines
    rows = list(csv.reader(lines))
    header = [h.strip().lower() for h in rows[0]]
    if "revision" not in header:
        raise SeriesError(f"--revisions-file {path}: a CSV needs a 'revision' column (columns: {', '.join(rows[0])})")
    column = header.index("revision")
    names = [row[column].strip() for row in rows[1:] if len(row) > column and row[column].strip()]
    if not names:
        raise SeriesError(f"--revisions-file {path}: the 'revision' column is empty")
    return names
