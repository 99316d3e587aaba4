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


def part_path(out_dir: Path, process: int) -> Path:
    """Where process `process` of a multi-process series keeps its records until the main one merges them."""
    return out_dir / f"series.part{process}.json"


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SeriesError(f"{path}: unreadable ({one_line(err)}); move it away to start the series over") from None


def load_state(out_dir: Path, repo_id: str) -> dict:
    """series.json, with the records of any process's part file (a killed multi-process run) merged in:
    the newer analysis of a revision wins."""
    path = out_dir / SERIES_JSON
    state = _read(path) if path.is_file() else {"repo_id": repo_id, "records": []}
    if state.get("repo_id") != repo_id:
        raise SeriesError(f"{path} holds the series of {state.get('repo_id')!r}, not {repo_id!r}; "
                          f"choose another output folder")
    by_name = {r["revision"]: r for r in state["records"]}
    for part in sorted(out_dir.glob("series.part*.json")):
        merge_records(by_name, _read(part).get("records", []))
    state["records"] = list(by_name.values())
    return state


def _when(record: dict) -> str:
    return str(record.get("analysed_at") or record.get("failed_at") or "")


def merge_records(by_name: dict, records: list[dict]) -> dict:
    """Records into {revision: record}; of two records of one revision the later one (analysed or failed) wins."""
    for record in records:
        old = by_name.get(record["revision"])
        if old is None or _when(record) >= _when(old):
            by_name[record["revision"]] = record
    return by_name


def read_part(out_dir: Path, process: int) -> list[dict]:
    path = part_path(out_dir, process)
    return _read(path).get("records", []) if path.is_file() else []


def write_part(out_dir: Path, process: int, records: list[dict]) -> None:
    write_text_atomic(part_path(out_dir, process), json.dumps({"records": records}) + "\n")


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
               *(f"max_I_layer{k}" for k in range(n_layers)), "duplicate_of", "suspect", "discontinuity", "error"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for r in records:
        maxima = list(r.get("induction_max") or [])
        maxima += [None] * (n_layers - len(maxima))
        row = [r["revision"], r.get("step"), r.get("tokens"), r.get("exact_match"), r.get("token_accuracy"),
               *maxima, r.get("duplicate_of"), r.get("suspect"), "; ".join(r.get("discontinuity") or []) or None,
               r.get("error")]
        writer.writerow(["" if v is None else v for v in row])
    return buffer.getvalue()


def write_outputs(out_dir: Path, state: dict) -> None:
    state["records"].sort(key=record_key)
    state["updated_at"] = now()
    write_state(out_dir, state)
    write_text_atomic(out_dir / SERIES_CSV, csv_text(state["records"]))


def usable(record: dict, include_suspect: bool = False) -> bool:
    """A record that belongs on the curves: analysed, with a step, and not suspect (unless asked)."""
    return (record.get("exact_match") is not None or bool(record.get("induction_max"))) and \
        record.get("step") is not None and (include_suspect or not record.get("suspect"))


def is_series(folder: Path) -> bool:
    return (Path(folder) / SERIES_JSON).is_file()


def series_histories(folder: Path) -> dict:
    """A series folder in the shape `run_dir.load_histories` gives a training run, so `grokcopy report`
    compares series and runs alike: each usable revision is a copy test and an induction analysis at its
    step; no training losses (a series has none); the config says which repo it is."""
    state = _read(Path(folder) / SERIES_JSON)
    records = sorted((r for r in state["records"] if usable(r, state.get("include_suspect", False))), key=record_key)
    copy = [{"step": r["step"], "tokens": r.get("tokens"), "exact_match": r["exact_match"],
             "token_accuracy": r.get("token_accuracy"), "revision": r["revision"]}
            for r in records if r.get("exact_match") is not None]
    induction = [{**r["induction"], "step": r["step"], "tokens": r.get("tokens"), "revision": r["revision"]}
                 for r in records if r.get("induction")]
    known = [r for r in records if r.get("tokens") and r.get("step")]
    per_step = known[-1]["tokens"] / known[-1]["step"] if known else None
    return {"losses": [], "copy_history": copy, "induction_history": induction, "tokens_per_step": per_step,
            "run_config": {"model": {"series": state["repo_id"]}, "tokens_per_step": per_step}}
