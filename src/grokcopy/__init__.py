"""grokcopy: watch causal LMs grok to copy, on top of transformers.Trainer."""

__version__ = "0.1.0"
