"""The `train` job: channel -> resolved config -> Model Garden training -> exports -> report.

The exports, their order and the stop deadline they keep are `export_sequence`'s.

`run_train_job` is the whole job; `container.__main__` maps its errors to the failure file.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from sagemaker_tfod.container import (
    anchors,
    checkpoint_source,
    distribution,
    evaluation,
    export,
    export_sequence,
    failure,
    training,
)
from sagemaker_tfod.container import channel as channel_lib
from sagemaker_tfod.container.errors import UserError
from sagemaker_tfod.container.hyperparameters import Hyperparameters, parse_hyperparameters
from sagemaker_tfod.container.pipeline_config import (
    DataPaths,
    build_experiment,
    read_od_api_pipeline_config,
    save_experiment_yaml,
)
from sagemaker_tfod.container.presets import get_preset
from sagemaker_tfod.container.sagemaker_env import ConfigFileError, SageMakerEnv
from sagemaker_tfod.container.stopping import GracefulStop, StopFlag

logger = logging.getLogger(__name__)

PIPELINE_YAML_OUT = "pipeline.yaml"


def resolve_hyperparameters(env: SageMakerEnv, channel: channel_lib.Channel) -> Hyperparameters:
    """hyperparameters.json over the OD API pipeline.config values (when the channel has one)."""
    try:
        raw = env.read_hyperparameters()
    except ConfigFileError as error:
        raise UserError(str(error)) from error
    if channel.pipeline_config is not None:
        source = str(channel.pipeline_config)
        settings = read_od_api_pipeline_config(
            channel.pipeline_config.read_text(encoding="utf-8"), source
        )
        if settings.ignored_fields:
            logger.warning(
                "%s: these fields have no Model Garden equivalent and were ignored: %s",
                source,
                ", ".join(settings.ignored_fields),
            )
        num_labels = len(channel.label_map)
        if settings.num_classes is not None and settings.num_classes != num_labels:
            logger.warning(
                "%s: num_classes=%d, but %s has %d classes; using the label map",
                source,
                settings.num_classes,
                channel.label_map_file,
                num_labels,
            )
        logger.info("%s: using %s", source, settings.hyperparameters)
        raw = {**settings.hyperparameters, **raw}
    return parse_hyperparameters(raw)


def check_not_stopped(stop_flag: StopFlag) -> None:
    """Raise UserError when a stop (SIGTERM/SIGINT) arrived before training started: nothing
    was trained, so the job ends with output/failure and exit 1 instead of an empty model."""
    if stop_flag.is_set():
        raise UserError(
            f"the job was stopped ({stop_flag.signal_name}) before training started; "
            "nothing was trained or exported"
        )


def run_train_job(env: SageMakerEnv, stop: GracefulStop) -> dict[str, Any]:
    """Run the whole training job; returns the content of metrics.json.

    `stop` (installed by the caller before TensorFlow was imported) turns SIGTERM into a stop
    between training loops, and keeps its deadline: see `stopping.py` and `export_sequence.py`.
    """
    started = time.monotonic()
    stop_flag = stop.flag
    env.make_output_dirs()
    if env.failure_file.exists():
        env.failure_file.unlink()
    export.remove_stale_temporaries(env.model_dir)
    channel = channel_lib.read_channel(env.training_dir)
    hp = resolve_hyperparameters(env, channel)
    stop.configure(hp.stop_grace_seconds, hp.stop_margin_seconds)
    preset = get_preset(hp.model)
    logger.info("hyperparameters: %s", hp.render(preset))
    # Before any other TensorFlow operation: MultiWorkerMirroredStrategy requires it.
    dist = distribution.start(env, hp.cluster_timeout_seconds, hp.peer_timeout_seconds)

    check_not_stopped(stop_flag)
    sharding = distribution.input_sharding_warning(len(channel.train_shards), dist.plan.num_workers)
    if sharding:
        logger.warning("%s", sharding)
    train_summary = channel_lib.scan_split(channel.train_shards)
    check_not_stopped(stop_flag)
    channel_lib.check_labels(train_summary, "train", channel.label_map, str(channel.directory))
    if train_summary.num_examples == 0:
        raise UserError(
            f"the train shards in {channel.directory} hold no examples; rebuild the channel "
            "from a folder with annotated images"
        )
    evaluate = bool(channel.eval_shards)
    num_eval = 0
    if evaluate:
        eval_summary = channel_lib.scan_split(channel.eval_shards)
        check_not_stopped(stop_flag)
        channel_lib.check_labels(eval_summary, "eval", channel.label_map, str(channel.directory))
        num_eval = eval_summary.num_examples
        evaluate = num_eval > 0
    if not evaluate:
        logger.warning(
            "no eval examples in %s: training only, nothing will be evaluated "
            "(metrics.json says so; build the channel with an eval split to get COCO AP)",
            channel.directory,
        )
    logger.info(
        "channel: %d train / %d eval examples, %d classes",
        train_summary.num_examples,
        num_eval,
        len(channel.label_map),
    )

    use_gpu = bool(tf.config.list_physical_devices("GPU"))
    if hp.mixed_precision and not use_gpu:
        logger.warning("mixed_precision=true needs a GPU; training in float32 on the CPU")
    tf_keras.utils.set_random_seed(hp.seed)
    np.random.seed(hp.seed)
    params = build_experiment(
        preset,
        hp,
        len(channel.label_map),
        DataPaths(
            train_pattern=channel.pattern("train"),
            eval_pattern=channel.pattern("eval") if evaluate else None,
            num_eval_examples=num_eval,
        ),
        override_yaml=channel.pipeline_yaml,
        use_gpu=use_gpu,
    )
    # ---- Initial weights from the checkpoint channel: container/checkpoint_source.py ----
    initial = checkpoint_source.prepare(
        env.checkpoint_channel_dir,
        params,
        preset.name,
        hp.init_checkpoint_modules,
        env.checkpoints_dir,
    )
    anchor_decision = anchors.resolve_anchors(
        params, hp.anchors, train_summary.boxes, train_summary.image_sizes, channel.pipeline_yaml
    )
    dist.adapt_experiment(params, num_eval)
    check_not_stopped(stop_flag)
    if dist.is_chief:  # one writer: the other workers keep their files in scratch/
        save_experiment_yaml(params, env.model_dir / PIPELINE_YAML_OUT)
        export.write_label_files(channel.label_map, env.model_dir)
    dist.prepare_worker_dirs(env)

    stop.on_deadline(failure.last_words(env, failure.stopped_in_training(hp)))
    with dist.peer_failures_named(), training.orbit_prints_dropped():
        result = training.run_training(
            params,
            dist.checkpoint_dir(env),
            dist.tensorboard_dir(env),
            evaluate=evaluate,
            stop_flag=dist.agreed_stop_flag(stop.flag),
            emit=dist.emit_metric,
            strategy=dist.strategy,
            on_initialised=initial.verify if initial else None,
        )
    if not dist.is_chief:  # evaluation and exports run once, on the chief
        dist.finish()
        return dist.worker_report(result.global_step)
    report = export_sequence.export_model(
        params,
        result.checkpoint_path,
        channel,
        export_sequence.ExportSettings.from_hyperparameters(hp),
        env.model_dir,
        {
            "step": result.global_step,
            "train_steps": params.trainer.train_steps,
            "stopped_early": result.stopped_early,
            "model_garden_eval": result.eval_metrics or None,
        },
        evaluate=evaluate,
        stop=stop,
        write_failure=lambda message: failure.write_failure(env, message),
    )
    report["anchors"] = anchor_decision
    report["seconds"] = round(time.monotonic() - started, 1)
    with stop.commit():
        evaluation.write_metrics_json(env.model_dir / export_sequence.METRICS_JSON, report)
    dist.finish()  # the other workers wait here until the chief's model folder is complete
    return report
