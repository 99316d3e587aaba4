"""Which branches of a series hold weights that are not their own, from the tree listing's sha256s alone.

Real suites are not clean. Pythia serves the final model under dozens of early step names
(EleutherAI/pythia#205), serves the final model's first shard under two mid-training steps
(pythia#206), and serves one blob under many consecutive early steps (pythia#195, step0 == step1 in
pythia#83; OLMo#915 likewise). Every weight file's sha256 is in the listing, so all of this is
known before a byte is downloaded:

- *duplicates*: revisions whose weight files are bit-identical share one analysis; the others get
  ``duplicate_of`` its *owner*, the revision whose step the weights most plausibly belong to:
  for the final model's weights (those on ``main``) the latest step holding them, for any other
  weights the earliest (training moves weights forward; a re-upload copies them to later names).
- *suspects*: a revision named as an earlier step than the final one whose weights equal the final
  model's, in whole or in one shard; a revision holding the weights of an earlier one although the
  revisions between them differ (the weights "went back"); a revision sharing one shard (not all)
  with a later revision. A suspect is recorded with its reason and left out of curves and
  landmarks unless asked for (``include_suspect``).

Each rule is a pure function of {revision: {weight file: sha256}} in training order, tested on
synthetic listings.
"""

from __future__ import annotations

from grokcopy.hub.revisions import parse_revision


def fingerprint(shards: dict[str, str]) -> tuple:
    """What makes two revisions' weights the same: the sorted sha256s of all their weight files."""
    return tuple(sorted(shards.values()))


def _is_checkpoint(name: str) -> bool:
    return parse_revision(name) is not None


def classify(order: list[str], shards: dict[str, dict[str, str]], final: dict[str, str] | None = None,
             final_name: str = "main") -> dict[str, dict]:
    """{revision: {"duplicate_of": owner or None, "suspect": reason or None}} for every revision of `order`
    (training order; its last checkpoint-named revision is the final step). `shards`: each revision's
    {weight file: sha256}; `final`: the final model's (main's), None when main holds no weights."""
    out = {name: {"duplicate_of": None, "suspect": None} for name in order}
    final_print = fingerprint(final) if final else None
    final_hashes = {h: f for f, h in (final or {}).items()}
    position = {name: i for i, name in enumerate(order)}

    groups: dict[tuple, list[str]] = {}
    for name in order:
        groups.setdefault(fingerprint(shards[name]), []).append(name)
    for key, members in groups.items():
        if key == final_print:
            checkpoints = [m for m in members if _is_checkpoint(m)] or members
            owner = checkpoints[-1]
            for m in members:
                if m != owner:
                    out[m]["duplicate_of"] = owner
                if position[m] < position[owner] and _is_checkpoint(m):
                    out[m]["suspect"] = (f"holds the final model's weights ({final_name}'s sha256, as {owner} does) "
                                         f"though named as an earlier step")
            continue
        owner = members[0]
        for previous, m in zip(members, members[1:]):
            out[m]["duplicate_of"] = owner
            between = order[position[previous] + 1:position[m]]
            if between:
                out[m]["suspect"] = (f"holds the weights of {owner} though {between[0]}"
                                     f"{' and others' if len(between) > 1 else ''} between them differ")

    for name in order:
        if out[name]["suspect"] or out[name]["duplicate_of"]:
            continue
        mine = shards[name]
        if final and fingerprint(mine) != final_print:
            shared = sorted(f for f, h in mine.items() if h in final_hashes)
            if shared:
                out[name]["suspect"] = (f"{_files(shared)} equal{'s' * (len(shared) == 1)} the final model's "
                                        f"({final_name}'s sha256); the rest differ")
                continue
        for later in order[position[name] + 1:]:
            theirs = set(shards[later].values())
            shared = sorted(f for f, h in mine.items() if h in theirs)
            if shared and fingerprint(shards[later]) != fingerprint(mine):
                out[name]["suspect"] = (f"{_files(shared)} equal{'s' * (len(shared) == 1)} {later}'s "
                                        f"(a later checkpoint); the rest differ")
                break
    return out


def _files(names: list[str]) -> str:
    return ("shard " if len(names) == 1 else "shards ") + ", ".join(names)
