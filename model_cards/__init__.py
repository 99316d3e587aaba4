"""Package data: `grokcopy.resources` finds these files with importlib.resources (see setup.py)."""
