"""The `python -m data_prep` commands end to end: help, no TensorFlow, raccoon, stats."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from data_prep_helpers import RACCOON, REPO, add_item, run_cli, small_voc

from sagemaker_tfod.data_prep.__main__ import main
from sagemaker_tfod.data_prep.build import build_channel
from sagemaker_tfod.data_prep.stats import iter_examples
from sagemaker_tfod.data_prep.synth import write_synthetic_voc

SUBCOMMANDS = ("build", "synth", "csv", "label-map", "split", "tfrecord", "stats")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m data_prep " + command in capsys.readouterr().out


def test_every_argument_has_help_text():
    from sagemaker_tfod.data_prep.__main__ import make_parser

    (subcommands,) = [a for a in make_parser()._actions if a.dest == "command"]
    assert sorted(subcommands.choices) == sorted(SUBCOMMANDS)
    missing = [
        f"{name} {action.dest}"
        for name, parser in subcommands.choices.items()
        for action in parser._actions
        if not action.help
    ]
    assert missing == []


# Runs the commands in a fresh interpreter where `import tensorflow` fails, and checks
# that nothing imported it (a laptop without TensorFlow must be able to run data_prep).
_NO_TF = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("tensorflow is blocked for this test")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    from sagemaker_tfod.data_prep.__main__ import main
    out = sys.argv[1]
    steps = [
        ["synth", out + "/voc", "--num-images", "12", "--image-size", "64"],
        ["build", out + "/voc", out + "/channel", "--shards", "2"],
        ["stats", out + "/channel"],
        ["csv", out + "/voc", out + "/steps/all.csv", "--images", out + "/voc"],
        ["label-map", out + "/steps/all.csv", out + "/steps"],
        ["split", out + "/steps/all.csv", out + "/steps"],
        ["tfrecord", out + "/steps/train.csv", out + "/steps/label_map.pbtxt",
         out + "/steps/shards", "--images", out + "/voc"],
    ]
    for step in steps:
        code = main(step)
        assert code == 0, step
    blocked = sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow")
    assert not blocked, blocked
    print("NO_TF_OK")
    """
)


def test_all_commands_run_with_tensorflow_unimportable(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _NO_TF, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "NO_TF_OK" in result.stdout
    assert (tmp_path / "channel" / "dataset.png").stat().st_size > 10_000
    steps = tmp_path / "steps"
    assert sorted(p.name for p in steps.iterdir()) == [
        "all.csv",
        "eval.csv",
        "label_map.pbtxt",
        "labels.txt",
        "shards",
        "train.csv",
    ]
    train_rows = {line.split(",")[0] for line in (steps / "train.csv").read_text().splitlines()[1:]}
    eval_rows = {line.split(",")[0] for line in (steps / "eval.csv").read_text().splitlines()[1:]}
    assert train_rows and eval_rows and not train_rows & eval_rows
    names = [e["image/filename"][0].decode() for e in iter_examples(steps / "shards", "train")]
    assert sorted(names) == sorted(train_rows)


def test_build_command_output_and_one_line_error(tmp_path):
    small_voc(tmp_path / "voc")
    result = run_cli("build", str(tmp_path / "voc"), str(tmp_path / "channel"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "images": 5,
        "boxes": 4,
        "negative_images": 1,
        "classes": ["cat", "dog"],
    }
    again = run_cli("build", str(tmp_path / "voc"), str(tmp_path / "channel"))
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0
    assert again.stderr.startswith("error: ") and "--overwrite" in again.stderr


def test_synth_is_deterministic_and_has_negatives(tmp_path):
    first = write_synthetic_voc(tmp_path / "a", num_images=20, image_size=64, seed=4)
    second = write_synthetic_voc(tmp_path / "b", num_images=20, image_size=64, seed=4)
    assert first == second
    assert first["images"] == 20 and first["negative_images"] >= 1
    assert all(first[name] > 0 for name in ("circle", "square", "triangle"))
    for name in ("images/synth-0007.jpg", "annotations/synth-0007.xml"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_flat_folder_and_csv_and_coco_inputs_give_the_same_examples(tmp_path):
    voc = small_voc(tmp_path / "nested")
    flat = tmp_path / "flat"
    flat.mkdir()
    for path in list((voc / "images").iterdir()) + list((voc / "annotations").iterdir()):
        (flat / path.name).write_bytes(path.read_bytes())
    assert main(["build", str(flat), str(tmp_path / "c1"), "--eval-fraction", "0"]) == 0
    assert main(["csv", str(flat), str(flat / "all.csv"), "--images", str(flat)]) == 0
    assert main(["build", str(flat / "all.csv"), str(tmp_path / "c2"), "--eval-fraction", "0"]) == 0
    coco = {
        "images": [],
        "annotations": [],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    for number, line in enumerate((flat / "all.csv").read_text().splitlines()[1:], start=1):
        name, width, height, cls, *box = line.split(",")
        if not any(image["file_name"] == name for image in coco["images"]):
            coco["images"].append(
                {"id": number, "file_name": name, "width": int(width), "height": int(height)}
            )
        if cls:
            x0, y0, x1, y1 = map(float, box)
            image_id = next(i["id"] for i in coco["images"] if i["file_name"] == name)
            coco["annotations"].append(
                {
                    "id": number,
                    "image_id": image_id,
                    "category_id": 1 if cls == "cat" else 2,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    (flat / "coco.json").write_text(json.dumps(coco))
    assert (
        main(["build", str(flat / "coco.json"), str(tmp_path / "c3"), "--eval-fraction", "0"]) == 0
    )

    def boxes(channel):
        return sorted(
            (
                e["image/filename"][0],
                tuple(e["image/object/bbox/xmin"]),
                tuple(e["image/object/class/label"]),
            )
            for e in iter_examples(channel, "train")
        )

    assert boxes(tmp_path / "c1") == boxes(tmp_path / "c2") == boxes(tmp_path / "c3")
    assert len(boxes(tmp_path / "c1")) == 5


@pytest.mark.skipif(
    not RACCOON.is_dir(),
    reason=f"raccoon dataset not present at {RACCOON} (only on the project's build machine)",
)
def test_raccoon_folder_gives_200_images_and_217_boxes(tmp_path):
    result = run_cli("build", str(RACCOON), str(tmp_path / "channel"))
    assert result.returncode == 0, result.stderr
    dataset = json.loads((tmp_path / "channel" / "dataset.json").read_text())
    assert (dataset["images"], dataset["boxes"]) == (200, 217)
    assert dataset["skipped"] == [] and dataset["classes"] == ["raccoon"]
    assert dataset["splits"]["eval"]["images"] == 40
    stats = run_cli("stats", str(tmp_path / "channel"))
    assert stats.returncode == 0, stats.stderr
    assert "train: 160 images" in stats.stdout
    assert (tmp_path / "channel" / "dataset.png").stat().st_size > 50_000


def test_csv_command_reads_retinanet_csv_and_coco_json(tmp_path):
    retinanet = tmp_path / "retinanet.csv"
    retinanet.write_text("img/a.jpg,1,2,30.5,40,cat\nimg/a.jpg,5,5,9,9,dog\nimg/b.jpg,,,,,\n")
    assert main(["csv", str(retinanet), str(tmp_path / "from_retinanet.csv")]) == 0
    assert (tmp_path / "from_retinanet.csv").read_text().splitlines() == [
        "filename,width,height,class,xmin,ymin,xmax,ymax",
        "img/a.jpg,0,0,cat,1,2,30.5,40",
        "img/a.jpg,0,0,dog,5,5,9,9",
        "img/b.jpg,0,0,,,,,",
    ]
    coco = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 8, "file_name": "b.jpg", "width": 32, "height": 32},
        ],
        "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "bbox": [1, 2, 10.5, 20]}],
        "categories": [{"id": 2, "name": "cat"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    assert main(["csv", str(tmp_path / "coco.json"), str(tmp_path / "from_coco.csv")]) == 0
    assert (tmp_path / "from_coco.csv").read_text().splitlines()[1:] == [
        "a.jpg,64,48,cat,1,2,11.5,22",
        "b.jpg,32,32,,,,,",
    ]


def test_training_shards_mix_classes_of_a_folder_sorted_by_class(tmp_path):
    from sagemaker_tfod.data_prep.examples import parse_example
    from sagemaker_tfod.data_prep.stats import shard_paths
    from sagemaker_tfod.data_prep.tfrecord_io import iter_records

    voc = tmp_path / "voc"
    for number in range(10):
        add_item(voc, f"a-cat-{number:02d}", objects=[("cat", 4, 6, 40, 30)])
        add_item(voc, f"b-dog-{number:02d}", objects=[("dog", 4, 6, 40, 30)])
    build_channel(voc, tmp_path / "channel", eval_fraction=0.0, shards=2, workers=1)
    for shard in shard_paths(tmp_path / "channel", "train"):
        labels = {parse_example(r)["image/object/class/text"][0] for r in iter_records(shard)}
        assert labels == {b"cat", b"dog"}, shard.name
    again = tmp_path / "again"
    build_channel(voc, again, eval_fraction=0.0, shards=2, workers=1)
    for first, second in zip(
        shard_paths(tmp_path / "channel", "train"), shard_paths(again, "train"), strict=True
    ):
        assert first.read_bytes() == second.read_bytes()  # seeded: the same bytes again
    # The step-by-step `tfrecord` command orders training shards the same way.
    assert main(["csv", str(voc), str(tmp_path / "all.csv"), "--images", str(voc)]) == 0
    label_map = str(again / "label_map.pbtxt")
    out = tmp_path / "steps"
    args = ["tfrecord", str(tmp_path / "all.csv"), label_map, str(out), "--shards", "2"]
    assert main([*args, "--images", str(voc)]) == 0
    for shard in shard_paths(out, "train"):
        labels = {parse_example(r)["image/object/class/text"][0] for r in iter_records(shard)}
        assert labels == {b"cat", b"dog"}, shard.name


def test_build_logs_progress_of_xml_parsing_and_images(tmp_path, monkeypatch, caplog):
    from sagemaker_tfod.data_prep import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    caplog.set_level("INFO", logger="sagemaker_tfod.data_prep")
    small_voc(tmp_path / "voc", count=8)
    build_channel(tmp_path / "voc", tmp_path / "channel", workers=2)
    lines = [
        r.getMessage() for r in caplog.records if r.name == "sagemaker_tfod.data_prep.progress"
    ]
    assert any(line.startswith("1/9 XML files, ") and "left" in line for line in lines), lines
    assert any(line.startswith("9/9 images in ") for line in lines), lines


def test_unicode_file_and_class_names(tmp_path):
    voc = tmp_path / "voc"
    add_item(voc, "café über 猫", objects=[("chat noir é", 4, 6, 40, 30)])
    summary = build_channel(voc, tmp_path / "channel", eval_fraction=0.0)
    assert summary["classes"] == ["chat noir é"]
    (example,) = iter_examples(tmp_path / "channel", "train")
    assert example["image/filename"] == ["images/café über 猫.jpg".encode()]
    assert example["image/object/class/text"] == ["chat noir é".encode()]
    labels = (tmp_path / "channel" / "labels.txt").read_text(encoding="utf-8")
    assert labels == "chat noir é\n"


def test_build_of_plain_jpegs_imports_no_pillow_and_numpy_only_at_the_end(tmp_path):
    """Start-up is part of what a user waits for: with google_crc32c (in the lock) and
    JPEGs that need no change, `build` needs no Pillow, and numpy only for the anchor fit in
    dataset.json, after the shards are written."""
    pytest.importorskip("google_crc32c")
    import subprocess

    small_voc(tmp_path / "voc")
    script = (
        "import sys\n"
        "from data_prep.__main__ import main\n"
        f"assert main(['build', {str(tmp_path / 'voc')!r}, {str(tmp_path / 'ch')!r}]) == 0\n"
        "print(sorted(m for m in ('numpy', 'PIL', 'tensorflow') if m in sys.modules))\n"
        "from sagemaker_tfod.data_prep import build, summary\n"
        "print('numpy' in vars(build), 'np' in vars(summary))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2:] == ["['numpy']", "False False"]


def test_elongated_synth_set_and_the_anchor_fit_in_dataset_json_and_stats(tmp_path, capsys):
    counts = write_synthetic_voc(tmp_path / "bars", num_images=20, image_size=128, aspect_ratio=6)
    from sagemaker_tfod.data_prep.annotations import read_voc_file

    ratios = [
        (box.xmax - box.xmin) / (box.ymax - box.ymin)
        for xml in sorted((tmp_path / "bars" / "annotations").glob("*.xml"))
        for box in read_voc_file(str(xml)).boxes
    ]
    assert len(ratios) == counts["boxes"] > 10
    assert all(5.0 <= r <= 7.0 or 1 / 7.0 <= r <= 1 / 5.0 for r in ratios), ratios
    assert any(r > 1 for r in ratios) and any(r < 1 for r in ratios)
    with pytest.raises(Exception, match=r"--aspect-ratio 0\.5: use 1 or more"):
        write_synthetic_voc(tmp_path / "bad", num_images=2, aspect_ratio=0.5)

    summary = build_channel(tmp_path / "bars", tmp_path / "bars_channel", workers=1)
    fit = summary["anchor_fit"]["presets"]["retinanet_mobilenetv2_fpnlite_320"]
    assert fit["input_size"] == 320 and fit["boxes"] == summary["splits"]["train"]["boxes"]
    assert fit["best_possible_recall"] < 0.1  # aspect ratios 0.5-2 cannot reach 6:1
    recorded = json.loads((tmp_path / "bars_channel" / "dataset.json").read_text())
    assert recorded["anchor_fit"] == summary["anchor_fit"]

    write_synthetic_voc(tmp_path / "shapes", num_images=20, image_size=128)
    build_channel(tmp_path / "shapes", tmp_path / "shapes_channel", workers=1)
    assert main(["stats", str(tmp_path / "shapes_channel"), "--no-png"]) == 0
    printed = capsys.readouterr().out
    assert "retinanet_mobilenetv2_fpnlite_320 at 320 px: best possible recall 1.000" in printed
    # At 128 px the smallest shapes are below the smallest default anchor (32 px).
    assert main(["stats", str(tmp_path / "shapes_channel"), "--no-png", "--image-size", "128"]) == 0
    printed = capsys.readouterr().out
    line = next(x for x in printed.splitlines() if "fpnlite_320 at 128 px" in x)
    assert float(line.split("recall ")[1].split(",")[0]) < 0.95
