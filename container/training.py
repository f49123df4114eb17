"""Run Model Garden's own Orbit training loop, adding metric lines, a NaN stop and SIGTERM.

The trainer, controller and checkpoint manager are Model Garden's (`OrbitExperimentRunner`, as
`train_lib.run_experiment` builds them); the container only adds Orbit *actions*, which run
after each `steps_per_loop` chunk, so the training steps themselves are unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import pathlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orbit
import tensorflow as tf
from official.core import config_definitions as cfg
from official.core import task_factory, train_lib, train_utils

from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.metrics import EVAL_KEYS, TRAIN_KEYS, format_metric_line
from sagemaker_tfod.container.stopping import StopFlag

logger = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised between training loops after SIGTERM/SIGINT, so the job can save and export."""


class NonFiniteLoss(UserError):
    """The loss became NaN or infinite."""


@dataclass
class TrainingResult:
    global_step: int
    stopped_early: bool
    eval_metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_path: str | None = None
    log_lines: list[str] = field(default_factory=list)


def _to_float(value: Any) -> float:
    return float(np.asarray(orbit.utils.get_value(value)).reshape(-1)[0])


@contextlib.contextmanager
def orbit_prints_dropped() -> Iterator[None]:
    """Drop what Orbit's controller `print`s: it logs each message through absl as well, so
    the print is a second, untimestamped copy (logging handlers keep their own stream)."""
    with contextlib.redirect_stdout(_Discard()):
        yield


class _Discard(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class TrainMetricsAction:
    """Orbit train action: one `metric` line per loop, NaN check, stop check."""

    def __init__(
        self,
        global_step: tf.Variable,
        stop_flag: StopFlag,
        emit: Callable[[str], None],
        total_steps: int,
    ):
        self._total_steps = total_steps
        self._global_step = global_step
        self._stop_flag = stop_flag
        self._emit = emit
        self._last_step = int(global_step.numpy())
        self._last_time = time.monotonic()

    def __call__(self, output: Mapping[str, Any]) -> None:
        step = int(self._global_step.numpy())
        now = time.monotonic()
        steps_per_sec = (step - self._last_step) / max(now - self._last_time, 1e-9)
        self._last_step, self._last_time = step, now
        values = {key: _to_float(output[key]) for key in TRAIN_KEYS if key in output}
        values["steps_per_sec"] = steps_per_sec
        self._emit(format_metric_line(step, values))
        remaining = max(self._total_steps - step, 0) / max(steps_per_sec, 1e-9)
        logger.info(
            "progress: step %d/%d (%.0f%%), %.2f steps/s, ETA %s",
            step,
            self._total_steps,
            100 * step / max(self._total_steps, 1),
            steps_per_sec,
            _format_duration(remaining),
        )
        loss = values.get("total_loss", 0.0)
        if not math.isfinite(loss):
            raise NonFiniteLoss(
                f"the training loss became {loss} by step {step}; the learning rate "
                f"({values.get('learning_rate', float('nan')):.4g}) is probably too high for "
                "this batch size, or boxes are invalid; lower learning_rate or raise "
                "warmup_steps"
            )
        if self._stop_flag.is_set():
            raise StopRequested(self._stop_flag.signal_name)


class EvalMetricsAction:
    """Orbit eval action: one `metric` line per evaluation; keeps the latest COCO numbers."""

    def __init__(self, global_step: tf.Variable, emit: Callable[[str], None]):
        self._global_step = global_step
        self._emit = emit
        self.latest: dict[str, float] = {}

    def __call__(self, output: Mapping[str, Any]) -> None:
        metrics = {key: _to_float(value) for key, value in output.items() if np.size(value) == 1}
        self.latest = metrics
        values = {key: metrics[key] for key in EVAL_KEYS if key in metrics}
        self._emit(format_metric_line(int(self._global_step.numpy()), values))


def _emit_to_log(line: str) -> None:
    logger.info("%s", line)


class _Runner(train_lib.OrbitExperimentRunner):
    """Model Garden's runner, except where a non-chief worker keeps its checkpoints.

    Model Garden gives such a worker a new empty temporary folder, so it could never resume
    at the chief's step; here it uses `model_dir` (its scratch folder, which
    `distribution.Distribution.prepare_worker_dirs` seeds with the chief's latest checkpoint).
    Every worker must still save: saving reads variables that synchronise across workers."""

    def _maybe_build_checkpoint_manager(self) -> tf.train.CheckpointManager | None:
        if self.strategy.extended.should_checkpoint or not self.trainer.checkpoint:
            return super()._maybe_build_checkpoint_manager()
        return tf.train.CheckpointManager(
            self.trainer.checkpoint,
            directory=self.model_dir,
            max_to_keep=1,
            step_counter=self.trainer.global_step,
            checkpoint_interval=self.params.trainer.checkpoint_interval,
            init_fn=self.trainer.initialize,
        )


def build_runner(
    params: cfg.ExperimentConfig,
    model_dir: pathlib.Path,
    tensorboard_dir: pathlib.Path,
    *,
    evaluate: bool,
    train_actions: list[Any] | None = None,
    eval_actions: list[Any] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> train_lib.OrbitExperimentRunner:
    """Model Garden's runner with summaries in `tensorboard_dir` instead of `model_dir`, on
    `strategy` (container.distribution's choice; TensorFlow's default when None)."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        task = task_factory.get_task(params.task, logging_dir=str(model_dir))
        trainer = train_utils.create_trainer(params, task, train=True, evaluate=evaluate)
    summary = orbit.utils.SummaryManager(
        str(tensorboard_dir / "train"), tf.summary.scalar, global_step=trainer.global_step
    )
    eval_summary = orbit.utils.SummaryManager(
        str(tensorboard_dir / "validation"), tf.summary.scalar, global_step=trainer.global_step
    )
    return _Runner(
        distribution_strategy=strategy,
        task=task,
        mode="train_and_eval" if evaluate else "train",
        params=params,
        model_dir=str(model_dir),
        trainer=trainer,
        train_actions=train_actions,
        eval_actions=eval_actions,
        summary_manager=summary,
        eval_summary_manager=eval_summary,
    )


def run_training(
    params: cfg.ExperimentConfig,
    model_dir: pathlib.Path,
    tensorboard_dir: pathlib.Path,
    *,
    evaluate: bool,
    stop_flag: StopFlag | None = None,
    emit: Callable[[str], None] = _emit_to_log,
    on_initialised: Callable[[Any], Any] | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainingResult:
    """Train to `params.trainer.train_steps` (resuming from `model_dir`), evaluating at intervals.

    `on_initialised(model)` runs after Model Garden initialised the model from
    `params.task.init_checkpoint` (not when resuming), before the first step.
    A `StopRequested` between loops saves a checkpoint and returns with `stopped_early`.
    """
    stop_flag = stop_flag or StopFlag()
    lines: list[str] = []

    def record(line: str) -> None:
        lines.append(line)
        emit(line)

    # The runner restores the latest checkpoint in model_dir, or runs task.initialize (the
    # checkpoint channel) when there is none; both happen inside the constructor.
    init_checkpoint = params.task.init_checkpoint
    initialising = bool(init_checkpoint) and tf.train.latest_checkpoint(str(model_dir)) is None
    try:
        runner = build_runner(
            params, model_dir, tensorboard_dir, evaluate=evaluate, strategy=strategy
        )
    except (AssertionError, ValueError, tf.errors.OpError) as error:
        reason = " ".join(str(error).split())[:300]
        resuming_from = tf.train.latest_checkpoint(str(model_dir))
        if resuming_from:
            raise UserError(
                f"cannot resume from {resuming_from}: it does not fit this model ({reason}); "
                "it was written by a run with another preset or class count: give this job a "
                "new checkpoint S3 location, or empty the old one"
            ) from error
        if not initialising:
            raise
        modules = params.task.init_checkpoint_modules
        raise UserError(
            f"the checkpoint channel ({init_checkpoint}) does not fit this model with "
            f"init_checkpoint_modules={modules}: {reason}; use init_checkpoint_modules=backbone "
            "when the class count or head differs, the same `model` preset as the run that "
            "wrote it, or init_checkpoint_modules=none"
        ) from error
    trainer = runner.trainer
    if initialising and on_initialised is not None:
        on_initialised(trainer.model)
    controller = runner.controller
    metrics_action = TrainMetricsAction(
        trainer.global_step, stop_flag, record, params.trainer.train_steps
    )
    eval_metrics_action = EvalMetricsAction(trainer.global_step, record)
    # The actions need the trainer's global_step, which exists only once the runner is built.
    controller.train_actions = (*controller.train_actions, metrics_action)
    if evaluate:
        controller.eval_actions = (*controller.eval_actions, eval_metrics_action)

    train_steps = params.trainer.train_steps
    interval = params.trainer.validation_interval or train_steps
    stopped = False
    with runner.strategy.scope():
        step = int(trainer.global_step.numpy())
        if step:
            logger.info("resuming from step %d of %d", step, train_steps)
        try:
            while step < train_steps:
                target = min(train_steps, step + interval)
                controller.train(steps=target, checkpoint_at_completion=False)
                step = int(trainer.global_step.numpy())
                if evaluate and step < train_steps:
                    controller.evaluate(steps=params.trainer.validation_steps)
        except StopRequested:
            stopped = True
            step = int(trainer.global_step.numpy())
            logger.warning("stopping at step %d on request; saving a checkpoint", step)
        manager = runner.checkpoint_manager
        checkpoint_path = manager.latest_checkpoint
        if not checkpoint_path or not checkpoint_path.endswith(f"-{step}"):
            checkpoint_path = manager.save(checkpoint_number=step, check_interval=False)
            logger.info("saved checkpoint %s", checkpoint_path)
        if evaluate and not stopped:
            controller.evaluate(steps=params.trainer.validation_steps)
    return TrainingResult(
        global_step=step,
        stopped_early=stopped,
        eval_metrics=dict(eval_metrics_action.latest),
        checkpoint_path=checkpoint_path,
        log_lines=lines,
    )
