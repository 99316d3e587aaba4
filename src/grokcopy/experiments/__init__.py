"""Experiments built on the stages: the CPU demo, sweeps of runs, and the report that compares them."""
