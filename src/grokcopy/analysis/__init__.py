"""Analyses of a model or of a run's histories: induction heads, OV circuits, grokking landmarks, figures.

They take a model or records, never the trainer: the same code serves a training run, a saved
model and a Hub checkpoint series.
"""
