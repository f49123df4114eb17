"""`output/failure`: the one paragraph SageMaker shows as the job's failure reason."""

from __future__ import annotations

import logging
import shutil

from sagemaker_tfod.container.sagemaker_env import SageMakerEnv
from sagemaker_tfod.data_prep.files import atomic_write_text

logger = logging.getLogger(__name__)


def write_failure(env: SageMakerEnv, message: str) -> None:
    """Write `message` to output/failure (logged instead if even that fails: a full disk)."""
    try:
        atomic_write_text(env.failure_file, message.strip() + "\n")
    except OSError:
        logger.exception("could not write %s", env.failure_file)


def last_words(env: SageMakerEnv, message: str):
    """A stop deadline's last words for a phase with no model yet: the failure file, exit 1."""

    def record() -> int:
        write_failure(env, message)
        return 1

    return record


def stopped_before_training(signal_name: str) -> str:
    return (
        f"the job was stopped ({signal_name or 'stop'}) before training started and the stop "
        "deadline passed during setup; nothing was trained or exported"
    )


def stopped_in_training(hp) -> str:
    return (
        f"the job was stopped and its deadline (stop_grace_seconds={hp.stop_grace_seconds:g} "
        f"- stop_margin_seconds={hp.stop_margin_seconds:g}) passed before the current "
        "training loop ended, so nothing was saved at the stop and nothing was exported; the "
        "checkpoints saved before it (every checkpoint_interval_steps) let a new job resume; "
        "a smaller log_interval_steps ends a training loop sooner"
    )


def remove_partial_writes(env: SageMakerEnv) -> list[str]:
    """After a failed write (a full disk): remove the model folder's temporaries and the
    staging folders TensorFlow leaves for a checkpoint it could not finish (`ckpt-N_temp`;
    SageMaker would sync them to S3). Complete checkpoints and model files stay."""
    from sagemaker_tfod.container.export import remove_stale_temporaries

    removed = remove_stale_temporaries(env.model_dir)
    if env.checkpoints_dir.is_dir():
        for partial in sorted(env.checkpoints_dir.glob("*_temp")):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)
            removed.append(partial.name)
    if removed:
        logger.warning("removed partial files: %s", ", ".join(removed))
    return removed
