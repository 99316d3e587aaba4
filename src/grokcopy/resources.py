"""Files grokcopy ships beside its code: the copy-accuracy metric, the trainer configs, the card templates.

They live in the repository's top-level `metrics/`, `trainer_configs/` and `model_cards/` (the design
card's layout, where users read and edit them) and are installed as the package data
`grokcopy.metrics`, `grokcopy.trainer_configs` and `grokcopy.model_cards` (see setup.py), so the same
`importlib.resources` lookup finds them in an editable install and in a wheel.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def _resource(package: str, *parts: str) -> Path:
    path = Path(str(files(f"grokcopy.{package}").joinpath(*parts)))
    if not path.exists():
        raise FileNotFoundError(f"{'/'.join((package, *parts))} is missing from this grokcopy installation")
    return path


def metric_path() -> Path:
    """Folder of the `copy_accuracy` evaluate module (what `evaluate.load` takes)."""
    return _resource("metrics", "copy_accuracy")


def trainer_config_path(name: str) -> Path:
    """A config of trainer_configs/, e.g. `demo.yaml`."""
    return _resource("trainer_configs", name)


def model_card_template(name: str = "checkpoint_series.md") -> Path:
    """A model card template of model_cards/."""
    return _resource("model_cards", name)
