"""`python -m container export`: a model folder from a checkpoint and a channel.

For the exports a stop left out (`export.json` and `metrics.json` list them with this
command), or for another quantisation later:

    python -m container export --checkpoint CHECKPOINTS --channel CHANNEL --model-dir MODEL \\
        [--quantize --inference-type QUANTIZED_UINT8 --calibration-samples 100] [--no-edge]

It runs the same steps as `train` after training (`export_sequence`, without a deadline):
`saved_model/`, `metrics.json` and `eval.png`, `frozen_inference_graph.pb`, `model.tflite`,
the quantised file if asked for (kept only if it passes the same AP50 gate) and
`export.json`. The model's configuration is the `pipeline.yaml` that `train` wrote into the
model folder (`--pipeline` for another one). In the image: `docker run IMAGE export ...`.
"""

from __future__ import annotations

import argparse
import errno
import logging
import pathlib
import re
import signal
import sys

from sagemaker_tfod.container.hyperparameters import INFERENCE_TYPES, Hyperparameters

logger = logging.getLogger(__name__)

PIPELINE_YAML = "pipeline.yaml"
# Any RetinaNet experiment: the resolved pipeline.yaml sets every field of it.
_BASE_EXPERIMENT = "retinanet_resnetfpn_coco"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Hyperparameters()
    parser.add_argument(
        "--checkpoint",
        type=pathlib.Path,
        required=True,
        help="a checkpoint (ckpt-N) or a folder of them, e.g. the job's checkpoints synced "
        "from S3 (its latest is used)",
    )
    parser.add_argument(
        "--channel",
        type=pathlib.Path,
        required=True,
        help="the training channel (label map; eval shards score the exports, train shards "
        "calibrate int8)",
    )
    parser.add_argument(
        "--model-dir",
        type=pathlib.Path,
        required=True,
        help="the model folder to write (created; files of the same names are replaced)",
    )
    parser.add_argument(
        "--pipeline",
        type=pathlib.Path,
        help=f"the resolved {PIPELINE_YAML} of the training job (default: MODEL_DIR/"
        f"{PIPELINE_YAML}, where train writes it)",
    )
    parser.add_argument(
        "--no-edge", action="store_true", help="only the SavedModel (no frozen graph or TFLite)"
    )
    parser.add_argument(
        "--no-onnx", action="store_true", help="no model.onnx (see export_onnx in train --help)"
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="also write the quantised TFLite of --inference-type",
    )
    parser.add_argument(
        "--inference-type",
        type=str.upper,
        choices=INFERENCE_TYPES,
        default=defaults.inference_type,
        help="FLOAT: model_fp16.tflite; QUANTIZED_UINT8 or INT8: model_int8.tflite "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=defaults.calibration_samples,
        help="training images that calibrate full-integer TFLite (default: %(default)s)",
    )
    parser.add_argument(
        "--quantized-ap50-floor",
        type=float,
        default=defaults.quantized_ap50_floor,
        help="ship the quantised TFLite only if its AP50 is at least this fraction of the "
        "float TFLite's (default: %(default)s)",
    )


def _checkpoint_prefix(path: pathlib.Path) -> str:
    import tensorflow as tf

    from sagemaker_tfod.container.checkpoint_source import checkpoint_prefixes, latest_prefix
    from sagemaker_tfod.container.errors import UserError

    if path.is_dir():
        prefixes = checkpoint_prefixes(path)
        if not prefixes:
            raise UserError(
                f"{path}: no checkpoint inside (no ckpt-N.index with its ckpt-N.data-* files); "
                "pass the job's checkpoints folder or a ckpt-N prefix"
            )
        return latest_prefix(prefixes)
    prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", str(path))
    try:
        tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, ValueError) as error:
        raise UserError(
            f"{path}: not a readable checkpoint ({str(error).splitlines()[0]}); pass a "
            "ckpt-N prefix whose .index and .data files are beside it, or their folder"
        ) from error
    return prefix


def _read_experiment(path: pathlib.Path):
    from official.core import exp_factory
    from official.modeling import hyperparams

    from sagemaker_tfod.container.errors import UserError

    if not path.is_file():
        raise UserError(
            f"{path}: not found; pass --pipeline with the {PIPELINE_YAML} the training job "
            "wrote into its model folder"
        )
    try:
        return hyperparams.override_params_dict(
            exp_factory.get_exp_config(_BASE_EXPERIMENT), str(path), is_strict=False
        )
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{path}: not a Model Garden experiment ({error})") from error


def export_from_checkpoint(args: argparse.Namespace) -> dict:
    """The export itself; UserError for bad input."""
    from sagemaker_tfod.container import channel as channel_lib
    from sagemaker_tfod.container import export, export_sequence
    from sagemaker_tfod.container.errors import UserError
    from sagemaker_tfod.container.pipeline_config import save_experiment_yaml

    if args.calibration_samples < 1:
        raise UserError("--calibration-samples must be at least 1")
    if not 0 <= args.quantized_ap50_floor <= 1:
        raise UserError("--quantized-ap50-floor must be between 0 and 1, e.g. 0.97")
    model_dir = args.model_dir
    pipeline = args.pipeline or model_dir / PIPELINE_YAML
    params = _read_experiment(pipeline)
    channel = channel_lib.read_channel(args.channel)
    num_classes = params.task.model.num_classes - 1  # Model Garden counts the background
    if num_classes != len(channel.label_map):
        raise UserError(
            f"{pipeline} has {num_classes} classes but {channel.label_map_file} has "
            f"{len(channel.label_map)}; pass the channel the job trained on"
        )
    prefix = _checkpoint_prefix(args.checkpoint)
    step = re.search(r"-(\d+)$", prefix)
    model_dir.mkdir(parents=True, exist_ok=True)
    export.remove_stale_temporaries(model_dir)
    export.write_label_files(channel.label_map, model_dir)
    if pipeline.resolve() != (model_dir / PIPELINE_YAML).resolve():
        save_experiment_yaml(params, model_dir / PIPELINE_YAML)
    settings = export_sequence.ExportSettings(
        export_edge=not args.no_edge,
        quantize=args.quantize,
        inference_type=args.inference_type,
        calibration_samples=args.calibration_samples,
        export_onnx=not args.no_onnx,
        quantized_ap50_floor=args.quantized_ap50_floor,
    )
    logger.info("exporting %s to %s", prefix, model_dir)
    return export_sequence.export_model(
        params,
        prefix,
        channel,
        settings,
        model_dir,
        {"step": int(step.group(1)) if step else None, "written_by": "python -m container export"},
        evaluate=bool(channel.eval_shards),
        stop=None,
        write_failure=lambda _message: None,
    )


class _Terminated(KeyboardInterrupt):
    pass


def _raise_terminated(_signum, _frame) -> None:
    raise _Terminated


def run(args: argparse.Namespace) -> int:
    """`export`'s command line: one-line errors, exit 1; Ctrl-C or SIGTERM leaves nothing
    half-written."""
    from sagemaker_tfod.container.errors import UserError

    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        export_from_checkpoint(args)
    except UserError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        return _disk_full(args, error)
    except KeyboardInterrupt as stopped:
        _clean(args)
        reason = "stopped by SIGTERM" if isinstance(stopped, _Terminated) else "interrupted"
        print(f"error: {reason}; files not completed were removed", file=sys.stderr)
        return 130
    except Exception as error:
        from sagemaker_tfod.container.__main__ import disk_full_message

        if disk_full_message(error) is None:
            raise
        return _disk_full(args, error)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def _clean(args: argparse.Namespace) -> None:
    from sagemaker_tfod.container.export import remove_stale_temporaries

    remove_stale_temporaries(args.model_dir)


def _disk_full(args: argparse.Namespace, error: BaseException) -> int:
    _clean(args)
    where = getattr(error, "filename", None) or args.model_dir
    print(
        f"error: {where}: no space left on the device; free some space or pass another "
        "--model-dir (files not completed were removed; those written before are complete)",
        file=sys.stderr,
    )
    return 1
