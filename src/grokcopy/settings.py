"""What the analyses' settings dataclasses share: read from, and written as, `prefix` + name fields.

`CopyTaskConfig` (copy_*) and `InductionConfig` (induction_*) are each carried by the training arguments, a
callback and run_config.json under prefixed names; this mixin is the one place that maps between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields


class PrefixedSettings:
    """Mixin for a settings dataclass whose fields are carried elsewhere as `prefix` + name."""

    @classmethod
    def from_settings(cls, settings, prefix: str = ""):
        """The config from a mapping or an object holding each field as `prefix` + name; absent or None: the
        default."""
        get = settings.get if isinstance(settings, Mapping) else (lambda key: getattr(settings, key, None))
        values = {f.name: get(prefix + f.name) for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if v is not None})

    def settings(self, prefix: str = "") -> dict:
        """Every field as `prefix` + name: value (as in run_config.json)."""
        return {prefix + f.name: getattr(self, f.name) for f in fields(self)}
