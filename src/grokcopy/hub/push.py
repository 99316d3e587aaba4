"""Push a training run to the Hub as a checkpoint series: one branch per checkpoint, Pythia-style.

`HubCheckpointCallback` sends every saved checkpoint to branch `step{N}` of `hub_model_id`
(weights, config, tokenizer, trainer state, that step's `copy_eval.json` and `induction.json`,
plots, and a model card), and moves `main` (or `hub_revision`) to the newest one, so anyone can
`from_pretrained(repo, revision="step1000")`. Why not Trainer's `hub_strategy`: it puts
checkpoints in folders of a single branch.

Pushes run on a background thread and never block or stop training. A failed push is logged
and retried with exponential backoff; local checkpoints are only read, never changed. Pushed
steps are recorded in `output_dir/hub_pushes.json`, so after a restart or resume every
checkpoint not yet pushed is pushed.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from grokcopy.errors import one_line
from grokcopy.run_dir import (
    PUSH_RECORD,
    RUN_FILES,
    checkpoint_dir,
    checkpoint_problem,
    checkpoint_step,
    checkpoints,
    write_text_atomic,
)

logger = logging.getLogger(__name__)

FINAL = -1  # the queue's marker for the run's final files (pushed to main once training has ended)
# Optimizer / scheduler / RNG states stay local: they double the upload and nobody analyses them.
LOCAL_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state", "training_args.bin", ".tmp")


def branch_name(step: int) -> str:
    return f"step{step}"


def run_files(output_dir: Path) -> list[Path]:
    """Run-level files that go to `main` beside the newest checkpoint (histories and figures)."""
    return [output_dir / n for n in RUN_FILES if (output_dir / n).is_file()]


class HubCheckpointCallback(TrainerCallback):
    """Push each checkpoint to its own branch in the background, retrying until it lands.

    Args: `repo_id`, `token`, `private` (as `hub_private_repo`), `main_branch` (`hub_revision` or
    main), `max_backoff` seconds between retries, `card` (a callable(output_dir, branches) -> str
    README text, see grokcopy.hub.model_card).
    """

    def __init__(self, repo_id: str, token: str | None = None, private: bool | None = None,
                 main_branch: str | None = None, max_backoff: float = 60.0, card=None, timeout: float = 60.0):
        self.repo_id = repo_id
        self.timeout = timeout
        self.token = token
        self.private = private
        self.main_branch = main_branch or "main"
        self.max_backoff = max_backoff
        self.card = card
        self.queue: queue.Queue = queue.Queue()
        self.pending: set[int] = set()
        self.pushed: set[int] = set()
        self.output_dir: Path | None = None
        self.failures = 0
        self.wait_seconds = 0.0  # time callers spent in wait(), e.g. at the end of training
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._repo_ready = False
        self.refused: str | None = None  # why the Hub refused (401/403/404): no more retries

    # ---- Trainer events (main process only) ----
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._enqueue_unpushed(args.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._write_record()  # names the repo, so `grokcopy push` can finish what a crash left

    def on_train_end(self, args, state, control, **kwargs):
        """Wait for the last pushes (up to hub_push_wait, 600 s in a Trainer without it): the pushing
        thread is a daemon, and a script that ends with train() would drop what is still queued."""
        if state.is_world_process_zero and self.pending:
            timeout = getattr(args, "hub_push_wait", 600.0)
            if not self.wait(timeout):
                logger.warning("hub: %d checkpoint(s) not pushed after %.0f s (%s); `grokcopy push %s` sends them",
                               len(self.pending), timeout, sorted(self.pending), args.output_dir)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.output_dir = Path(args.output_dir)
            self._enqueue(state.global_step)

    def push_pending(self, output_dir: str | Path, timeout: float | None = None) -> bool:
        """Push every checkpoint of `output_dir` not yet on the Hub (no training); True when all landed."""
        self._enqueue_unpushed(output_dir)
        return self.wait(timeout)

    def _enqueue_unpushed(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.pushed = set(self._read_record().get("pushed", []))
        for folder in checkpoints(self.output_dir):
            step = checkpoint_step(folder)
            problem = checkpoint_problem(folder)
            if problem:
                logger.warning("hub: %s is incomplete (%s); not pushed", folder.name, problem)
            elif step not in self.pushed:
                logger.info("hub: %s is not on the Hub yet; queueing it", folder.name)
                self._enqueue(step)

    # ---- queue and worker ----
    def _enqueue(self, step: int) -> None:
        with self._lock:
            if step in self.pending or step in self.pushed:
                return
            self.pending.add(step)
        self.queue.put(step)
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="grokcopy-hub-push", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            try:
                step = self.queue.get(timeout=1.0)
            except queue.Empty:
                if not self.pending:
                    return
                continue
            delay = 1.0
            while self.refused is None:
                try:
                    self._push_final() if step == FINAL else self._push(step)
                    break
                except Exception as err:  # noqa: BLE001 - any failure is retried or reported, none reaches training
                    self.failures += 1
                    what = "the final files" if step == FINAL else f"step {step}"
                    if is_refusal(err):  # a bad token or no permission: retrying cannot help
                        self.refused = f"{type(err).__name__}: {one_line(err)[:200]}"
                        logger.error("hub: the Hub refused pushing %s to %s (%s); nothing more is sent: fix the "
                                     "token or permissions, then `grokcopy push %s`", what, self.repo_id, self.refused,
                                     self.output_dir)
                        break
                    logger.warning("hub: pushing %s to %s failed (%s: %s); retrying in %.0f s", what,
                                   self.repo_id, type(err).__name__, one_line(err)[:200], delay)
                    time.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
            with self._lock:
                if self.refused is not None:  # nothing more will land: drop the queue
                    self.pending.clear()
                    return
                self.pending.discard(step)
                if step == FINAL:
                    continue
                self.pushed.add(step)
                self._write_record()

    def push_final(self, output_dir: str | Path, timeout: float | None = None) -> bool:
        """Put the run's final files (histories, figures, summary.json, the card with the final numbers)
        on `main`: they are written after the last checkpoint's push. True when they landed."""
        self.output_dir = Path(output_dir)
        if self.refused is not None:
            return False
        with self._lock:
            self.pending.add(FINAL)
        self.queue.put(FINAL)
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="grokcopy-hub-push", daemon=True)
            self._worker.start()
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued push has landed (True), the timeout passes or the Hub refused (False)."""
        start = time.monotonic()
        try:
            while self.pending:
                if timeout is not None and time.monotonic() - start > timeout:
                    return False
                time.sleep(0.05)
            return self.refused is None
        finally:
            self.wait_seconds += time.monotonic() - start

    # ---- the push itself ----
    def _push(self, step: int) -> None:
        from huggingface_hub import CommitOperationAdd

        api = self._api()
        folder = checkpoint_dir(self.output_dir, step)
        if not folder.is_dir():  # rotated away by save_total_limit before it could be pushed
            logger.warning("hub: %s no longer exists locally; skipping it", folder.name)
            return
        files = [(str(p.relative_to(folder)), p) for p in sorted(folder.rglob("*"))
                 if p.is_file() and not any(tag in p.name for tag in LOCAL_ONLY)]
        branches = sorted(self.pushed | {step})
        readme = self.card(self.output_dir, [branch_name(s) for s in branches]) if self.card else None
        if readme:  # ours replaces the stub card PEFT writes into an adapter checkpoint
            files = [(name, src) for name, src in files if name != "README.md"] + [("README.md", readme.encode())]

        def operations(extra=()):
            # Fresh objects per commit: a CommitOperationAdd remembers its upload state.
            return [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(src) if isinstance(src, Path) else src)
                    for name, src in [*files, *extra]]

        branch = branch_name(step)
        api.create_branch(self.repo_id, branch=branch, exist_ok=True)
        api.create_commit(self.repo_id, operations=operations(), revision=branch,
                          commit_message=f"Checkpoint at step {step}")
        if step >= max(self.pushed | {step}):
            if self.main_branch != "main":
                api.create_branch(self.repo_id, branch=self.main_branch, exist_ok=True)
            api.create_commit(self.repo_id, operations=operations((p.name, p) for p in run_files(self.output_dir)),
                              revision=self.main_branch, commit_message=f"{self.main_branch} follows step {step}")
        logger.info("hub: pushed checkpoint-%d to %s@%s", step, self.repo_id, branch)

    def _api(self):
        """An HfApi with our timeout; the repo is created on first use."""
        from huggingface_hub import HfApi

        use_timeout(self.timeout)
        api = HfApi(token=self.token)
        if not self._repo_ready:
            api.create_repo(self.repo_id, private=self.private, exist_ok=True)
            self._repo_ready = True
        return api

    def _push_final(self) -> None:
        from huggingface_hub import CommitOperationAdd

        api = self._api()
        files = [(p.name, p) for p in run_files(self.output_dir)]
        if self.card:
            files.append(("README.md", self.card(self.output_dir, [branch_name(s) for s in sorted(self.pushed)]).encode()))
        if not files:
            return
        if self.main_branch != "main":
            api.create_branch(self.repo_id, branch=self.main_branch, exist_ok=True)
        api.create_commit(self.repo_id, revision=self.main_branch, commit_message="Final histories, figures and summary",
                          operations=[CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(src) if isinstance(
                              src, Path) else src) for name, src in files])
        logger.info("hub: pushed the run's final files to %s@%s", self.repo_id, self.main_branch)

    def _read_record(self) -> dict:
        path = self.output_dir / PUSH_RECORD
        try:
            return json.loads(path.read_text()) if path.is_file() else {}
        except json.JSONDecodeError:
            return {}

    def _write_record(self) -> None:
        write_text_atomic(self.output_dir / PUSH_RECORD,
                          json.dumps({"repo_id": self.repo_id, "pushed": sorted(self.pushed)}) + "\n")


def is_refusal(err: BaseException) -> bool:
    """401/403/404 from the Hub: a bad token, no permission or no such repo. Retrying cannot help, unlike
    408, 429, 5xx and network errors."""
    from huggingface_hub.errors import HfHubHTTPError

    response = getattr(err, "response", None)
    return isinstance(err, HfHubHTTPError) and response is not None and response.status_code in (401, 403, 404)


def use_timeout(seconds: float) -> None:
    """Give huggingface_hub's shared HTTP client a timeout: its default (None) lets a hanging server
    block a push forever. A client that already has a timeout (the user's own factory) is left alone."""
    from huggingface_hub import get_session

    session = get_session()
    if all(value is None for value in session.timeout.as_dict().values()):
        session.timeout = seconds


def push_metric(space_id: str, token: str | None = None, private: bool | None = None) -> str:
    """Upload metrics/copy_accuracy as a Hub Space that `evaluate.load(space_id)` loads.

    evaluate looks for `<space name>.py` in the Space, so the module is uploaded under that name.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from grokcopy.resources import metric_path

    if "/" not in space_id:
        raise ValueError(f"space id {space_id!r}: expected NAMESPACE/NAME")
    name = space_id.split("/")[-1]
    folder = metric_path()
    api = HfApi(token=token)
    api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    operations = [CommitOperationAdd(path_in_repo=f"{name}.py" if p.name == "copy_accuracy.py" else p.name,
                                     path_or_fileobj=str(p))
                  for p in sorted(folder.iterdir()) if p.is_file() and p.suffix in (".py", ".md", ".txt")]
    api.create_commit(space_id, repo_type="space", operations=operations, commit_message="Upload copy_accuracy metric")
    return space_id
