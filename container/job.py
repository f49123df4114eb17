"""The `train` job: channel -> resolved config -> Model Garden training -> exports -> report.

`run_train_job` is the whole job; `container.__main__` maps its errors to the failure file.
"""

from __future__ import annotations

import importlib
import logging
import pathlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from sagemaker_tfod.container import channel as channel_lib
from sagemaker_tfod.container import distribution, evaluation, export, training
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

logger = logging.getLogger(__name__)

PIPELINE_YAML_OUT = "pipeline.yaml"
METRICS_JSON = "metrics.json"
EVAL_PNG = "eval.png"
# Images drawn in eval.png when there is no eval split (predictions on training images).
TRAIN_ONLY_PREVIEW_IMAGES = 8


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


def check_not_stopped(stop_flag: training.StopFlag) -> None:
    """Raise UserError when a stop (SIGTERM/SIGINT) arrived before training started: nothing
    was trained, so the job ends with output/failure and exit 1 instead of an empty model."""
    if stop_flag.is_set():
        raise UserError(
            f"the job was stopped ({stop_flag.signal_name}) before training started; "
            "nothing was trained or exported"
        )


def run_train_job(env: SageMakerEnv, stop_flag: training.StopFlag | None = None) -> dict[str, Any]:
    """Run the whole training job; returns the content of metrics.json.

    The SIGTERM/SIGINT handler is installed first and stays through the exports: a stop during
    setup ends the job with a clear failure (not exit 143 with no output/failure), and a stop
    after training must not kill a half-written model folder (SageMaker waits 120 s before
    SIGKILL)."""
    stop_flag = stop_flag or training.StopFlag()
    uninstall = stop_flag.install()
    try:
        return _run_train_job(env, stop_flag)
    finally:
        uninstall()


def _run_train_job(env: SageMakerEnv, stop_flag: training.StopFlag) -> dict[str, Any]:
    started = time.monotonic()
    env.make_output_dirs()
    if env.failure_file.exists():
        env.failure_file.unlink()
    export.remove_stale_temporaries(env.model_dir)
    channel = channel_lib.read_channel(env.training_dir)
    hp = resolve_hyperparameters(env, channel)
    preset = get_preset(hp.model)
    logger.info("hyperparameters: %s", hp)
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

    init_checkpoint = None
    if hp.init_checkpoint_modules != "none":
        init_checkpoint = channel_lib.find_checkpoint(env.checkpoint_channel_dir)
    elif env.checkpoint_channel_dir.is_dir():
        logger.info("init_checkpoint_modules=none: ignoring %s", env.checkpoint_channel_dir)

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
        init_checkpoint=init_checkpoint,
        override_yaml=channel.pipeline_yaml,
        use_gpu=use_gpu,
    )
    dist.adapt_experiment(params, num_eval)
    check_not_stopped(stop_flag)
    if dist.is_chief:  # one writer: the other workers keep their files in scratch/
        save_experiment_yaml(params, env.model_dir / PIPELINE_YAML_OUT)
        export.write_label_files(channel.label_map, env.model_dir)
    dist.prepare_worker_dirs(env)

    with dist.peer_failures_named(), training.orbit_prints_dropped():
        result = training.run_training(
            params,
            dist.checkpoint_dir(env),
            dist.tensorboard_dir(env),
            evaluate=evaluate,
            stop_flag=dist.agreed_stop_flag(stop_flag),
            emit=dist.emit_metric,
            strategy=dist.strategy,
        )
    if not dist.is_chief:  # evaluation and exports run once, on the chief
        dist.finish()
        return dist.worker_report(result.global_step)
    saved_model = export.export_saved_model(params, result.checkpoint_path, env.model_dir)
    report = write_report(params, result, channel, saved_model, env.model_dir, evaluate)

    # ---- Edge exports (frozen graph, TFLite): container/export_edge.py, issue 4. ----
    if hp.export_edge:
        report["edge_exports"] = run_edge_exports(params, result, channel, hp, env.model_dir)
    report["seconds"] = round(time.monotonic() - started, 1)
    evaluation.write_metrics_json(env.model_dir / METRICS_JSON, report)
    logger.info("model written to %s", env.model_dir)
    dist.finish()
    return report


def run_edge_exports(
    params: Any,
    result: training.TrainingResult,
    channel: channel_lib.Channel,
    hp: Hyperparameters,
    model_dir: pathlib.Path,
) -> dict[str, Any]:
    """The one call site of the edge exports; imported lazily (TFLite conversion is heavy)."""
    try:
        module = importlib.import_module("sagemaker_tfod.container.export_edge")
    except ModuleNotFoundError as error:
        if error.name != "sagemaker_tfod.container.export_edge":
            raise
        raise UserError(
            "hyperparameter export_edge=true, but this image has no container/export_edge.py; "
            "set export_edge=false for a SavedModel-only export"
        ) from error
    export_edge_models: Callable[..., dict[str, Any]] = module.export_edge_models
    return export_edge_models(
        params,
        result.checkpoint_path,
        model_dir,
        quantize=hp.quantize,
        inference_type=hp.inference_type,
        calibration_samples=hp.calibration_samples,
        train_shards=channel.train_shards,
        eval_shards=channel.eval_shards,
        label_map=channel.label_map,
    )


def write_report(
    params: Any,
    result: training.TrainingResult,
    channel: channel_lib.Channel,
    saved_model: pathlib.Path,
    model_dir: pathlib.Path,
    evaluate: bool,
) -> dict[str, Any]:
    """metrics.json content and eval.png, from the exported SavedModel."""
    if evaluate:
        logger.info("evaluating the SavedModel on %d eval shard(s)", len(channel.eval_shards))
        results = evaluation.predict(saved_model, channel.eval_shards)
        metrics = evaluation.coco_metrics(results, channel.label_map)
        note = "COCO metrics of the exported SavedModel on the eval shards"
    else:
        results = evaluation.predict(saved_model, channel.train_shards, TRAIN_ONLY_PREVIEW_IMAGES)
        metrics = None
        note = "no eval shards in the channel: nothing was evaluated"
    title = f"step {result.global_step}"
    evaluation.draw_report(results, metrics, channel.label_map, model_dir / EVAL_PNG, title)
    return {
        "step": result.global_step,
        "train_steps": params.trainer.train_steps,
        "stopped_early": result.stopped_early,
        "note": note,
        "eval": metrics,
        "model_garden_eval": result.eval_metrics or None,
        "checkpoint": result.checkpoint_path,
    }
