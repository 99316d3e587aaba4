"""Reading a Hub repo's checkpoint series without downloading it: branches, tags and each revision's files.

The tree listing of a revision carries every LFS file's sha256, so which files a revision needs
(config, weights, tokenizer, stored results) and whether its weights equal another revision's are
both known before any download.
"""

from __future__ import annotations

import re

from grokcopy.errors import SeriesError, one_line
from grokcopy.hub.revisions import parse_revision, revision_sort_key
from grokcopy.run_dir import CHECKPOINT_COPY_EVAL, CHECKPOINT_INDUCTION, TRAINER_STATE

# Files a revision may hold that the analysis reads (weights are chosen separately).
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model", "spiece.model",
                   "chat_template.jinja", "chat_template.json")
RESULT_FILES = (TRAINER_STATE, CHECKPOINT_INDUCTION, CHECKPOINT_COPY_EVAL)

COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
BIN_WEIGHTS_RE = re.compile(r"^(?:pytorch_model|model)(?:-\d+-of-\d+)?\.bin$")


def http_errors() -> tuple[type[BaseException], ...]:
    from huggingface_hub.errors import HfHubHTTPError

    # huggingface_hub's HTTP client errors (httpx / httpx2: connection refused, timeouts) and OSError.
    return (OSError,) + tuple(c for c in HfHubHTTPError.__mro__ if c.__name__ == "HTTPError")


def list_refs(api, repo_id: str) -> tuple[dict[str, str], dict[str, str]]:
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id)
    except RepositoryNotFoundError:
        raise SeriesError(f"{repo_id}: no such model repository on {api.endpoint} (or no access to it)") from None
    except http_errors() as err:
        raise SeriesError(f"{repo_id}: cannot list the repository's branches: {one_line(err)}") from None
    return ({b.name: b.target_commit for b in refs.branches}, {t.name: t.target_commit for t in refs.tags})


def plan_files(repo_id: str, revision: str, entries) -> dict:
    """Which root files of a revision to download, and its weights' fingerprint (sha256 set)."""
    from huggingface_hub.hf_api import RepoFile

    files = {e.path: e for e in entries if isinstance(e, RepoFile) and "/" not in e.path}
    weights = sorted(p for p in files if p.endswith(".safetensors") and not p.startswith("adapter_model"))
    index = [p for p in files if p.endswith(".safetensors.index.json")]
    if not weights:
        weights = sorted(p for p in files if BIN_WEIGHTS_RE.match(p))
        index = [p for p in files if p.endswith(".bin.index.json")]
    adapter = not weights and "adapter_config.json" in files
    if adapter:  # a PEFT (LoRA) checkpoint: analysed on top of its base model
        weights = [p for p in ("adapter_model.safetensors", "adapter_model.bin") if p in files][:1]
    if not weights:
        raise SeriesError(f"{repo_id}@{revision}: no model weights (*.safetensors, pytorch_model*.bin or a PEFT "
                          f"adapter) in the revision (files: {', '.join(sorted(files)) or 'none'})")
    if not adapter and "config.json" not in files:
        raise SeriesError(f"{repo_id}@{revision}: no config.json in the revision")
    shards = {p: file_hash(files[p]) for p in weights}
    tokenizer_files = [p for p in files if p in TOKENIZER_FILES or p.endswith(".tiktoken")]
    wanted = set(CONFIG_FILES) | set(TOKENIZER_FILES) | set(RESULT_FILES) | {"adapter_config.json"}
    extra = [p for p in files if p in wanted or p.endswith(".tiktoken")]
    return {"weight_files": weights, "weights_sha256": sorted(shards.values()), "weight_shards": shards,
            "adapter": adapter, "tokenizer_key": sorted((p, file_hash(files[p])) for p in tokenizer_files),
            "files": sorted(set(weights) | set(index) | set(extra)),
            "has_tokenizer": any(p in TOKENIZER_FILES[:3] or p in ("tokenizer.model", "vocab.json") for p in files),
            "weights_bytes": sum(files[p].size for p in weights)}


def file_hash(entry) -> str:
    """An LFS file's sha256 (of its bytes), else the git blob id of a small file."""
    return entry.lfs.sha256 if entry.lfs is not None else f"git-sha1:{entry.blob_id}"


def list_revision(api, repo_id: str, revision: str, commit: str) -> dict:
    from huggingface_hub.errors import RevisionNotFoundError

    try:
        # The tree entries of LFS files carry their sha256 (RepoFile.lfs.sha256), no expand needed.
        entries = list(api.list_repo_tree(repo_id, revision=commit))
    except RevisionNotFoundError:
        raise SeriesError(f"{repo_id}: revision {revision!r} does not exist") from None
    except http_errors() as err:
        raise SeriesError(f"{repo_id}@{revision}: cannot list the revision's files: {one_line(err)}") from None
    return plan_files(repo_id, revision, entries)


def named_revisions(repo_id: str, revisions, branches: dict, tags: dict) -> dict[str, str]:
    """{name: commit} of explicitly named revisions (branches, tags or full commit ids)."""
    if isinstance(revisions, str):
        revisions = revisions.split(",")
    names = [r.strip() for r in revisions if r and r.strip()]
    if not names:
        raise SeriesError(f"{repo_id}: no revisions given")
    out = {}
    for name in dict.fromkeys(names):
        if name in branches:
            out[name] = branches[name]
        elif name in tags:
            out[name] = tags[name]
        elif COMMIT_RE.match(name):
            out[name] = name
        else:
            known = sorted(branches, key=revision_sort_key)
            shown = ", ".join(known[:8]) + (f", ... ({len(known)} branches)" if len(known) > 8 else "")
            raise SeriesError(f"{repo_id}: revision {name!r} does not exist (branches: {shown})")
    return out


def checkpoint_refs(branches: dict, tags: dict) -> dict[str, str]:
    """{name: commit} of every branch, and every tag, named like a checkpoint (a branch wins a shared name)."""
    named = {**tags, **branches}
    return {name: commit for name, commit in named.items() if parse_revision(name) is not None}
