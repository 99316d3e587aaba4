"""Push a training run to the Hub as a checkpoint series: one branch per checkpoint, Pythia-style.

`HubCheckpointCallback` sends every saved checkpoint to branch `step{N}` of `hub_model_id`
(weights, config, tokenizer, trainer state, that step's `copy_eval.json` and `induction.json`,
plots, and a model card), and moves `main` (or `hub_revision`) to the newest one, so anyone can
`from_pretrained(repo, revision="step1000")`. Why not Trainer's `hub_strategy`: it puts
checkpoints in folders of a single branch.

Pushes are huggingface_hub's background commits (`HfApi.run_as_future`: one thread, run in the
order queued), so they never block or stop training. A failed push is logged and retried with
exponential backoff (1 s, doubled after each failure, at most `max_backoff`): 408, 429, 5xx and
network errors alike; 401/403/404 (a bad token, no permission, no such repo) stop all pushing with
one error line, since retrying cannot help. Local checkpoints are only read, never changed. Pushed
steps are recorded in the run folder's `hub_pushes.json`, so after a restart or resume every
checkpoint not yet pushed is pushed. At the end of training `on_train_end` waits for the queued
pushes (up to `hub_push_wait`) and names those that did not land; they go on in the background.
huggingface_hub's thread is joined when Python exits (as the futures of the Trainer's own pushes
are): `close()` gives up what has not landed, for `grokcopy push` to send later (`grokcopy train`
closes after its final wait, so a run never hangs on an unreachable Hub).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from pathlib import Path

from transformers import TrainerCallback

from grokcopy.errors import one_line
from grokcopy.run_dir import RunFolder, checkpoint_problem, checkpoint_step

logger = logging.getLogger(__name__)

FINAL = -1  # the key of the push of the run's final files (to main, once training has ended)
FIRST_BACKOFF = 1.0  # seconds before the first retry; doubled after each failure, up to max_backoff
# Optimizer / scheduler / RNG states stay local: they double the upload and nobody analyses them.
LOCAL_ONLY = ("optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state", "training_args.bin", ".tmp")


def branch_name(step: int) -> str:
    return f"step{step}"


class HubCheckpointCallback(TrainerCallback):
    """Push each checkpoint to its own branch in the background, retrying until it lands.

    Args: `repo_id`, `token`, `private` (as `hub_private_repo`), `main_branch` (`hub_revision` or
    main), `max_backoff` seconds between retries, `card` (a callable(output_dir, branches) -> str
    README text, see grokcopy.hub.model_card), `timeout` of one HTTP request.
    `pending`: the steps (FINAL: the final files) whose push has not ended; `pushed`: the steps on
    the Hub; `failures`: failed attempts; `refused`: why the Hub refused, if it did.
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
        self.pushed: set[int] = set()
        self.output_dir: Path | None = None
        self.failures = 0
        self.wait_seconds = 0.0  # time callers spent in wait(), e.g. at the end of training
        self.refused: str | None = None  # why the Hub refused (401/403/404): no more retries
        self._futures: dict[int, concurrent.futures.Future] = {}  # step (or FINAL) -> its push; True once landed
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._api = None
        self._repo_ready = False

    @property
    def run(self) -> RunFolder:
        return RunFolder(self.output_dir)

    @property
    def pending(self) -> set[int]:
        return {key for key, future in list(self._futures.items()) if not future.done()}

    # ---- Trainer events (main process only) ----
    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._enqueue_unpushed(args.output_dir)

    def on_train_end(self, args, state, control, **kwargs):
        """The final wait: up to hub_push_wait (600 s in a Trainer without it) for the queued pushes, so a
        script that ends with train() has its checkpoints on the Hub; what did not land is named."""
        if state.is_world_process_zero and self.pending:
            timeout = getattr(args, "hub_push_wait", 600.0)
            if not self.wait(timeout) and self.refused is None:
                left = sorted(self.pending)
                logger.warning("hub: %d checkpoint(s) not pushed after %.0f s (%s); they go on in the background, "
                               "or `grokcopy push %s` sends them", len(left), timeout, left, args.output_dir)

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.output_dir = Path(args.output_dir)
            self._enqueue(state.global_step)

    def push_pending(self, output_dir: str | Path, timeout: float | None = None) -> bool:
        """Push every checkpoint of `output_dir` not yet on the Hub (no training); True when all landed."""
        self._enqueue_unpushed(output_dir)
        return self.wait(timeout)

    def push_final(self, output_dir: str | Path, timeout: float | None = None) -> bool:
        """Put the run's final files (histories, figures, summary.json, the card with the final numbers)
        on `main`: they are written after the last checkpoint's push. True when they landed."""
        self.output_dir = Path(output_dir)
        if self.refused is not None:
            return False
        with self._lock:
            self._futures[FINAL] = self._submit(self._retrying, "the final files", self._push_final)
        return self.wait(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every queued push has ended: True when all landed; False when the timeout passed
        first, the Hub refused, or `close()` gave some up."""
        start = time.monotonic()
        try:
            futures = list(self._futures.values())
            _, not_done = concurrent.futures.wait(futures, timeout)
            return not not_done and self.refused is None and all(f.exception() is None and f.result() for f in futures)
        finally:
            self.wait_seconds += time.monotonic() - start

    def close(self) -> None:
        """Give up what has not landed: queued pushes are dropped and a retrying one stops (an attempt under
        way still ends), so the process can exit; hub_pushes.json keeps them unpushed for `grokcopy push`."""
        self._closed.set()

    def _enqueue_unpushed(self, output_dir: str | Path) -> None:
        """Queue the complete checkpoints that the record does not list as pushed to this repo."""
        self.output_dir = Path(output_dir)
        record = self.run.read_hub_pushes()
        self.pushed = set(record.get("pushed", [])) if record.get("repo_id") in (None, self.repo_id) else set()
        self._write_record()  # names the repo, so `grokcopy push` can finish what a crash left
        for folder in self.run.checkpoints():
            step = checkpoint_step(folder)
            problem = checkpoint_problem(folder)
            if problem:
                logger.warning("hub: %s is incomplete (%s); not pushed", folder.name, problem)
            elif step not in self.pushed:
                logger.info("hub: %s is not on the Hub yet; queueing it", folder.name)
                self._enqueue(step)

    # ---- background commits, in order ----
    def _enqueue(self, step: int) -> None:
        with self._lock:
            queued = self._futures.get(step)
            if step in self.pushed or (queued is not None and not queued.done()):
                return
            self._futures[step] = self._submit(self._push_step, step)

    def _submit(self, job, *args) -> concurrent.futures.Future:
        """huggingface_hub's background commits: one thread per HfApi, jobs run one at a time in order."""
        if self._api is None:
            from huggingface_hub import HfApi

            self._api = HfApi(token=self.token)
        future = self._api.run_as_future(job, *args)
        future.add_done_callback(_report_crash)
        return future

    def _push_step(self, step: int) -> bool:
        landed = self._retrying(f"step {step}", lambda: self._push(step))
        if landed:
            with self._lock:
                self.pushed.add(step)
            self._write_record()
        return landed

    def _retrying(self, what: str, push) -> bool:
        """`push()` until it succeeds (True); False once the Hub refuses (401/403/404, then nothing more is
        sent) or the callback is closed. Any other failure is retried after 1, 2, 4, ... max_backoff s."""
        delay = FIRST_BACKOFF
        while self.refused is None and not self._closed.is_set():
            try:
                push()
                return True
            except Exception as err:  # noqa: BLE001 - any failure is retried or reported, none reaches training
                self.failures += 1
                if is_refusal(err):  # a bad token or no permission: retrying cannot help
                    self.refused = f"{type(err).__name__}: {one_line(err)[:200]}"
                    logger.error("hub: the Hub refused pushing %s to %s (%s); nothing more is sent: fix the token "
                                 "or permissions, then `grokcopy push %s`", what, self.repo_id, self.refused,
                                 self.output_dir)
                    return False
                logger.warning("hub: pushing %s to %s failed (%s: %s); retrying in %.0f s", what, self.repo_id,
                               type(err).__name__, one_line(err)[:200], delay)
                if self._closed.wait(delay):
                    break
                delay = min(delay * 2, self.max_backoff)
        return False

    # ---- the push itself ----
    def _push(self, step: int) -> None:
        from huggingface_hub import CommitOperationAdd

        api = self._ready_api()
        folder = self.run.checkpoint(step)
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
            api.create_commit(self.repo_id, operations=operations((p.name, p) for p in self.run.published_files()),
                              revision=self.main_branch, commit_message=f"{self.main_branch} follows step {step}")
        logger.info("hub: pushed checkpoint-%d to %s@%s", step, self.repo_id, branch)

    def _ready_api(self):
        """The HfApi, with our timeout on huggingface_hub's client; the repo is created on first use."""
        use_timeout(self.timeout)
        if not self._repo_ready:
            self._api.create_repo(self.repo_id, private=self.private, exist_ok=True)
            self._repo_ready = True
        return self._api

    def _push_final(self) -> None:
        from huggingface_hub import CommitOperationAdd

        api = self._ready_api()
        files = [(p.name, p) for p in self.run.published_files()]
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

    def _write_record(self) -> None:
        with self._lock:
            pushed = sorted(self.pushed)
        try:
            self.run.write_hub_pushes(self.repo_id, pushed)
        except OSError as err:  # a full disk: the push landed; a later `grokcopy push` finds it there
            logger.warning("hub: could not record the pushed steps in %s: %s", self.run.hub_pushes, one_line(err))


def _report_crash(future: concurrent.futures.Future) -> None:
    """A push job never raises (failures are retried or reported); a bug that makes it raise is said, not lost."""
    if not future.cancelled() and future.exception() is not None:
        logger.error("hub: a push stopped on an error: %s", one_line(future.exception()))


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
