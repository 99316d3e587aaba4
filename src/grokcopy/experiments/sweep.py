"""`grokcopy sweep`: the paper's comparisons (batch size, learning rate, regularisation) as one file.

A sweep file names a base config and the fields its members vary, so that every run of a
comparison differs only where it should (same init via the same seed, same everything else).
Members run one after another in this process (or `--parallel K` at once, each in its own process,
grokcopy.experiments.sweep_runner), each into `output_dir/<member>`; a finished member is skipped and
a half-finished one resumes, so an interrupted sweep is continued by running the same command again. Every member's config is validated before anything runs: a typo in member 7 must not
surface hours after member 1 started. `--print-commands` prints one launch command per member for
a cluster (torchrun / accelerate) instead.

    base: ../paper-162m.yaml          # a grokcopy config, relative to the sweep file
    output_dir: runs/sweeps/NAME      # members go to output_dir/<member name>
    fixed: {}                         # overrides applied to every member
    grid: {per_device_train_batch_size: [32, 64, 128]}   # cartesian product
    names: {per_device_train_batch_size: bs}              # short names: member "bs32-seed0"
    members: {baseline: {}, dropout: {attention_dropout: 0.1}}   # explicit members (x grid)
    seeds: [0, 1, 2]                  # crossed with everything else
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from grokcopy.run_dir import RunFolder, read_json, sweep_record, write_json_atomic
from grokcopy.training.config import ConfigError, GrokcopyArgumentParser, config_to_argv, load_config_file, parse_args

SWEEP_KEYS = ("base", "output_dir", "fixed", "grid", "names", "members", "seeds", "report")
# Report settings a sweep fixes for its experiment (written beside its archived members, experiment.json).
REPORT_KEYS = ("loss_target",)
# Hardware flags a machine without a GPU cannot accept; neutralised only to validate the rest of a
# config meant for another machine (--print-commands / --dry-run).
HARDWARE_NEUTRAL = ["--use_cpu", "true", "--bf16", "false", "--fp16", "false", "--tf32", "false"]
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclass
class Member:
    name: str
    overrides: dict  # what this member sets beyond the base config: fixed + its own fields
    output_dir: Path
    status: str = "new"  # new | partial | complete
    detail: str = ""


@dataclass
class Sweep:
    path: Path
    base: Path
    output_dir: Path
    varied: set[str]
    members: list[Member] = field(default_factory=list)
    report: dict = field(default_factory=dict)  # settings `grokcopy report` uses for these runs (REPORT_KEYS)

    def config(self, member: Member) -> dict:
        """The member's full config: base + fixed + its fields + its output_dir."""
        return {**load_config_file(self.base), **member.overrides, "output_dir": str(member.output_dir)}


def _value_name(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mapping(raw: dict, key: str) -> dict:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping")
    return value


def load_sweep(path: str | Path, output_dir: str | None = None) -> Sweep:
    """Read a sweep file into its members (not validated against the config fields yet: `validate`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file not found: {path}")
    raw = load_config_file(path)
    try:
        return _build(path, raw, output_dir)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _build(path: Path, raw: dict, output_dir: str | None) -> Sweep:
    unknown = sorted(set(raw) - set(SWEEP_KEYS))
    if unknown:
        raise ConfigError(f"unknown sweep key{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                          f"(expected {', '.join(SWEEP_KEYS)})")
    if not raw.get("base"):
        raise ConfigError("base: missing (the grokcopy config every member starts from)")
    base = Path(os.path.normpath(path.parent / raw["base"]))
    if not base.is_file():
        raise ConfigError(f"base: config file not found: {base}")
    out = output_dir or raw.get("output_dir")
    if not out:
        raise ConfigError("output_dir: missing (members go to output_dir/<member name>)")
    fixed, grid, names, explicit = (_mapping(raw, k) for k in ("fixed", "grid", "names", "members"))
    seeds = raw.get("seeds") or []
    if not isinstance(seeds, list):
        raise ConfigError("seeds: expected a list, e.g. [0, 1, 2]")
    if not grid and not explicit and not seeds:
        raise ConfigError("no members: grid, members and seeds are all empty")
    known = GrokcopyArgumentParser().field_names
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"grid: {key}: expected a non-empty list of values")
    for name, overrides in explicit.items():
        if not isinstance(overrides, dict):
            raise ConfigError(f"members: {name}: expected a mapping of field: value (or {{}})")
    member_fields = {k for o in explicit.values() for k in o}
    for where, keys in (("fixed", fixed), ("grid", grid), ("members", member_fields)):
        bad = sorted(set(keys) - known)
        if bad:
            raise ConfigError(f"{where}: unknown field{'s' if len(bad) > 1 else ''}: {', '.join(bad)}")
    if "output_dir" in set(fixed) | set(grid) | member_fields:
        raise ConfigError("output_dir: set by the sweep (output_dir/<member name>), not per member")
    bad_names = sorted(set(names) - set(grid))
    if bad_names:
        raise ConfigError(f"names: not grid fields: {', '.join(bad_names)}")
    if seeds and "seed" in set(grid) | member_fields:
        raise ConfigError("seed: given both in seeds and in grid/members")
    clash = sorted(set(grid) & member_fields)
    if clash:
        raise ConfigError(f"{', '.join(clash)}: varied both in grid and in members")
    axes = []
    if explicit:
        axes.append([(name, dict(o)) for name, o in explicit.items()])
    if grid:
        keys = list(grid)
        combos = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
        axes.append([("-".join(f"{names.get(k, k)}{_value_name(v)}" for k, v in c.items()), c) for c in combos])
    if seeds:
        axes.append([(f"seed{s}", {"seed": s}) for s in seeds])
    varied = set(grid) | member_fields | ({"seed"} if seeds else set())
    report = _mapping(raw, "report")
    bad = sorted(set(report) - set(REPORT_KEYS))
    if bad:
        raise ConfigError(f"report: unknown setting{'s' if len(bad) > 1 else ''}: {', '.join(bad)} "
                          f"(expected {', '.join(REPORT_KEYS)})")
    target = report.get("loss_target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float)) or target <= 0):
        raise ConfigError(f"report: loss_target: expected a positive number (a training loss), got {target!r}")
    sweep = Sweep(path=path, base=base, output_dir=Path(out), varied=varied, report=report)
    for combo in itertools.product(*axes):
        name = "-".join(n for n, _ in combo)
        overrides = dict(fixed)
        for _, o in combo:
            overrides.update(o)
        if not _SAFE_NAME.match(name):
            raise ConfigError(f"member name {name!r}: use letters, digits and . _ = + - only")
        if any(m.name == name for m in sweep.members):
            raise ConfigError(f"two members are both named {name!r}: give them distinct names")
        sweep.members.append(Member(name, overrides, sweep.output_dir / name))
    return sweep


def override_fields(overrides: list[str]) -> set[str]:
    """Field names set by command-line `--field value` overrides."""
    return {a[2:].split("=", 1)[0] for a in overrides if a.startswith("--")}


def select(sweep: Sweep, only: str | None) -> list[Member]:
    if not only:
        return sweep.members
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    names = [m.name for m in sweep.members]
    missing = [n for n in wanted if n not in names]
    if missing:
        raise ConfigError(f"--only: no member named {', '.join(missing)} (members: {', '.join(names)})")
    by_name = {m.name: m for m in sweep.members}
    return [by_name[n] for n in dict.fromkeys(wanted)]  # in the order given: long members first, seeds in turn


def validate(sweep: Sweep, members: list[Member], overrides: list[str], hardware_neutral: bool = False) -> dict:
    """parse_args every member's config (+ overrides) before anything runs; name -> parsed arguments.

    `hardware_neutral` also sets HARDWARE_NEUTRAL, to check a GPU config on a machine without one."""
    clash = sorted(override_fields(overrides) & (sweep.varied | {"output_dir"}))
    if clash:
        raise ConfigError(f"--{clash[0]}: the sweep sets this field per member; change it in {sweep.path} "
                          "(or --output_dir for the sweep's folder)")
    parsed = {}
    for member in members:
        try:
            parsed[member.name] = parse_args(sweep.config(member),
                                             list(overrides) + (HARDWARE_NEUTRAL if hardware_neutral else []))
        except ConfigError as err:
            raise ConfigError(f"{sweep.path}: member {member.name}: {err}") from None
    return parsed


def finished_steps(output_dir: Path) -> int | None:
    """Steps a finished run reached: summary.json's `steps` (else the final trainer_state.json's)."""
    run = RunFolder(output_dir)
    summary = run.read_summary()
    if not isinstance(summary, dict):
        return None
    if summary.get("steps") is not None:
        return summary["steps"]
    state = run.read_trainer_state()
    return state.get("global_step") if isinstance(state, dict) else None


def plan(member: Member, max_steps: int) -> None:
    """Set the member's status: complete (summary at max_steps), partial (has a checkpoint), or new."""
    from grokcopy.run_dir import last_complete_checkpoint

    steps = finished_steps(member.output_dir)
    if steps is not None and steps == max_steps:
        member.status, member.detail = "complete", f"{steps} steps"
        return
    last = last_complete_checkpoint(member.output_dir)
    if last is not None:
        member.status, member.detail = "partial", f"resume from {last.name}"
    elif RunFolder(member.output_dir).contents():  # an attempt that died before its first checkpoint
        member.status, member.detail = "new", f"starts over; the earlier attempt goes to {member.name}.previous-N"
    else:
        member.status, member.detail = "new", ""


def member_args(member: Member, overrides: list[str]) -> list[str]:
    """The overrides, plus how to treat the member's folder: resume a partial run; move aside an
    attempt that has nothing to resume from (a fresh run would refuse its folder otherwise)."""
    args, given = list(overrides), override_fields(overrides)
    if member.status == "partial" and "resume_from_checkpoint" not in given:
        args += ["--resume_from_checkpoint", "last"]
    elif member.status == "new" and RunFolder(member.output_dir).contents() and "overwrite_output_dir" not in given:
        args += ["--overwrite_output_dir", "true"]
    return args


def command(sweep: Sweep, member: Member, overrides: list[str], launcher: str | None = None, nproc: int | None = None,
            accelerate_config: str | None = None) -> str:
    """The shell command that trains one member (as `grokcopy train` would under the launcher)."""
    if launcher == "torchrun":
        head = ["torchrun", "--nproc_per_node", str(nproc or 1), "-m", "grokcopy.cli", "train"]
    elif launcher == "accelerate":
        head = ["accelerate", "launch"] + (["--config_file", accelerate_config] if accelerate_config else [])
        head += (["--num_processes", str(nproc)] if nproc else []) + ["-m", "grokcopy.cli", "train"]
    else:
        head = ["grokcopy", "train"]
    args = config_to_argv({"output_dir": str(member.output_dir), **member.overrides}) + member_args(member, overrides)
    return " ".join(shlex.quote(a) for a in [*head, str(sweep.base), *args])


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def disk_status(member: Member) -> str:
    return "complete" if member.status == "complete" else member.status.replace("new", "pending")


# What a member's own runner records when it finishes, beyond what its folder says.
_FINISHED_FIELDS = ("minutes", "final_exact_match")


def write_record(sweep: Sweep, records: dict, own: set[str] = frozenset()) -> None:
    """output_dir/sweep.json: every member, its status and folder (atomically; main process only).

    Members this process does not run (`--only` elsewhere) are read again from disk, so sweeps split
    across machines with `--only` do not overwrite each other's progress with stale states; what
    another invocation recorded of a member it finished (its minutes, final exact match) is kept."""
    if not is_main():
        return
    previous = read_json(sweep_record(sweep.output_dir))
    previous = {m.get("name"): m for m in previous.get("members", [])} if isinstance(previous, dict) else {}
    for member in sweep.members:
        if member.name not in own:
            plan(member, records[member.name]["max_steps"])
            record = records[member.name]
            record.update(status=disk_status(member), steps=finished_steps(member.output_dir))
            earlier = previous.get(member.name) or {}
            if record["status"] == "complete" and earlier.get("steps") == record["steps"]:
                record.update({k: earlier[k] for k in _FINISHED_FIELDS if k in earlier})

    sweep.output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(sweep_record(sweep.output_dir), {
        "sweep": str(sweep.path), "base": str(sweep.base), "output_dir": str(sweep.output_dir),
        "varied": sorted(sweep.varied), "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "members": [records[m.name] for m in sweep.members]})


def say(text: str) -> None:
    if is_main():
        print(text, flush=True)
