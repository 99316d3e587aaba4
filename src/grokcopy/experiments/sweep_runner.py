"""Running a sweep's members: one after another in this process, or `parallel` K at once.

On 2 CPU cores two trainings with 2 threads each slow each other down 6-10x (measured), so parallel
members each get `OMP_NUM_THREADS` = cores / K and run in their own process (`grokcopy train`, its
log in `<member>/train.log`). With `archive`, each finished member's histories (no weights) are copied
to `archive/<member>/` the moment it finishes, ready to be committed (docs/reproduction/...).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from grokcopy.devices import has_accelerator, release_memory
from grokcopy.errors import EXIT_PREEMPTED, ConfigError, TrainingInterrupted, one_line
from grokcopy.experiments.options import SweepOptions
from grokcopy.experiments.sweep import (
    Member,
    Sweep,
    command,
    disk_status,
    finished_steps,
    load_sweep,
    member_args,
    plan,
    say,
    select,
    validate,
    write_record,
)
from grokcopy.run_dir import archive_histories, sweep_record, write_experiment
from grokcopy.training.callbacks import HandlesPreemption
from grokcopy.training.config import config_to_argv, parse_args


def run_sweep(path, overrides: list[str] = (), options: SweepOptions = SweepOptions()) -> int:
    """Validate every selected member, then print commands (`print_commands`), print the plan (`dry_run`),
    or train the members that are not complete, one after another (or `parallel` at once); `overrides`
    (`--field value` pairs) apply to every member. 1 if any failed."""
    only, print_commands, dry_run, parallel, archive = (options.only, options.print_commands, options.dry_run,
                                                        options.parallel, options.archive)
    overrides = list(overrides)
    sweep = load_sweep(path, options.output_dir)
    members = select(sweep, only)
    neutral = (print_commands or dry_run) and not has_accelerator()
    parsed = validate(sweep, sweep.members, overrides, hardware_neutral=neutral)  # all, even with --only
    for member in sweep.members:
        plan(member, parsed[member.name][2].max_steps)
    if print_commands:
        for member in members:
            if member.status == "complete":
                print(f"# {member.name}: complete ({member.detail})")
            else:
                print(command(sweep, member, overrides, options.launcher, options.nproc, options.accelerate_config))
        return 0
    records = {m.name: {"name": m.name, "overrides": m.overrides, "output_dir": str(m.output_dir),
                        "status": disk_status(m), "max_steps": parsed[m.name][2].max_steps,
                        "steps": finished_steps(m.output_dir)} for m in sweep.members}
    todo = [m for m in members if m.status != "complete"]
    own = {m.name for m in todo}
    for i, member in enumerate(members, 1):
        what = {"complete": "complete, skipped", "partial": "partial, will resume", "new": "will run"}[member.status]
        if dry_run or member.status == "complete":
            say(f"[{i}/{len(members)}] {member.name}: {what}" + (f" ({member.detail})" if member.detail else ""))
    if dry_run:
        return 0
    write_record(sweep, records, own)
    if archive:
        write_experiment(archive, sweep.path, sweep.report)
    if parallel > 1:
        failed = run_parallel(sweep, todo, overrides, records, own, parallel, archive)
    else:
        failed = 0
        for i, member in enumerate(members, 1):
            if member.status == "complete":
                continue
            ok = _run_member(sweep, member, overrides, records, own, f"[{i}/{len(members)}]")
            failed += not ok
            if ok and archive:
                archive_histories(member.output_dir, Path(archive) / member.name)
    done = sum(records[m.name]["status"] == "complete" for m in members)
    say(f"sweep {sweep.path.name}: {done}/{len(members)} complete, {len(todo) - failed} trained now, "
         f"{failed} failed; {sweep_record(sweep.output_dir)}")
    return 1 if failed else 0


def _run_member(sweep: Sweep, member: Member, overrides: list[str], records: dict, own: set[str],
                counter: str) -> bool:
    """Train one member into its folder (resuming a partial one); record the outcome in sweep.json."""
    from grokcopy.training.pipeline import run_training

    args = member_args(member, overrides)
    record = records[member.name]
    say(f"{counter} {member.name}: {'resuming' if member.status == 'partial' else 'training'} "
         f"-> {member.output_dir}" + (f" ({member.detail})" if member.detail else ""))
    record["status"] = "running"
    write_record(sweep, records, own)
    start = time.time()
    try:
        summary = run_training(*parse_args(sweep.config(member), args))
    except KeyboardInterrupt as err:  # Ctrl-C or a preemption signal: its checkpoint is saved, the sweep stops
        record.update(status="interrupted", error=one_line(err) or "interrupted")
        write_record(sweep, records, own)
        raise
    except (ConfigError, RuntimeError, OSError, ValueError) as err:
        record.update(status="failed", error=one_line(err))
        say(f"{counter} {member.name}: FAILED: {record['error']}")
        write_record(sweep, records, own)
        return False
    finally:
        release_memory()
    minutes = (time.time() - start) / 60
    record.update(status="complete", steps=summary.get("steps") or finished_steps(member.output_dir),
                  final_exact_match=summary.get("final_exact_match"), minutes=round(minutes, 2))
    record.pop("error", None)
    em = summary.get("final_exact_match")
    say(f"{counter} {member.name}: done in {minutes:.1f} min, {record['steps']} steps"
         + (f", copy exact match {em:.3f}" if em is not None else ""))
    write_record(sweep, records, own)
    return True


def _argv(sweep: Sweep, member: Member, overrides: list[str]) -> list[str]:
    args = config_to_argv({"output_dir": str(member.output_dir), **member.overrides}) + member_args(member, overrides)
    return [sys.executable, "-m", "grokcopy.cli", "train", str(sweep.base), *args]


class SignalRelay(HandlesPreemption):
    """While a parallel sweep runs: Ctrl-C, SIGTERM or SIGUSR1 to the sweep is passed on, once, to every
    member (each saves a checkpoint at its step boundary and stops); a second one stops them at once.

    Members run in their own session, so a terminal's Ctrl-C reaches them only through here (twice would
    be "stop at once"), and a scheduler that signals only the sweep (Kubernetes: PID 1) reaches them too."""

    def __init__(self, running: dict):
        self.running, self.received = running, None

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        for proc in self.running:
            if proc.poll() is None:
                proc.send_signal(signum)
        if self.received:
            raise KeyboardInterrupt
        self.received = name
        say(f"{name}: passed to {len(self.running)} running member(s); each saves a checkpoint and stops "
            "(again to stop them at once)")


def run_parallel(sweep: Sweep, todo: list[Member], overrides: list[str], records: dict, own: set[str], k: int,
                 archive: str | None = None) -> int:
    """Train `todo` K at a time, each in its own `grokcopy train` process with cores / K threads; return
    how many failed. A signal stops every member at a checkpoint (SignalRelay); each resumes from it on a
    rerun, and sweep.json says "interrupted" until then."""
    threads = max(1, (os.cpu_count() or 1) // k)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    queue, running, failed = list(todo), {}, 0
    say(f"{len(queue)} members, {k} at once, {threads} thread{'s' * (threads > 1)} each")
    relay = SignalRelay(running)
    try:
        with relay:
            while queue or running:
                while queue and len(running) < k and not relay.received:
                    member = queue.pop(0)
                    member.output_dir.mkdir(parents=True, exist_ok=True)
                    log = open(member.output_dir / "train.log", "a")
                    proc = subprocess.Popen(_argv(sweep, member, overrides), stdout=log, stderr=subprocess.STDOUT,
                                            env=env, start_new_session=True)
                    running[proc] = (member, log, time.time())
                    records[member.name]["status"] = "running"
                    say(f"{member.name}: {'resuming' if member.status == 'partial' else 'training'} "
                        f"-> {member.output_dir} (log: train.log)")
                    write_record(sweep, records, own)
                if relay.received and not running:
                    break
                time.sleep(1.0)
                for proc in [p for p in running if p.poll() is not None]:
                    failed += _finished(proc, running.pop(proc), records, archive, relay.received)
                    write_record(sweep, records, own)
    except KeyboardInterrupt:  # the second signal: members were told to stop at once
        for proc, (member, log, _) in running.items():
            proc.wait()
            log.close()
            records[member.name]["status"] = "interrupted"
        write_record(sweep, records, own)
        raise TrainingInterrupted(f"{relay.received or 'interrupted'}: sweep stopped at once",
                                  130 if relay.received in (None, "SIGINT") else EXIT_PREEMPTED) from None
    if relay.received:
        raise TrainingInterrupted(f"{relay.received}: sweep stopped, its running members at a checkpoint",
                                  130 if relay.received == "SIGINT" else EXIT_PREEMPTED)
    return failed


def _finished(proc, entry, records: dict, archive: str | None, interrupted: str | None) -> int:
    """Record a member process that ended; 1 if it failed."""
    member, log, start = entry
    log.close()
    record = records[member.name]
    minutes = round((time.time() - start) / 60, 2)
    if proc.returncode == 0:
        record.update(status="complete", steps=finished_steps(member.output_dir), minutes=minutes)
        record.pop("error", None)
        if archive:
            archive_histories(member.output_dir, Path(archive) / member.name)
        say(f"{member.name}: done in {minutes:.1f} min, {record['steps']} steps")
        return 0
    lines = (member.output_dir / "train.log").read_text(errors="replace").strip().splitlines()
    last = one_line(lines[-1] if lines else f"exit {proc.returncode}")
    if interrupted:
        record.update(status="interrupted", error=last)
        say(f"{member.name}: stopped ({last})")
        return 0
    record.update(status="failed", error=last)
    say(f"{member.name}: FAILED: {last}")
    return 1
