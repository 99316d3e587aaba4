"""`grokcopy train`: the path from config to a trained model, its copy curve and a summary.

Every check that can fail (data, tokenizer, model shape, copy test) runs before the Trainer is
built, so a bad config fails in seconds and leaves no output folder that looks like a run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import transformers
from transformers import default_data_collator

from grokcopy.analysis.architectures import model_context_length
from grokcopy.analysis.grokking import formation_steps, formation_table, jump_step
from grokcopy.analysis.plots import plot_copy_curve, plot_formation, plot_induction_history
from grokcopy.copytest.task import CopyTaskConfig, CopyTaskError, build_copy_task
from grokcopy.errors import EXIT_PREEMPTED, RunWriteError, TrainingInterrupted, one_line
from grokcopy.run_dir import RunFolder, checkpoint_step, last_complete_checkpoint, trainer_state_file, writable_problem
from grokcopy.training.run_lock import RunLock
from grokcopy.training.callback_support import tokens_per_step
from grokcopy.training.callbacks import StopOnInterrupt
from grokcopy.training.config import ConfigError, CopyTrainingArguments, DataArguments, ModelArguments
from grokcopy.training.data import prepare_datasets
from grokcopy.training.modeling import build_model
from grokcopy.training.resume import (
    check_resume_settings,
    remove_stale_temporaries,
    resolve_resume,
    settings_record,
    tokenizer_change,
    write_settings,
)
from grokcopy.training.trainer import CopyTrainer

logger = logging.getLogger(__name__)


def check_output_folder(training_args: CopyTrainingArguments) -> None:
    """output_dir must be a folder this process can write to (checked before the run's lock is taken there)."""
    out = Path(training_args.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output_dir: {out} is a file, not a folder")
    problem = writable_problem(out)
    if problem:
        raise ConfigError(f"output_dir: {problem}")


def prepare_output_dir(training_args: CopyTrainingArguments, resuming: bool, lock: RunLock | None = None,
                       start_over: bool = False) -> None:
    """Before anything is written: output_dir may hold a run only when that run is resumed, or when
    `overwrite_output_dir` (or `resume_from_checkpoint auto` finding no checkpoint: `start_over`) asks to
    move it aside, so two runs never mix. The folder is moved only while this process holds its lock."""
    out = RunFolder(training_args.output_dir)
    found = out.contents()
    if not found or resuming:
        return
    if not (training_args.overwrite_output_dir or start_over):
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise ConfigError(f"output_dir: {out.root} already holds a run ({shown}); continue it with "
                          "--resume_from_checkpoint auto, start over with --overwrite_output_dir true (the old run is "
                          "moved aside), or choose another output_dir")
    if training_args.should_save:  # the main process; the others only wait for the data it prepares
        moved = out.set_aside()
        if lock is not None:  # the lock moved with the folder: take it again in the fresh one
            RunFolder(moved).lock.unlink(missing_ok=True)
            lock.release()
            lock.acquire()
        why = "overwrite_output_dir" if training_args.overwrite_output_dir else "no checkpoint to resume from"
        logger.warning("output_dir %s held a run: moved to %s (%s)", out.root, moved, why)


def check_report_to(training_args: CopyTrainingArguments) -> None:
    """Each `report_to` integration can start here: its callback is built as Trainer will build it
    (which is where a missing package shows), before data, model or output folder are touched."""
    from transformers.integrations import INTEGRATION_TO_CALLBACK

    for name in training_args.report_to or []:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ConfigError(f"report_to: unknown integration {name!r} (known: {', '.join(INTEGRATION_TO_CALLBACK)})")
        try:
            INTEGRATION_TO_CALLBACK[name]()
        except (RuntimeError, ImportError) as err:
            raise ConfigError(f"report_to: {name}: {one_line(err)} (or --report_to none)") from None


def build_trainer(model_args: ModelArguments, data_args: DataArguments, training_args: CopyTrainingArguments,
                  callbacks=None) -> CopyTrainer:
    """Data, tokenizer, model and copy test, validated, wired into a CopyTrainer."""
    transformers.set_seed(training_args.seed)
    # Distributed: the main process generates, tokenizes and caches the data; the others then read the cache.
    with training_args.main_process_first(desc="data", local=False):
        if data_args.demo_corpus:
            from grokcopy.training.demo_corpus import DemoCorpusConfig, demo_corpus_files

            try:
                fields = json.loads(data_args.demo_corpus_config or "{}")
                # One seed is one replicate: --seed draws the corpus as well as the initialization
                # (unless the corpus config pins its own seed).
                corpus = DemoCorpusConfig(**{"seed": training_args.seed, **fields})
            except (json.JSONDecodeError, TypeError, ValueError) as err:
                raise ConfigError(f"demo_corpus_config: {one_line(err)}") from None
            data_args.train_files = demo_corpus_files(data_args.cache_dir, corpus)
        tokenizer, blocks = prepare_datasets(data_args, model_args, seed=training_args.seed)
    model = build_model(model_args, tokenizer)
    context = model_context_length(model)
    if context is not None and data_args.block_size > context:
        raise ConfigError(f"block_size: {data_args.block_size} is longer than the model's context of {context} "
                          "tokens (max_position_embeddings)")
    try:
        copy_task = build_copy_task(tokenizer, CopyTaskConfig.from_training_args(training_args), max_length=context)
    except CopyTaskError as err:
        raise ConfigError(str(err)) from None
    if training_args.induction_analysis:  # an explicit s past the context is refused now, not at the first analysis
        from grokcopy.analysis.induction import fit_seq_len

        try:
            fit_seq_len(model, training_args.induction_seq_len, name="induction_seq_len")
        except ValueError as err:
            raise ConfigError(str(err)) from None
    # Packed blocks all have block_size tokens: stacking them is all a batch needs (no padding pass).
    return CopyTrainer(model=model, args=training_args, train_dataset=blocks["train"],
                       eval_dataset=blocks["validation"], processing_class=tokenizer, copy_task=copy_task,
                       data_collator=default_data_collator,
                       block_size=data_args.block_size, callbacks=callbacks,
                       data_description=describe_data(data_args),
                       datasets=[data_args.dataset_name] if data_args.dataset_name else None)


def where_to_go_on(output_dir) -> str:
    """How to continue a run that stopped, in words: from its newest complete checkpoint, or from scratch."""
    last = last_complete_checkpoint(output_dir)
    if last is not None:
        return f"continue from {last.name} with the same command and --resume_from_checkpoint auto"
    return ("there is no checkpoint yet: the same command with --resume_from_checkpoint auto starts over (the "
            f"partial run in {output_dir} is moved aside)")


def interrupted_message(output_dir, step: int, signal_name: str | None = None) -> str:
    """Where an interrupted run can go on from, in one line."""
    return f"{signal_name or 'interrupted'}: training stopped at step {step}; {where_to_go_on(output_dir)}"


def finish_from_checkpoint(trainer, checkpoint: str) -> None:
    """The trained model and state of a checkpoint at max_steps, for the final save, figures and summary."""
    from transformers import TrainerState

    trainer._load_from_checkpoint(checkpoint)
    trainer.state = TrainerState.load_from_json(str(trainer_state_file(checkpoint)))


def _exit_code(signal_name: str | None) -> int:
    return 130 if signal_name in (None, "SIGINT") else EXIT_PREEMPTED


def describe_data(data_args: DataArguments) -> str:
    """One sentence on the training data, for the model card."""
    if data_args.demo_corpus:
        source = "the grokcopy demo corpus (generated text with repeated passages, see the grokcopy README)"
    elif data_args.dataset_name:
        source = f"`{data_args.dataset_name}`" + (f" ({data_args.dataset_config_name})" if data_args.dataset_config_name
                                                  else "") + f", split `{data_args.dataset_split}`"
        source += ", streamed" if data_args.streaming else ""
    else:
        source = "local files " + ", ".join(f"`{Path(f).name}`" for f in data_args.train_files or [])
    return (f"Trained on {source}, column `{data_args.text_column}`, tokenized with an EOS after each document "
            f"and packed into {data_args.block_size}-token blocks.")


def summarize(history: list[dict]) -> dict:
    """The run in numbers from its copy history: steps, tokens, final loss and copy accuracy, first step
    with EM >= 0.5."""
    if not history:
        return {}
    last = history[-1]
    return {
        "steps": last["step"],
        "tokens": last["tokens"],
        "final_loss": last["loss"],
        "final_exact_match": last["exact_match"],
        "final_token_accuracy": last["token_accuracy"],
        "jump_step": jump_step(history)[0],  # the report's landmark: exact match 0.5, interpolated between tests
        "copy_test_sequences_per_sample": last["num_sequences"],
    }


def run_training(model_args: ModelArguments, data_args: DataArguments, training_args: CopyTrainingArguments,
                 callbacks=None, annotate=None) -> dict:
    """Train, save the final model + tokenizer, draw the figures, write and return the summary.

    `annotate(summary, output_dir)` (e.g. the demo's verdict) adds to the summary before
    summary.json is written, so the file is written once, whole."""
    # grokcopy's loggers follow the Trainer's log_level / log_level_replica, as transformers' own do
    logging.getLogger("grokcopy").setLevel(training_args.get_process_log_level())
    check_output_folder(training_args)
    out = Path(training_args.output_dir)
    created = not out.exists()
    lock = RunLock(out) if training_args.should_save else None  # one writer per folder (main process)
    if lock is not None:
        lock.acquire()
    try:
        return _run_locked(model_args, data_args, training_args, callbacks, annotate, lock)
    finally:
        if lock is not None:
            lock.release()
            if created and out.is_dir() and not any(out.iterdir()):  # failed before writing anything
                out.rmdir()


def _run_locked(model_args, data_args, training_args, callbacks, annotate, lock) -> dict:
    resume = resolve_resume(training_args)
    if resume and training_args.should_save:  # what a killed run left half-written can never be completed
        remove_stale_temporaries(training_args.output_dir)
    check_report_to(training_args)
    start_over = training_args.resume_from_checkpoint == "auto" and resume is None
    prepare_output_dir(training_args, resuming=resume is not None, lock=lock, start_over=start_over)
    step = checkpoint_step(Path(resume)) if resume else 0
    settings = None
    if resume:  # refused in seconds, before the data is prepared
        expected = settings_record(model_args, data_args, training_args,
                                   tokens_per_step(training_args, data_args.block_size))
        settings = check_resume_settings(training_args.output_dir, expected, training_args.resume_allow_changes, step)
    complete = resume is not None and 0 < training_args.max_steps <= step  # a requeue of a run that finished
    summary = RunFolder(training_args.output_dir).read_summary() if complete else None
    if isinstance(summary, dict) and (summary.get("steps") or 0) >= training_args.max_steps:
        logger.warning("%s is complete (step %d of %d): nothing to train", training_args.output_dir, step,
                       training_args.max_steps)
        return summary
    trainer = build_trainer(model_args, data_args, training_args, callbacks=callbacks)
    if resume:
        changed = tokenizer_change(resume, trainer.processing_class)
        if changed:
            raise ConfigError(f"resume_from_checkpoint: {changed}; a resumed run keeps its tokenizer")
    if trainer.is_world_process_zero():
        write_settings(training_args.output_dir, settings or settings_record(
            model_args, data_args, training_args, trainer.tokens_per_step))
    if trainer.copy_task.note and trainer.is_world_process_zero():
        print(trainer.copy_task.note)
    try:
        return _train_and_finish(trainer, training_args, resume, complete, annotate)
    finally:  # after the final waits, what has not reached the Hub is left to `grokcopy push`, not waited for at exit
        if trainer.hub_callback is not None:
            trainer.hub_callback.close()


def _train_and_finish(trainer, training_args, resume, complete, annotate) -> dict:
    """Train (or finish a run killed while finishing), then the final model, figures, summary and Hub push."""
    interrupt = StopOnInterrupt()
    trainer.add_callback(interrupt)
    try:
        with interrupt:
            if complete:  # killed while finishing: the Trainer would take one step past max_steps
                finish_from_checkpoint(trainer, resume)
            else:
                trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        raise TrainingInterrupted(interrupted_message(training_args.output_dir, trainer.state.global_step,
                                                      interrupt.requested), _exit_code(interrupt.requested)) from None
    except OSError as err:  # a full disk, a read-only folder: the cause and where to go on, in one line
        what = f"could not write {err.filename}" if err.filename else "a write failed"
        raise RunWriteError(f"{what} at step {trainer.state.global_step}: {err.strerror or one_line(err)}; once "
                            f"fixed, {where_to_go_on(training_args.output_dir)}") from None
    if interrupt.requested:  # stopped at a step boundary, checkpoint saved: not finished, nothing saved as final
        raise TrainingInterrupted(interrupted_message(training_args.output_dir, trainer.state.global_step,
                                                      interrupt.requested), _exit_code(interrupt.requested))
    trainer.save_model()
    trainer.save_state()
    run = RunFolder(training_args.output_dir)
    history = run.read_copy_history()  # read once: the summary, the curve and `annotate` share it
    summary = summarize(history)
    if trainer.is_world_process_zero():
        if history:
            plot_copy_curve(history, run.copy_curve, run.logged_losses(trainer.state.log_history, history))
        formation = write_induction_figures(run.root, training_args.induction_threshold)
        if formation:
            summary["induction_formation"] = formation
        if annotate is not None:
            annotate(summary, run.root)
        run.write_summary(summary)
        if trainer.hub_callback is not None and not trainer.hub_callback.push_final(run.root,
                                                                                     training_args.hub_push_wait):
            logger.warning("hub: the final figures and summary.json are not on %s yet; `grokcopy push %s` sends them",
                           training_args.hub_model_id, run.root)
    return summary


def write_induction_figures(output_dir: str | Path, threshold: float = 0.3) -> list[dict]:
    """induction_history.png (I per head over steps) and induction_formation.png (+ printed table)."""
    run = RunFolder(output_dir)
    history = run.read_induction_history()
    if not history:
        return []
    rows = formation_steps(history, threshold)
    plot_induction_history(history, run.induction_history_plot)
    plot_formation(rows, run.formation_plot, threshold, max(r["step"] for r in history))
    print(formation_table(rows, threshold))
    return rows
