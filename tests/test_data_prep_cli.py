"""The `python -m data_prep` commands end to end: help, no TensorFlow, raccoon, stats."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from data_prep_helpers import RACCOON, REPO, run_cli, small_voc

from data_prep.__main__ import main
from data_prep.stats import iter_examples
from data_prep.synth import write_synthetic_voc

SUBCOMMANDS = ("build", "synth", "csv", "label-map", "split", "tfrecord", "stats")


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: python -m data_prep " + command in capsys.readouterr().out


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
    from data_prep.__main__ import main
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
