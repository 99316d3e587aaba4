"""The typed arguments of `grokcopy report` and `grokcopy sweep`, defined once: the CLI's flags, their
defaults and help derive from these fields (cli_commands.add_settings), and the library takes these
objects. Light on purpose: the command line reads it to build its flags."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from grokcopy.errors import ConfigError


@dataclass(frozen=True)
class ReportConfig:
    """What `grokcopy report` reads and how it measures: the report's settings, defined once (the CLI's
    flags and `build_report`'s defaults derive from these fields)."""

    runs: list[str]  # run folders, sweep folders (their members) or `grokcopy series` folders
    out: str  # the folder for report.md, report.json and the figures
    jump_threshold: float = field(default=0.5, metadata={
        "help": "copy exact match that defines the jump (first interpolated step reaching it)"})
    loss_target: float | None = field(default=None, metadata={
        "help": "training loss (nats) every run's steps and tokens are measured to (default: the highest of the "
                "runs' lowest smoothed losses + 5% of the fall)"})
    loss_window: int = field(default=5, metadata={"help": "logged losses in the moving average", "min": 1})
    held_out_from: int | None = field(default=None, metadata={
        "help": "seeds >= SEED were never used to choose the recipe: report their rate of runs that grok apart "
                "from the others", "metavar": "SEED"})
    threshold: float = field(default=0.3, metadata={"help": "induction score I of a formed head"})

    def settings(self) -> dict:
        """The measurement settings: every field but the runs and the output folder."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("runs", "out")}


@dataclass(frozen=True)
class SweepOptions:
    """How `grokcopy sweep` runs a sweep file's members (the CLI's flags derive from these fields)."""

    only: str | None = field(default=None, metadata={
        "help": "comma-separated member names to run, in this order (default: all, in the file's order)"})
    output_dir: str | None = field(default=None, metadata={
        "help": "the sweep's folder (default: its output_dir); members go below it"})
    print_commands: bool = field(default=False, metadata={"help": "print one train command per member instead"})
    launcher: Literal["torchrun", "accelerate"] | None = field(default=None, metadata={
        "help": "the printed commands' launcher"})
    nproc: int | None = field(default=None, metadata={
        "help": "the printed commands' processes per member (torchrun --nproc_per_node)", "min": 1})
    accelerate_config: str | None = field(default=None, metadata={
        "help": "the printed commands' accelerate launch --config_file"})
    dry_run: bool = field(default=False, metadata={"help": "validate every member and print the plan only"})
    parallel: int = field(default=1, metadata={
        "help": "train K members at once, each in its own process with cores/K threads", "metavar": "K"})
    archive: str | None = field(default=None, metadata={
        "help": "copy each finished member's histories (no weights) to DIR/<member>, e.g. "
                "docs/reproduction/<sweep>", "metavar": "DIR"})

    def __post_init__(self):
        if self.parallel < 1:
            raise ConfigError(f"parallel: expected a positive number of members at once, got {self.parallel}")
        if (self.launcher or self.nproc or self.accelerate_config) and not self.print_commands:
            raise ConfigError("launcher, nproc and accelerate_config: these go with print_commands (to run a sweep "
                              "on several GPUs in this process, launch `grokcopy sweep` itself under torchrun)")
