"""Every bad-input case of `build`: the one-line message, the exit code, and no output left."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_prep_helpers import add_item, image_bytes, leftovers, small_voc, voc_xml

from sagemaker_tfod.data_prep.__main__ import main


def _build(tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    code = main(["build", str(tmp_path / "voc"), str(tmp_path / "channel"), *extra])
    return code, capsys.readouterr().err


def assert_fails(tmp_path: Path, capsys, *needles: str, extra: tuple[str, ...] = ()) -> str:
    """Build fails with exit 2, one line naming `needles`, and leaves nothing behind."""
    code, err = _build(tmp_path, capsys, *extra)
    assert code == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, err
    for needle in needles:
        assert needle in error_lines[0], error_lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "channel").exists()
    assert leftovers(tmp_path) == []
    return error_lines[0]


def _dataset(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "channel" / "dataset.json").read_text())


def test_missing_image_is_an_error_naming_both_files(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (voc / "images" / "img-1.jpg").unlink()
    assert_fails(tmp_path, capsys, "img-1.xml", "img-1.jpg", "add the image", "--skip-bad-images")


def test_missing_image_skipped_on_request_and_recorded(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (voc / "images" / "img-1.jpg").unlink()
    code, err = _build(tmp_path, capsys, "--skip-bad-images")
    assert code == 0, err
    dataset = _dataset(tmp_path)
    assert dataset["images"] == 4
    assert [item["file"] for item in dataset["skipped"]] == ["img-1.jpg"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_or_truncated_image_is_an_error(tmp_path, capsys, damage):
    voc = small_voc(tmp_path / "voc")
    image = voc / "images" / "img-2.jpg"
    data = image.read_bytes()
    image.write_bytes(
        {"truncated": data[: len(data) // 2], "garbage": b"not an image" * 9, "empty": b""}[damage]
    )
    assert_fails(tmp_path, capsys, "img-2.jpg", "re-export", "--skip-bad-images")


def test_truncated_image_skipped_on_request(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    image = voc / "images" / "img-2.jpg"
    image.write_bytes(image.read_bytes()[:300])
    code, err = _build(tmp_path, capsys, "--skip-bad-images")
    assert code == 0, err
    dataset = _dataset(tmp_path)
    assert dataset["images"] == 4
    assert "truncated" in dataset["skipped"][0]["reason"]


def test_size_disagreeing_with_image_is_an_error(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "img-0.xml").write_text(
        voc_xml("img-0.jpg", 100, 100, [("dog", 4, 6, 40, 30)])
    )
    assert_fails(tmp_path, capsys, "img-0.xml", "100x100", "64x48", "fix <size>")


def test_size_with_same_aspect_scales_boxes_with_a_warning(tmp_path, capsys, caplog):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "img-0.xml").write_text(
        voc_xml("img-0.jpg", 128, 96, [("dog", 8, 12, 80, 60)])
    )
    code, err = _build(tmp_path, capsys)
    assert code == 0, err
    assert "img-0.xml: <size> 128x96 but the image is 64x48: boxes scaled by 0.5" in caplog.text
    assert any("scaled" in w["message"] for w in _dataset(tmp_path)["warnings"])


def test_box_partly_outside_is_clipped_with_a_warning(tmp_path, capsys, caplog):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "img-0.xml").write_text(
        voc_xml("img-0.jpg", 64, 48, [("dog", -5, 10, 70, 30)])
    )
    code, err = _build(tmp_path, capsys)
    assert code == 0, err
    assert "img-0.xml: box 1 (dog) clipped to the 64x48 image" in caplog.text
    assert _dataset(tmp_path)["boxes"] == 4


@pytest.mark.parametrize(
    "box", [(30, 10, 30, 20), (30, 10, 20, 20), (10, 25, 30, 5), (80, 60, 90, 70)]
)
def test_degenerate_or_outside_box_is_dropped_with_a_warning(tmp_path, capsys, caplog, box):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "img-0.xml").write_text(
        voc_xml("img-0.jpg", 64, 48, [("dog", *box), ("dog", 4, 6, 40, 30)])
    )
    code, err = _build(tmp_path, capsys)
    assert code == 0, err
    assert "img-0.xml: box 1 (dog) dropped" in caplog.text
    dataset = _dataset(tmp_path)
    assert dataset["boxes"] == 4  # 4 valid boxes overall, the bad one gone
    assert "dropped" in dataset["warnings"][0]["message"]


def test_class_absent_from_given_label_map_is_an_error(tmp_path, capsys):
    small_voc(tmp_path / "voc")
    (tmp_path / "voc" / "classes.txt").write_text("Dog\n")
    message = assert_fails(
        tmp_path,
        capsys,
        "classes.txt",
        "'cat'",
        "did you mean 'Dog'",
        "--skip-unknown-classes",
        extra=("--label-map", str(tmp_path / "voc" / "classes.txt")),
    )
    assert "'dog'" in message


def test_unknown_class_dropped_on_request(tmp_path, capsys):
    small_voc(tmp_path / "voc")
    (tmp_path / "voc" / "classes.txt").write_text("dog\n")
    classes = str(tmp_path / "voc" / "classes.txt")
    code, err = _build(tmp_path, capsys, "--label-map", classes, "--skip-unknown-classes")
    assert code == 0, err
    dataset = _dataset(tmp_path)
    assert dataset["classes"] == ["dog"]
    assert dataset["boxes"] == 2
    assert sum("not in the label map" in w["message"] for w in dataset["warnings"]) == 2


def test_near_duplicate_class_names_are_an_error_listing_both(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    add_item(voc, "odd", objects=[("Cat ", 2, 2, 20, 20)])
    assert_fails(
        tmp_path, capsys, "'Cat '", "odd.xml", "'cat'", "img-1.xml", "correct the spelling"
    )


def test_two_annotations_for_one_image_is_an_error(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "copy.xml").write_text(
        voc_xml("img-0.jpg", 64, 48, [("dog", 4, 6, 40, 30)])
    )
    assert_fails(
        tmp_path,
        capsys,
        "two annotations",
        "img-0.jpg",
        "copy.xml",
        "img-0.xml",
        "delete one or merge them",
    )


def test_malformed_xml_is_an_error(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "img-3.xml").write_text("<annotation><filename>img-3.jpg</file")
    assert_fails(tmp_path, capsys, "img-3.xml", "malformed XML", "re-export it or delete it")


def test_non_numeric_coordinate_is_an_error(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (voc / "annotations" / "img-3.xml").write_text(
        voc_xml("img-3.jpg", 64, 48, [("dog", "ten", 6, 40, 30)])
    )
    assert_fails(tmp_path, capsys, "img-3.xml", "'ten'", "not a number", "fix the coordinate")


def test_entity_expansion_is_refused_not_expanded(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<annotation><filename>img-3.jpg</filename><object><name>&lol2;</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "</annotation>"
    )
    (voc / "annotations" / "img-3.xml").write_text(bomb)
    assert_fails(
        tmp_path, capsys, "img-3.xml", "refused", "entities", "export the annotation again"
    )


def test_external_entity_is_refused(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    (tmp_path / "secret.txt").write_text("secret")
    xml = (
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{tmp_path}/secret.txt">]>'
        "<annotation><filename>img-3.jpg</filename><object><name>&x;</name><bndbox>"
        "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "</annotation>"
    )
    (voc / "annotations" / "img-3.xml").write_text(xml)
    code, err = _build(tmp_path, capsys)
    assert code == 2 and "refused" in err
    (tmp_path / "secret.txt").unlink()
    assert leftovers(tmp_path) == []


def test_float_coordinates_are_kept_exactly(tmp_path, capsys):
    voc = tmp_path / "voc"
    add_item(voc, "float", objects=[("cat", 4.5, 6.25, 40.75, 30.5)])
    code, err = _build(tmp_path, capsys, "--eval-fraction", "0")
    assert code == 0, err
    from sagemaker_tfod.data_prep.stats import iter_examples

    (example,) = iter_examples(tmp_path / "channel", "train")
    assert example["image/object/bbox/xmin"][0] == pytest.approx(4.5 / 64, abs=1e-7)
    assert example["image/object/bbox/ymin"][0] == pytest.approx(6.25 / 48, abs=1e-7)
    assert example["image/object/bbox/xmax"][0] == pytest.approx(40.75 / 64, abs=1e-7)
    assert example["image/object/bbox/ymax"][0] == pytest.approx(30.5 / 48, abs=1e-7)


@pytest.mark.parametrize(
    ("on_disk", "written"),
    [
        ("shot one", "vott-export%2Fimages%2Fshot%20one.jpg"),  # decoded name on disk
        ("vott-export%2Fshot", "vott-export%2Fshot.jpg"),  # export that kept the encoded name
    ],
)
def test_vott_url_encoded_file_names_are_found(tmp_path, capsys, on_disk, written):
    voc = tmp_path / "voc"
    add_item(voc, on_disk, objects=[("cat", 4, 6, 40, 30)])
    (voc / "annotations" / f"{on_disk}.xml").write_text(
        voc_xml(written, 64, 48, [("cat", 4, 6, 40, 30)])
    )
    code, err = _build(tmp_path, capsys, "--eval-fraction", "0")
    assert code == 0, err
    from sagemaker_tfod.data_prep.stats import iter_examples

    (example,) = iter_examples(tmp_path / "channel", "train")
    assert example["image/filename"] == [f"images/{on_disk}.jpg".encode()]


def test_image_without_objects_is_kept_and_counted(tmp_path, capsys):
    small_voc(tmp_path / "voc")
    code, err = _build(tmp_path, capsys)
    assert code == 0, err
    dataset = _dataset(tmp_path)
    assert dataset["images"] == 5
    assert dataset["negative_images"] == 1


def test_png_greyscale_and_cmyk_are_accepted(tmp_path, capsys):
    voc = tmp_path / "voc"
    add_item(voc, "png", fmt="PNG")
    add_item(voc, "grey", mode="L")
    add_item(voc, "cmyk", mode="CMYK")
    code, err = _build(tmp_path, capsys, "--eval-fraction", "0")
    assert code == 0, err
    dataset = _dataset(tmp_path)
    assert dataset["images"] == 3
    assert dataset["changed_images"] == [
        {"file": "images/cmyk.jpg", "change": "CMYK converted to RGB"}
    ]
    from sagemaker_tfod.data_prep.stats import iter_examples

    formats = {
        e["image/filename"][0]: e["image/format"][0]
        for e in iter_examples(tmp_path / "channel", "train")
    }
    assert formats == {
        b"images/png.png": b"png",
        b"images/grey.jpg": b"jpeg",
        b"images/cmyk.jpg": b"jpeg",
    }


def test_other_formats_become_png(tmp_path, capsys):
    voc = tmp_path / "voc"
    add_item(voc, "bmp")
    bmp = voc / "images" / "bmp.bmp"
    bmp.write_bytes(image_bytes(64, 48, ((8, 8, 32, 30),), fmt="BMP"))
    (voc / "images" / "bmp.jpg").unlink()
    (voc / "annotations" / "bmp.xml").write_text(
        voc_xml("bmp.bmp", 64, 48, [("cat", 8, 8, 32, 30)])
    )
    code, err = _build(tmp_path, capsys, "--eval-fraction", "0")
    assert code == 0, err
    assert _dataset(tmp_path)["changed_images"][0]["change"] == "BMP converted to PNG"


def test_failure_in_a_later_shard_leaves_no_half_channel(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc", count=8)
    (voc / "images" / "img-7.jpg").write_bytes(b"\xff\xd8broken")
    assert_fails(tmp_path, capsys, "img-7.jpg", extra=("--shards", "4", "--workers", "2"))


def test_existing_channel_is_kept_unless_overwrite(tmp_path, capsys):
    small_voc(tmp_path / "voc")
    (tmp_path / "channel").mkdir()
    (tmp_path / "channel" / "mine.txt").write_text("keep")
    code, err = _build(tmp_path, capsys)
    assert code == 2 and "--overwrite" in err
    assert (tmp_path / "channel" / "mine.txt").read_text() == "keep"
    code, err = _build(tmp_path, capsys, "--overwrite")
    assert code == 0, err
    assert not (tmp_path / "channel" / "mine.txt").exists()
    assert leftovers(tmp_path) == ["channel"]


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [("--eval-fraction", "1.5", "--eval-fraction 1.5"), ("--shards", "0", "--shards 0")],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, flag, value, needle):
    small_voc(tmp_path / "voc")
    assert_fails(tmp_path, capsys, needle, extra=(flag, value))


def test_no_annotations_is_an_error(tmp_path, capsys):
    (tmp_path / "voc").mkdir()
    assert_fails(tmp_path, capsys, "no .xml annotation files")


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    from sagemaker_tfod.data_prep import build

    small_voc(tmp_path / "voc", count=8)
    real_write_shard = build._write_shard
    calls = []

    def interrupted_after_first_shard(job):
        calls.append(job[0])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write_shard(job)

    monkeypatch.setattr(build, "_write_shard", interrupted_after_first_shard)
    with pytest.raises(KeyboardInterrupt):
        build.build_channel(tmp_path / "voc", tmp_path / "channel", shards=3, workers=1)
    assert len(calls) == 2
    assert leftovers(tmp_path) == []


def test_tfrecord_command_failure_leaves_no_shards(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    assert main(["csv", str(voc), str(voc / "all.csv"), "--images", str(voc)]) == 0
    assert main(["label-map", str(voc / "all.csv"), str(voc)]) == 0
    (voc / "images" / "img-2.jpg").write_bytes(b"\xff\xd8\xff\xe0broken")
    code = main(
        [
            "tfrecord",
            str(voc / "all.csv"),
            str(voc / "label_map.pbtxt"),
            str(tmp_path / "shards"),
            "--images",
            str(voc),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "img-2.jpg" in err and "unreadable or truncated" in err
    assert leftovers(tmp_path) == []


def test_csv_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    labels = voc / "labels.csv"
    labels.write_bytes("images/img-0.jpg,4,6,40,30,caf\xe9\n".encode("latin-1"))
    code = main(["build", str(labels), str(tmp_path / "channel")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "labels.csv: not UTF-8 text" in err and "save it as UTF-8" in err
    assert leftovers(tmp_path) == []


def test_failed_build_stops_the_workers_before_removing_the_staging_folder(
    tmp_path, capsys, monkeypatch
):
    import multiprocessing

    from sagemaker_tfod.data_prep import files

    voc = small_voc(tmp_path / "voc", count=8)
    (voc / "images" / "img-1.jpg").write_bytes(b"\xff\xd8broken")
    real_rmtree = files.shutil.rmtree
    alive_at_cleanup = []

    def recording_rmtree(path, *args, **kwargs):
        alive_at_cleanup.append(len(multiprocessing.active_children()))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(files.shutil, "rmtree", recording_rmtree)
    assert_fails(tmp_path, capsys, "img-1.jpg", extra=("--shards", "4", "--workers", "2"))
    # A worker still alive here could write a shard into the folder being deleted.
    assert alive_at_cleanup == [0]


def test_tfrecord_command_ignores_a_stale_staging_folder(tmp_path, capsys):
    voc = small_voc(tmp_path / "voc")
    assert main(["csv", str(voc), str(voc / "all.csv"), "--images", str(voc)]) == 0
    assert main(["label-map", str(voc / "all.csv"), str(voc)]) == 0
    out = tmp_path / "shards"
    stale = out / ".train.tmp"  # what a run killed with SIGKILL left behind
    stale.mkdir(parents=True)
    (stale / "train-00003-of-00009.tfrecord").write_bytes(b"half a shard")
    args = ["tfrecord", str(voc / "all.csv"), str(voc / "label_map.pbtxt"), str(out)]
    assert main([*args, "--images", str(voc)]) == 0, capsys.readouterr().err
    shards = sorted(path.name for path in out.glob("train-*.tfrecord"))
    assert shards == ["train-00000-of-00001.tfrecord"]


def test_unwritable_output_is_a_one_line_error(tmp_path, capsys):
    small_voc(tmp_path / "voc")
    (tmp_path / "file").write_text("not a folder")
    code = main(["build", str(tmp_path / "voc"), str(tmp_path / "file" / "channel")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    assert "file" in err and "check the path" in err
    assert leftovers(tmp_path) == ["file"]


def test_stats_of_a_damaged_shard_is_a_one_line_error(tmp_path, capsys):
    small_voc(tmp_path / "voc")
    assert main(["build", str(tmp_path / "voc"), str(tmp_path / "channel")]) == 0
    (shard,) = (tmp_path / "channel").glob("train-*.tfrecord")
    data = bytearray(shard.read_bytes())
    data[40] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "channel"), "--no-png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and shard.name in err
    assert "corrupt payload checksum" in err and "build the channel again" in err


def test_split_command_warns_about_classes_left_out_of_eval(tmp_path, capsys, caplog):
    rows = [
        "filename,width,height,class,xmin,ymin,xmax,ymax",
        "a.jpg,64,48,pair,1,1,9,9",
        "a.jpg,64,48,only_a,1,1,9,9",
        "b.jpg,64,48,pair,1,1,9,9",
        "b.jpg,64,48,only_b,1,1,9,9",
        "c.jpg,64,48,x,1,1,9,9",
        "d.jpg,64,48,x,1,1,9,9",
    ]
    (tmp_path / "all.csv").write_text("\n".join(rows) + "\n")
    assert main(["split", str(tmp_path / "all.csv"), str(tmp_path), "--eval-fraction", "0.5"]) == 0
    assert "class(es) 'pair' have two or more images but none in eval" in caplog.text
