"""After training: the model folder, written step by step within a stop's deadline.

The steps, in order (`model_steps`): the SavedModel first (the usable model: without it the
job failed), then the report (COCO AP of the SavedModel on the eval shards, `metrics.json`,
`eval.png`), then the edge exports of `export_edge.EdgeExporter` (the SavedModel's score
with the Pi-side code, the frozen graph, the float TFLite, the quantised TFLite), each
scored. Normally all of them run. After a stop (SIGTERM; see `stopping.py`) a step starts
only if its estimate fits in the time left before the deadline; what did not run is listed
in `metrics.json` and `export.json` (`skipped`: the reason, and the `python -m container
export` command that writes it later from the checkpoint) and in the log. A step still
running at the deadline is cut off by the watchdog, which writes the same records; the exit
code is 0 when the SavedModel was written, else 1 with `output/failure`.

To add an export, add an `ExportStep` here (or a step to `EdgeExporter.steps`) with an
estimate in `ESTIMATE_FACTORS`.
"""

from __future__ import annotations

import contextlib
import logging
import pathlib
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sagemaker_tfod.container import evaluation, export, export_edge, export_onnx
from sagemaker_tfod.container.stopping import GracefulStop

logger = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
EVAL_PNG = "eval.png"
SAVED_MODEL = export.SAVED_MODEL_DIR
REPORT = "metrics.json eval"  # the COCO evaluation behind metrics.json and eval.png
SAVED_MODEL_SCORE = "saved_model score"  # the SavedModel scored with the Pi-side code
# Images drawn in eval.png when there is no eval split (predictions on training images).
TRAIN_ONLY_PREVIEW_IMAGES = 8

# A step's estimate = its factor x the seconds the SavedModel export took in this job: both
# trace and convert the same network, so they scale together with its size and the machine.
# Measured (benchmarks/bench_stop.py, default preset at 256 px, 2 loaded CPU cores, two
# runs): report 0.41-0.65, SavedModel score 0.37-0.54, frozen graph 0.28-0.63, float TFLite
# 0.78-1.18, int8 with 32 calibration images 2.11; rounded up by about a third. (A tiny test
# model's fixed costs make its ratios up to 3.5: there the watchdog cuts a step short.)
ESTIMATE_FACTORS = {
    REPORT: 0.9,
    SAVED_MODEL_SCORE: 0.8,
    export_edge.FROZEN_GRAPH: 0.9,
    export_edge.FLOAT_TFLITE: 1.6,
    # tf2onnx and the agreement check: 69 s against float TFLite's 111 s at 320 px (one run).
    export_onnx.ONNX_FILE: 1.3,
    "quantised": 2.8,  # model_fp16.tflite / model_int8.tflite: calibration, two tries
}


@dataclass(frozen=True)
class ExportSettings:
    """What to export besides the SavedModel (the hyperparameters, or `export`'s flags)."""

    export_edge: bool = True
    quantize: bool = False
    inference_type: str = "FLOAT"
    calibration_samples: int = 100
    export_onnx: bool = True
    quantized_ap50_floor: float = 0.97

    @classmethod
    def from_hyperparameters(cls, hp) -> ExportSettings:
        return cls(
            hp.export_edge,
            hp.quantize,
            hp.inference_type,
            hp.calibration_samples,
            hp.export_onnx,
            hp.quantized_ap50_floor,
        )

    def flags(self) -> list[str]:
        """The `python -m container export` flags that ask for the same exports."""
        if not self.export_edge:
            return ["--no-edge"]
        flags = [] if self.export_onnx else ["--no-onnx"]
        if not self.quantize:
            return flags
        flags += [
            "--quantize",
            "--inference-type",
            self.inference_type,
            "--calibration-samples",
            str(self.calibration_samples),
        ]
        if self.quantized_ap50_floor != ExportSettings.quantized_ap50_floor:
            flags += ["--quantized-ap50-floor", str(self.quantized_ap50_floor)]
        return flags


@dataclass
class ExportStep:
    """One output of the model folder."""

    name: str  # what it writes, as the log and export.json call it
    run: Callable[[], Any]
    factor: float = 0.0  # estimate = factor x the SavedModel export's seconds
    required: bool = False  # the job failed without it
    needs: tuple[str, ...] = ()  # steps whose results it uses
    edge: bool = False  # recorded in export.json (else only in metrics.json)


@dataclass
class SequenceState:
    """Where the sequence is: what was done, what is running, what was left out."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    seconds: dict[str, float] = field(default_factory=dict)
    running: ExportStep | None = None
    running_since: float = 0.0


class ExportSequence:
    """Runs `ExportStep`s in order, under `stop`'s deadline; `write_records(skipped,
    complete, clean=False)` writes metrics.json / export.json: at the end (complete), before
    each step after a stop (provisional), and at the deadline (clean: temporaries removed)."""

    def __init__(
        self,
        stop: GracefulStop | None,
        write_records: Callable[[dict[str, str], bool], None],
        write_failure: Callable[[str], None],
    ) -> None:
        self.stop = stop
        self.write_records = write_records
        self.write_failure = write_failure
        self.state = SequenceState()

    def estimate(self, step: ExportStep) -> float:
        reference = self.state.seconds.get(SAVED_MODEL)
        return step.factor * reference if reference is not None else 0.0

    def _reason_to_skip(self, step: ExportStep) -> str:
        missing = [need for need in step.needs if need not in self.state.done]
        if missing:
            return f"needs {', '.join(missing)}, which was left out"
        if step.required or self.stop is None or not self.stop.flag.is_set():
            return ""
        estimate, remaining = self.estimate(step), self.stop.remaining()
        if estimate <= remaining:
            return ""
        return (
            f"left out after {self.stop.flag.signal_name}: it needs about {estimate:.0f} s and "
            f"{max(remaining, 0):.0f} s were left before the stop deadline"
        )

    def run(self, steps: list[ExportStep]) -> SequenceState:
        if self.stop is not None:
            self.stop.on_deadline(lambda: self._last_words(steps))
        for step in steps:
            reason = self._reason_to_skip(step)
            if reason:
                self.state.skipped[step.name] = reason
                logger.warning("%s: %s", step.name, reason)
                continue
            if self.stop is not None and self.stop.flag.is_set():
                # In case even the watchdog comes too late (a TFLite conversion holds the GIL
                # for up to ~10 s at a time): the records on disk already say this step and
                # the later ones are not done, until they are.
                self.write_records(self._not_done(steps, step, "the job ended during it"), False)
            self.state.running, self.state.running_since = step, time.monotonic()
            step.run()
            seconds = time.monotonic() - self.state.running_since
            self.state.seconds[step.name] = seconds
            self.state.done.append(step.name)
            self.state.running = None
            logger.info("%s written in %.1f s", step.name, seconds)
        self.write_records(self.state.skipped, True)
        return self.state

    def _not_done(self, steps: list[ExportStep], running: ExportStep | None, why: str):
        """`skipped` if the job ended now: the running step `why`, the later ones unstarted."""
        skipped = dict(self.state.skipped)
        for step in steps:
            if step.name in self.state.done or step.name in skipped:
                continue
            if running is not None and step.name == running.name:
                skipped[step.name] = why
            else:
                skipped[step.name] = "not started: the stop deadline had passed"
        return skipped

    def _last_words(self, steps: list[ExportStep]) -> int:
        """At the deadline (in the watchdog thread): record what is cut off and not done."""
        elapsed = time.monotonic() - self.state.running_since
        skipped = self._not_done(
            steps, self.state.running, f"cut off at the stop deadline after {elapsed:.0f} s"
        )
        for name, reason in skipped.items():
            if name not in self.state.skipped:
                logger.warning("%s: %s", name, reason)
        usable = all(step.name in self.state.done for step in steps if step.required)
        try:
            self.write_records(skipped, False, clean=True)
        except Exception:
            logger.exception("could not write the records of the stopped job")
        if usable:
            return 0
        self.write_failure(
            f"the job was stopped ({self.stop.flag.signal_name if self.stop else 'stop'}) and "
            "the stop deadline passed before the SavedModel was written, so there is no "
            "model; the checkpoint was saved: write the model later with `python -m "
            "container export` (README), or give the stop more time (stop_margin_seconds)"
        )
        return 1


# ------------------------------------------------------------------ the job's steps


def command_line(checkpoint: str, channel_dir: pathlib.Path, model_dir: pathlib.Path, settings):
    """The `export` command that writes this job's model folder again from its checkpoint."""
    words = [
        "python",
        "-m",
        "container",
        "export",
        "--checkpoint",
        str(checkpoint),
        "--channel",
        str(channel_dir),
        "--model-dir",
        str(model_dir),
        *settings.flags(),
    ]
    return shlex.join(words)


def write_report(
    saved_model: pathlib.Path, channel, model_dir: pathlib.Path, evaluate: bool, title: str
) -> dict[str, Any]:
    """COCO metrics of the SavedModel on the eval shards (or predictions on training images
    without eval shards) and eval.png; returns the metrics.json fields it sets."""
    if evaluate:
        logger.info("evaluating the SavedModel on %d eval shard(s)", len(channel.eval_shards))
        results = evaluation.predict(saved_model, channel.eval_shards)
        metrics = evaluation.coco_metrics(results, channel.label_map)
        note = "COCO metrics of the exported SavedModel on the eval shards"
    else:
        results = evaluation.predict(saved_model, channel.train_shards, TRAIN_ONLY_PREVIEW_IMAGES)
        metrics = None
        note = "no eval shards in the channel: nothing was evaluated"
    evaluation.draw_report(results, metrics, channel.label_map, model_dir / EVAL_PNG, title)
    return {"note": note, "eval": metrics}


def export_model(
    params: Any,
    checkpoint_path: str,
    channel,
    settings: ExportSettings,
    model_dir: pathlib.Path,
    report: dict[str, Any],
    *,
    evaluate: bool,
    stop: GracefulStop | None,
    write_failure: Callable[[str], None],
) -> dict[str, Any]:
    """Write the model folder from `checkpoint_path` (see the module doc); `report` holds
    the metrics.json fields known already (step, ...). Returns the metrics.json content."""
    model_dir = pathlib.Path(model_dir)
    report = {
        **report,
        "note": "the COCO evaluation was left out",
        "eval": None,
        "checkpoint": checkpoint_path,
    }
    command = command_line(checkpoint_path, channel.directory, model_dir, settings)
    commit = stop.commit if stop is not None else contextlib.nullcontext
    edge = None
    if settings.export_edge:
        edge = export_edge.EdgeExporter(
            params,
            checkpoint_path,
            model_dir,
            quantize=settings.quantize,
            inference_type=settings.inference_type,
            calibration_samples=settings.calibration_samples,
            train_shards=channel.train_shards,
            eval_shards=channel.eval_shards,
            label_map=channel.label_map,
            onnx=settings.export_onnx,
            ap50_ratio_floor=settings.quantized_ap50_floor,
            commit=commit,
        )
    saved_model = model_dir / SAVED_MODEL

    def export_saved_model() -> None:
        export.export_saved_model(params, checkpoint_path, model_dir, commit)

    def evaluate_saved_model() -> None:
        report.update(
            write_report(saved_model, channel, model_dir, evaluate, f"step {report.get('step')}")
        )

    steps = [
        ExportStep(SAVED_MODEL, export_saved_model, required=True),
        ExportStep(REPORT, evaluate_saved_model, ESTIMATE_FACTORS[REPORT], needs=(SAVED_MODEL,)),
    ]
    if edge is not None:
        steps.append(
            ExportStep(
                SAVED_MODEL_SCORE,
                edge.score_saved_model,
                ESTIMATE_FACTORS[SAVED_MODEL_SCORE],
                needs=(SAVED_MODEL,),
                edge=True,
            )
        )
        for name, run, needs in edge.steps():
            factor = ESTIMATE_FACTORS.get(name, ESTIMATE_FACTORS["quantised"])
            steps.append(ExportStep(name, run, factor, needs=needs, edge=True))
    edge_names = {step.name for step in steps if step.edge}

    def write_records(skipped: dict[str, str], complete: bool, clean: bool = False) -> None:
        entries = {name: {"reason": why, "command": command} for name, why in skipped.items()}
        report.pop("skipped_exports", None)
        if entries:
            report["skipped_exports"] = entries
        with commit():
            if clean:  # cut off at the deadline: what was being written goes
                export.remove_stale_temporaries(model_dir)
            if edge is not None:
                edge_skipped = {k: v for k, v in entries.items() if k in edge_names}
                edge.write_record(edge_skipped, plot=complete)
            evaluation.write_metrics_json(model_dir / METRICS_JSON, report)
        if entries and complete:
            logger.warning(
                "left out of %s: %s; write them later with: %s",
                model_dir,
                ", ".join(entries),
                command,
            )

    ExportSequence(stop, write_records, write_failure).run(steps)
    if edge is not None:
        report["edge_exports"] = edge.content()
    logger.info("model written to %s", model_dir)
    return report
