"""Pure pieces of data_prep: CRC-32C, Example encoding, readers, class names, split."""

from __future__ import annotations

import json
import os
import random

import pytest
from data_prep_helpers import image_bytes

from sagemaker_tfod.data_prep import crc32c, schema
from sagemaker_tfod.data_prep.annotations import (
    Box,
    ImageAnnotation,
    format_csv,
    parse_coco_json,
    parse_csv,
)
from sagemaker_tfod.data_prep.classes import check_near_duplicates, files_by_class, resolve_classes
from sagemaker_tfod.data_prep.errors import DataPrepError
from sagemaker_tfod.data_prep.examples import ExampleBoxes, detection_example, parse_example
from sagemaker_tfod.data_prep.images import prepare_image, read_header
from sagemaker_tfod.data_prep.label_map import LabelMapError, format_label_map, parse_label_map
from sagemaker_tfod.data_prep.split import classes_missing_from_eval, split_images
from sagemaker_tfod.data_prep.tfrecord_io import RecordWriter, frame_records


def _slow_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_vectors():
    assert crc32c.crc32c_small(b"123456789") == 0xE3069283
    assert crc32c.crc32c_many([b"123456789", b"", bytes(32)]) == [
        0xE3069283,
        0x00000000,
        0x8A9136AA,
    ]


def test_crc32c_many_matches_bitwise_reference_at_every_length_class():
    rng = random.Random(1)
    sizes = [0, 1, 3, 4, 5, 1019, 1020, 1021, 1024, 2047, 4096, 9999]
    buffers = [bytes(rng.getrandbits(8) for _ in range(n)) for n in sizes]
    assert crc32c.crc32c_many(buffers) == [_slow_crc32c(b) for b in buffers]


def test_masked_crc_matches_tfrecord_definition():
    crc = 0x12345678
    rotated = ((crc >> 15) | (crc << 17)) & 0xFFFFFFFF
    assert crc32c.masked_crc(crc) == (rotated + 0xA282EAD8) & 0xFFFFFFFF


def _example(**overrides) -> bytes:
    fields = dict(
        encoded=b"\xff\xd8jpeg",
        image_format="jpeg",
        width=640,
        height=480,
        filename="images/a b.jpg",
        source_id=7,
        sha256="ab" * 32,
        boxes=ExampleBoxes([0.1], [0.2], [0.5], [0.75], [2], ["dog"], [0], [1]),
    )
    fields.update(overrides)
    return detection_example(**fields)


def test_example_round_trips_through_our_reader():
    parsed = parse_example(_example())
    assert parsed[schema.IMAGE_SOURCE_ID] == [b"7"]
    assert parsed[schema.IMAGE_FILENAME] == [b"images/a b.jpg"]
    assert parsed[schema.IMAGE_WIDTH] == [640]
    assert parsed[schema.BBOX_YMAX] == [0.75]
    assert parsed[schema.CLASS_LABEL] == [2]
    assert parsed[schema.OBJECT_TRUNCATED] == [1]
    assert parsed[schema.OBJECT_AREA] == [pytest.approx(0.4 * 0.55 * 640 * 480, rel=1e-6)]


def test_example_bytes_equal_protobuf_library_parse():
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    # Build the tf.train.Example schema with the protobuf runtime (no TensorFlow).
    proto = descriptor_pb2.FileDescriptorProto(name="ex.proto", package="t", syntax="proto3")
    for name, field_type in (("BytesList", 12), ("FloatList", 2), ("Int64List", 3)):
        message = proto.message_type.add(name=name)
        message.field.add(name="value", number=1, type=field_type, label=3)
    feature = proto.message_type.add(name="Feature")
    for number, name in enumerate(("BytesList", "FloatList", "Int64List"), start=1):
        feature.field.add(
            name=name.lower(),
            number=number,
            type=11,
            label=1,
            type_name=f".t.{name}",
            oneof_index=0,
        )
    feature.oneof_decl.add(name="kind")
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=9, label=1)
    entry.field.add(name="value", number=2, type=11, label=1, type_name=".t.Feature")
    features.field.add(
        name="feature", number=1, type=11, label=3, type_name=".t.Features.FeatureEntry"
    )
    example = proto.message_type.add(name="Example")
    example.field.add(name="features", number=1, type=11, label=1, type_name=".t.Features")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("t.Example"))
    message = cls.FromString(_example(boxes=ExampleBoxes([], [], [], [], [], [], [], [])))
    feature_map = message.features.feature
    assert feature_map[schema.IMAGE_HEIGHT].int64list.value == [480]
    assert feature_map[schema.IMAGE_FORMAT].byteslist.value == [b"jpeg"]
    assert list(feature_map[schema.BBOX_XMIN].floatlist.value) == []
    assert feature_map[schema.BBOX_XMIN].WhichOneof("kind") == "floatlist"
    assert message.SerializeToString(deterministic=True) == _example(
        boxes=ExampleBoxes([], [], [], [], [], [], [], [])
    )


def test_frame_records_layout():
    data = frame_records([b"abc", b""])
    assert data[:8] == (3).to_bytes(8, "little")
    assert data[12:15] == b"abc"
    assert len(data) == (12 + 3 + 4) + (12 + 0 + 4)


def test_jpeg_header_reads_size_and_exif_orientation():
    header = read_header(image_bytes(40, 30, orientation=6))
    assert (header.width, header.height, header.orientation) == (40, 30, 6)
    assert header.displayed_size == (30, 40)
    assert read_header(image_bytes(40, 30, fmt="PNG")).image_format == "png"


def test_prepare_image_rotates_only_when_asked():
    data = image_bytes(40, 30, orientation=8)
    rotated = prepare_image(data, "x.jpg")
    assert (rotated.width, rotated.height) == (30, 40)
    assert "EXIF orientation 8" in rotated.change
    kept = prepare_image(data, "x.jpg", rotate_exif=False)
    assert kept.encoded is data


def test_voc_reader_uses_tag_names_not_positions():
    from sagemaker_tfod.data_prep.annotations import parse_voc_xml

    xml = (
        b"<annotation><object><bndbox><ymax>30.5</ymax><xmax>40</xmax><ymin>6</ymin>"
        b"<xmin>4.5</xmin></bndbox><difficult>1</difficult><name>cat</name></object>"
        b"<size><height>48</height><width>64</width></size>"
        b"<filename>a%2Fb.jpg</filename></annotation>"
    )
    item = parse_voc_xml(xml, "a.xml")
    assert item.filename == "a%2Fb.jpg"  # as written; decoded when finding the image
    assert (item.width, item.height) == (64, 48)
    assert item.boxes == (Box("cat", 4.5, 6.0, 40.0, 30.5, difficult=1),)


def test_retinanet_csv_with_negative_rows():
    items = parse_csv("img/a.jpg,1,2,30,40,cat\nimg/a.jpg,5,5,9,9,dog\nimg/b.jpg,,,,,\n", "r.csv")
    assert [(i.filename, len(i.boxes)) for i in items] == [("img/a.jpg", 2), ("img/b.jpg", 0)]
    assert items[0].boxes[1] == Box("dog", 5, 5, 9, 9)


def test_our_csv_round_trips():
    items = [
        ImageAnnotation("a.jpg", 64, 48, (Box("cat", 1.5, 2, 30, 40),), "x"),
        ImageAnnotation("b.jpg", 64, 48, (), "x"),
    ]
    again = parse_csv(format_csv(items), "x")
    assert [(i.filename, i.width, i.boxes) for i in again] == [
        (i.filename, i.width, i.boxes) for i in items
    ]


def test_unknown_csv_layout_is_an_error():
    with pytest.raises(DataPrepError, match="unknown CSV layout"):
        parse_csv("a,b,c\n1,2,3\n", "bad.csv")


def test_coco_json_reader():
    document = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [1, 2, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "cat"}],
    }
    a, b = parse_coco_json(json.dumps(document), "c.json")
    assert a.boxes == (Box("cat", 1, 2, 11, 22),)
    assert a.notes == ("crowd annotation 2 dropped",)
    assert b.boxes == ()
    document["images"].append({"id": 3, "file_name": "a.jpg"})
    with pytest.raises(DataPrepError, match=r"'a\.jpg' is listed twice"):
        parse_coco_json(json.dumps(document), "c.json")


def _items(spec: dict[str, list[str]]) -> list[ImageAnnotation]:
    return [
        ImageAnnotation(name, 10, 10, tuple(Box(c, 0, 0, 5, 5) for c in classes), f"{name}.xml")
        for name, classes in spec.items()
    ]


def test_near_duplicates_listed_with_files():
    files = files_by_class(_items({"a": ["Cat"], "b": ["cat"], "c": ["dog"]}))
    with pytest.raises(DataPrepError) as error:
        check_near_duplicates(files)
    assert "'Cat' in a.xml vs 'cat' in b.xml" in str(error.value)


def test_classes_sorted_or_in_given_order():
    files = files_by_class(_items({"a": ["zebra", "ant"]}))
    assert resolve_classes(files, None)[0] == ["ant", "zebra"]
    assert resolve_classes(files, ["zebra", "ant", "bee"])[0] == ["zebra", "ant", "bee"]


def test_label_map_round_trip_and_errors():
    text = format_label_map(["cat", "it's"])
    assert parse_label_map(text) == {1: "cat", 2: "it's"}
    with pytest.raises(LabelMapError):
        parse_label_map("item { id: 1 name: 'a' }\nitem { id: 1 name: 'b' }")
    assert issubclass(LabelMapError, DataPrepError)


def test_split_is_by_image_seeded_and_stratified():
    rng = random.Random(0)
    spec = {f"img{i}": [rng.choice(["common", "common", "common", "mid"])] for i in range(60)}
    spec.update({"rare1": ["rare"], "rare2": ["rare", "common"], "solo": ["single"], "neg": []})
    items = _items(spec)
    train, evaluation = split_images(items, 0.2, seed=1)
    names_train = {i.filename for i in train}
    names_eval = {i.filename for i in evaluation}
    assert not names_train & names_eval
    assert len(names_train | names_eval) == len(items)
    eval_classes = {b.class_name for i in evaluation for b in i.boxes}
    train_classes = {b.class_name for i in train for b in i.boxes}
    assert {"common", "mid", "rare"} <= eval_classes
    assert "single" in train_classes and "single" not in eval_classes
    assert {"common", "mid", "rare", "single"} <= train_classes
    assert split_images(items, 0.2, seed=1) == (train, evaluation)
    assert split_images(items, 0.2, seed=2) != (train, evaluation)
    assert abs(len(evaluation) - round(0.2 * len(items))) <= 1


def test_split_rejects_bad_fraction():
    with pytest.raises(DataPrepError, match="--eval-fraction"):
        split_images(_items({"a": ["x"]}), 1.0, 0)


def test_numpy_crc_path_matches_reference_even_when_a_c_library_is_installed():
    buffers = [os.urandom(n) for n in (0, 7, 5000, 70000)]
    assert crc32c.crc32c_many_numpy(buffers) == [_slow_crc32c(b) for b in buffers]


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_entity_declarations_refused_in_any_encoding(encoding):
    from sagemaker_tfod.data_prep.annotations import parse_voc_xml

    text = (
        f'<?xml version="1.0" encoding="{encoding.upper()}"?>'
        '<!DOCTYPE a [<!ENTITY x "expanded">]>'
        "<annotation><filename>&x;</filename></annotation>"
    )
    with pytest.raises(DataPrepError, match="refused"):
        parse_voc_xml(text.encode(encoding), "bomb.xml")


def test_image_index_finds_relative_absolute_basename_and_stem(tmp_path):
    from sagemaker_tfod.data_prep.matching import ImageIndex

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "x.jpg").write_bytes(b"")
    (tmp_path / "y.PNG").write_bytes(b"")
    index = ImageIndex(tmp_path)

    def find(filename, path_hint=""):
        found = index.find(ImageAnnotation(filename, 0, 0, (), "t.xml", path_hint))
        return index.relative(found) if found else None

    assert find("a/b/x.jpg") == "a/b/x.jpg"
    assert find(str(tmp_path / "a" / "b" / "x.jpg")) == "a/b/x.jpg"
    assert find("C:\\labels\\x.jpg") == "a/b/x.jpg"
    assert find("x") == "a/b/x.jpg"
    assert find("missing.jpg", path_hint="/home/u/y.PNG") == "y.PNG"
    assert find("missing.jpg") is None
    (tmp_path / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataPrepError, match="matches several files"):
        ImageIndex(tmp_path).find(ImageAnnotation("x.jpg", 0, 0, (), "t.xml"))


@pytest.mark.parametrize("bad", ["nan", "inf", "-Infinity"])
def test_non_finite_coordinates_are_refused_in_every_format(bad):
    from sagemaker_tfod.data_prep.annotations import parse_voc_xml

    xml = (
        "<annotation><filename>a.jpg</filename><object><name>cat</name><bndbox>"
        f"<xmin>{bad}</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
        "</annotation>"
    )
    with pytest.raises(DataPrepError, match=rf"a\.xml: object 1 <xmin> is '{bad}', not a number"):
        parse_voc_xml(xml.encode(), "a.xml")
    with pytest.raises(DataPrepError, match=r"r\.csv line 1: xmax is .*not a number; fix the row"):
        parse_csv(f"a.jpg,1,2,{bad},4,cat\n", "r.csv")
    document = {
        "images": [{"id": 1, "file_name": "a.jpg"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, bad, 4]}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    with pytest.raises(DataPrepError, match=r"c\.json annotations\[0\]: bbox .* fix it"):
        parse_coco_json(json.dumps(document), "c.json")


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: d["annotations"][0].pop("bbox"), r"c\.json annotations\[0\]: no 'bbox'"),
        (lambda d: d["images"][0].pop("file_name"), r"c\.json images\[0\]: no 'file_name'"),
        (lambda d: d["categories"][0].pop("name"), r"c\.json categories\[0\]: no 'name'"),
        (lambda d: d["annotations"][0].update(bbox=[1, 2, 3]), r"bbox \[1, 2, 3\] is not"),
        (lambda d: d["images"][0].update(width="wide"), r"'a\.jpg' width is 'wide'"),
        (lambda d: d.update(images={}), r"c\.json: no 'images' list"),
    ],
)
def test_malformed_coco_json_is_a_user_error(damage, needle):
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
        "categories": [{"id": 1, "name": "cat"}],
    }
    damage(document)
    with pytest.raises(DataPrepError, match=needle):
        parse_coco_json(json.dumps(document), "c.json")


def test_label_map_uses_name_not_display_name():
    text = (
        "item { display_name: 'Cat' name: 'n02121808' id: 1 }\n"
        "item { id: 2 display_name: 'dog only' }\n"
    )
    assert parse_label_map(text) == {1: "n02121808", 2: "dog only"}


def test_progress_log_lines_carry_rate_and_time_left(monkeypatch, caplog):
    from sagemaker_tfod.data_prep import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    caplog.set_level("INFO", logger="sagemaker_tfod.data_prep.progress")
    with progress.progress(3, "images") as advance:
        for _ in range(3):
            advance(1)
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0].startswith("1/3 images, ") and "images/s, about" in lines[0]
    assert lines[0].endswith(" s left")
    assert lines[-1].startswith("3/3 images in ") and lines[-1].endswith("images/s")


def test_watch_counter_reports_work_counted_elsewhere(monkeypatch, caplog):
    from sagemaker_tfod.data_prep import progress

    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    monkeypatch.setattr(progress, "POLL_INTERVAL_S", 0.01)
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    caplog.set_level("INFO", logger="sagemaker_tfod.data_prep.progress")
    done = [0]
    with progress.watch_counter(lambda: done[0], 4, "images"):
        done[0] = 4
    assert caplog.records[-1].getMessage().startswith("4/4 images in ")


def test_read_user_text_names_the_file_and_the_fix(tmp_path):
    from sagemaker_tfod.data_prep.files import read_user_text

    latin = tmp_path / "labels.csv"
    latin.write_bytes("a.jpg,1,2,3,4,caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataPrepError, match=r"labels\.csv: not UTF-8 text .*; save it as UTF-8"):
        read_user_text(latin)
    with pytest.raises(DataPrepError, match=r"missing\.csv: cannot read"):
        read_user_text(tmp_path / "missing.csv")
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbfa,b\n")
    assert read_user_text(bom) == "a,b\n"


def test_atomic_write_text_gives_a_normal_file_mode(tmp_path):
    from sagemaker_tfod.data_prep.files import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "train.csv", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "train.csv").stat().st_mode & 0o777 == 0o644
    assert os.listdir(tmp_path) == ["train.csv"]


def test_atomic_output_path_keeps_the_extension_umask_and_cleans_up(tmp_path):
    from sagemaker_tfod.data_prep.files import (
        atomic_output_path,
        atomic_write_bytes,
        is_temporary_name,
    )

    target = tmp_path / "plots" / "eval.png"
    old = os.umask(0o027)
    try:
        with atomic_output_path(target) as temporary:
            # Writers such as savefig and cv2.VideoWriter pick the format from the extension.
            assert temporary.suffix == ".png"
            assert temporary.parent == target.parent
            assert is_temporary_name(temporary.name)
            assert not target.exists()  # nothing half-written under the final name
            temporary.write_bytes(b"png")
        atomic_write_bytes(tmp_path / "plots" / "raw.bin", b"\x00\x01")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"png"
    assert target.stat().st_mode & 0o777 == 0o640  # umask applied, not mkstemp's 0600
    assert (tmp_path / "plots" / "raw.bin").read_bytes() == b"\x00\x01"
    with pytest.raises(RuntimeError), atomic_output_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"png"  # the previous file stays
    assert sorted(os.listdir(target.parent)) == ["eval.png", "raw.bin"]
    assert not is_temporary_name("eval.png") and not is_temporary_name(".hidden")


def test_file_helpers_import_no_tensorflow():
    """container/__main__.py writes output/failure with them even when TensorFlow is broken."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import sys, data_prep.files; print('tensorflow' in sys.modules)"],
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "False"


def test_atomic_directory_restores_the_old_folder_when_the_swap_fails(tmp_path, monkeypatch):
    from pathlib import Path

    from sagemaker_tfod.data_prep.files import atomic_directory

    target = tmp_path / "channel"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_rename = Path.rename

    def failing_rename(self, destination):
        if Path(destination) == target and ".tmp-" in self.name:
            raise OSError(28, "No space left on device")
        return real_rename(self, destination)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError), atomic_directory(target, overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(os.listdir(tmp_path)) == ["channel"]
    assert os.listdir(target) == ["old.txt"]


def test_image_index_follows_folder_links_once_and_survives_a_loop(tmp_path):
    from sagemaker_tfod.data_prep.matching import ImageIndex

    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"")
    (tmp_path / "photos" / "back").symlink_to(tmp_path)  # a loop
    (tmp_path / "linked").symlink_to(tmp_path / "photos")
    index = ImageIndex(tmp_path)
    assert len(index.by_relative) == 1


def test_image_index_matches_decomposed_unicode_and_literal_vott_names(tmp_path):
    import unicodedata

    from sagemaker_tfod.data_prep.matching import ImageIndex

    (tmp_path / unicodedata.normalize("NFD", "café.jpg")).write_bytes(b"")
    (tmp_path / "vott%2Fshot.jpg").write_bytes(b"")  # VoTT export that kept the encoded name
    (tmp_path / "decoded").mkdir()
    (tmp_path / "decoded" / "shot two.jpg").write_bytes(b"")
    index = ImageIndex(tmp_path)

    def find(filename):
        found = index.find(ImageAnnotation(filename, 0, 0, (), "t.xml"))
        return index.relative(found) if found else None

    assert find(unicodedata.normalize("NFC", "café.jpg")) == "café.jpg"
    assert find("vott%2Fshot.jpg") == "vott%2Fshot.jpg"
    assert find("vott-export%2Fdecoded%2Fshot%20two.jpg") == "decoded/shot two.jpg"


def test_exif_orientation_of_converted_formats_is_applied_too():
    data = image_bytes(40, 30, fmt="WEBP", orientation=6)
    prepared = prepare_image(data, "x.webp")
    assert (prepared.image_format, prepared.width, prepared.height) == ("png", 30, 40)
    assert prepared.change == "EXIF orientation 6 applied to the pixels; WEBP converted to PNG"
    kept = prepare_image(data, "x.webp", rotate_exif=False)
    assert (kept.width, kept.height) == (40, 30)


def test_split_names_classes_it_could_not_put_in_eval():
    # 'pair' has two images, but each also holds a one-image class that must stay in train.
    items = _items({"a": ["pair", "only_a"], "b": ["pair", "only_b"], "c": ["x"], "d": ["x"]})
    train, evaluation = split_images(items, 0.5, seed=0)
    assert {b.class_name for i in evaluation for b in i.boxes} == {"x"}
    assert classes_missing_from_eval(train, evaluation) == ["pair"]
    assert classes_missing_from_eval(items, []) == []


def test_record_writer_writes_in_bounded_batches(tmp_path):
    payloads = [bytes([n]) * 8 for n in range(5)]
    path = tmp_path / "x.tfrecord"
    with RecordWriter(path, batch_bytes=16) as writer:
        for payload in payloads[:2]:
            writer.write(payload)
        # Already on disk: a shard of large images is not held in memory until the end.
        assert path.read_bytes() == frame_records(payloads[:2])
        for payload in payloads[2:]:
            writer.write(payload)
    assert path.read_bytes() == frame_records(payloads)
