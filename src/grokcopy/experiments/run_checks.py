"""What a report reads of a run folder, checked first: one line naming the file and what is wrong.

A report over folders written by another tool, by hand, or by two runs at once must not turn into a
traceback deep in the statistics, nor into numbers: a history whose steps repeat (two writers) or go
backwards is two runs mixed, and is refused rather than read as one.
"""

from __future__ import annotations

import math
from pathlib import Path

from grokcopy.errors import ConfigError
from grokcopy.run_dir import RunFolder, read_json, read_jsonl, sweep_record

_NUMBER = (int, float)


def _is_number(value) -> bool:
    return isinstance(value, _NUMBER) and not isinstance(value, bool)


def check_run_config(run_dir: Path) -> None:
    path = RunFolder(run_dir).run_config
    if not path.is_file():
        return
    config = read_json(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a JSON object of the run's settings, got {type(config).__name__}")
    for section in ("model", "data", "training"):
        if section in config and config[section] is not None and not isinstance(config[section], dict):
            raise ConfigError(f"{path}: {section!r} should be a JSON object, got {type(config[section]).__name__}")


def history_problem(records: list, numbers: tuple[str, ...] = ()) -> str | None:
    """Why a history is not one run's records in step order, or None."""
    previous = None
    for i, record in enumerate(records, 1):
        if not isinstance(record, dict):
            return f"line {i} is a JSON {type(record).__name__}, not a record"
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            return f"line {i}: step {step!r} is not a step number"
        if previous is not None and step == previous:
            return (f"step {step} appears twice (lines {i - 1} and {i}): two runs wrote into this folder, "
                    "and it cannot be read as one")
        if previous is not None and step < previous:
            return f"step {step} (line {i}) comes after step {previous}: two runs wrote into this folder"
        for key in numbers:
            value = record.get(key)
            if value is not None and (not _is_number(value) or not math.isfinite(value)):
                return f"line {i} (step {step}): {key} is {value!r}, not a number"
        previous = step
    return None


def check_histories(run_dir: Path) -> None:
    """Refuse, in one line naming the file, a run folder a report cannot read as one run."""
    run = RunFolder(run_dir)
    check_run_config(run.root)
    for path, numbers in ((run.copy_history, ("exact_match", "token_accuracy", "tokens", "loss")),
                          (run.induction_history, ("tokens",))):
        if path.is_file():
            problem = history_problem(read_jsonl(path), numbers)
            if problem:
                raise ConfigError(f"{path}: {problem}")


def sweep_members(folder: Path) -> list[dict] | None:
    """The members of a sweep folder's sweep.json (None when it has none), refused in one line when torn."""
    path = sweep_record(folder)
    if not path.is_file():
        return None
    record = read_json(path)
    members = record.get("members") if isinstance(record, dict) else None
    if not isinstance(members, list):
        raise ConfigError(f"{path}: not a sweep record (torn, or written by another tool): expected an object with "
                          "a list of members")
    for i, member in enumerate(members, 1):
        if not isinstance(member, dict) or not isinstance(member.get("name"), str) or not member["name"]:
            raise ConfigError(f"{path}: member {i} has no name")
    return members
