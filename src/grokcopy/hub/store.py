"""A series' results on disk: `series.json` (every record in full) and `series.csv` (one flat row each).

series.json is rewritten atomically after every revision, so a crash loses at most the revision
being analysed, and a rerun of the same command resumes from it.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

from grokcopy.errors import SeriesError, one_line
from grokcopy.hub.revisions import revision_sort_key
from grokcopy.run_dir import write_text_atomic

SERIES_JSON = "series.json"
SERIES_CSV = "series.csv"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def load_state(out_dir: Path, repo_id: str) -> dict:
    path = out_dir / SERIES_JSON
    if not path.is_file():
        return {"repo_id": repo_id, "records": []}
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SeriesError(f"{path}: unreadable ({one_line(err)}); move it away to start the series over") from None
    if state.get("repo_id") != repo_id:
        raise SeriesError(f"{path} holds the series of {state.get('repo_id')!r}, not {repo_id!r}; "
                          f"choose another output folder")
    return state


def write_state(out_dir: Path, state: dict) -> None:
    """series.json, one record per line (full induction matrices make indented JSON huge)."""
    head = {k: v for k, v in state.items() if k != "records"}
    lines = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    records = ",\n".join("  " + json.dumps(r) for r in state["records"])
    write_text_atomic(out_dir / SERIES_JSON, "{\n" + "\n".join(lines) + '\n "records": [\n' + records + "\n ]\n}\n")


def record_key(record: dict) -> tuple:
    key = revision_sort_key(record["revision"])
    step = record.get("step")
    return (step is None,) + key[1:3] + (step if step is not None else 0, key[0], record["revision"])


def csv_text(records: list[dict]) -> str:
    n_layers = max((len(r.get("induction_max") or []) for r in records), default=0)
    columns = ["revision", "step", "tokens", "exact_match", "token_accuracy",
               *(f"max_I_layer{k}" for k in range(n_layers)), "duplicate_of", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        maxima = list(r.get("induction_max") or [])
        maxima += [None] * (n_layers - len(maxima))
        row = [r["revision"], r.get("step"), r.get("tokens"), r.get("exact_match"), r.get("token_accuracy"),
               *maxima, r.get("duplicate_of"), r.get("error")]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def write_outputs(out_dir: Path, state: dict) -> None:
    state["records"].sort(key=record_key)
    state["updated_at"] = now()
    write_state(out_dir, state)
    write_text_atomic(out_dir / SERIES_CSV, csv_text(state["records"]))
