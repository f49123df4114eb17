"""Shards written without TensorFlow, read back WITH TensorFlow and Model Garden's decoder:
every box must match its XML to 1e-6, and EXIF-rotated boxes must land on the object."""

from __future__ import annotations

import hashlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from data_prep_helpers import BACKGROUND, OBJECT_COLOUR, RACCOON, add_item, image_bytes, voc_xml

from sagemaker_tfod.data_prep import schema
from sagemaker_tfod.data_prep.build import build_channel
from sagemaker_tfod.data_prep.label_map import parse_label_map
from sagemaker_tfod.data_prep.synth import write_synthetic_voc

tf = pytest.importorskip("tensorflow")

_SPEC = {
    schema.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    schema.IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string),
    schema.IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
    schema.IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
    schema.IMAGE_FILENAME: tf.io.FixedLenFeature((), tf.string),
    schema.IMAGE_SOURCE_ID: tf.io.FixedLenFeature((), tf.string),
    schema.IMAGE_KEY_SHA256: tf.io.FixedLenFeature((), tf.string),
    schema.BBOX_XMIN: tf.io.VarLenFeature(tf.float32),
    schema.BBOX_XMAX: tf.io.VarLenFeature(tf.float32),
    schema.BBOX_YMIN: tf.io.VarLenFeature(tf.float32),
    schema.BBOX_YMAX: tf.io.VarLenFeature(tf.float32),
    schema.CLASS_TEXT: tf.io.VarLenFeature(tf.string),
    schema.CLASS_LABEL: tf.io.VarLenFeature(tf.int64),
    schema.OBJECT_DIFFICULT: tf.io.VarLenFeature(tf.int64),
    schema.OBJECT_TRUNCATED: tf.io.VarLenFeature(tf.int64),
    schema.OBJECT_AREA: tf.io.VarLenFeature(tf.float32),
    schema.OBJECT_IS_CROWD: tf.io.VarLenFeature(tf.int64),
}
# Raw pixels 60x40; displayed (after EXIF 6, a 90-degree turn) 40x60.
_EXIF_BOX_DISPLAYED = (6, 30, 22, 52)  # in the displayed 40x60 frame


def _raw_for_orientation_6(width: int, height: int, box) -> bytes:
    """Stored pixels whose EXIF-6 (rotate 90 clockwise to view) view has `box` red."""
    from PIL import Image

    shown = Image.open(io.BytesIO(image_bytes(width, height, (box,), fmt="PNG")))
    stored = shown.transpose(Image.Transpose.ROTATE_90)  # undo the viewer's turn
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.convert("RGB").save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture(scope="session")
def channel(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tf_channel")
    voc = root / "voc"
    write_synthetic_voc(voc, num_images=24, image_size=96, seed=3)
    add_item(voc, "png", fmt="PNG", objects=[("circle", 5, 5, 30, 25)])
    add_item(voc, "grey", mode="L", objects=[("square", 5, 5, 30, 25)])
    add_item(voc, "cmyk", mode="CMYK", objects=[("square", 10, 8, 40, 30)])
    add_item(voc, "floats", objects=[("triangle", 4.5, 6.25, 40.75, 30.5)])
    add_item(voc, "clipped", objects=[("circle", -6, 10, 70, 30)])
    # labelImg case: boxes drawn on the rotated view; <size> is the displayed size.
    (voc / "images" / "exif.jpg").write_bytes(_raw_for_orientation_6(40, 60, _EXIF_BOX_DISPLAYED))
    (voc / "annotations" / "exif.xml").write_text(
        voc_xml("exif.jpg", 40, 60, [("square", *_EXIF_BOX_DISPLAYED)])
    )
    # Tool that ignored EXIF: <size> is the stored size, boxes in the stored frame.
    raw_box = (8, 6, 30, 20)
    add_item(voc, "exifraw", width=60, height=40, objects=[("square", *raw_box)], orientation=6)
    out = root / "channel"
    build_channel(voc, out, eval_fraction=0.25, shards=2, seed=5)
    return voc, out


def _records(channel_dir: Path):
    for path in sorted(channel_dir.glob("*.tfrecord")):
        for record in tf.data.TFRecordDataset(str(path)):
            yield path.name, record


def _expected_boxes(xml_path: Path, width: int, height: int):
    """Boxes from the XML by an independent reader, clipped and normalised."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    sx = width / float(size.findtext("width")) if size is not None else 1.0
    sy = height / float(size.findtext("height")) if size is not None else 1.0
    boxes = []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        x0, x1 = min(max(x0 * sx, 0), width), min(max(x1 * sx, 0), width)
        y0, y1 = min(max(y0 * sy, 0), height), min(max(y1 * sy, 0), height)
        boxes.append((obj.findtext("name"), x0 / width, y0 / height, x1 / width, y1 / height))
    return boxes


def test_every_box_matches_its_xml_to_1e6(channel):
    voc, out = channel
    label_map = parse_label_map((out / schema.LABEL_MAP_FILE).read_text())
    seen_ids, files = set(), set()
    count = 0
    for _, record in _records(out):
        parsed = tf.io.parse_single_example(record, _SPEC)
        dense = {
            k: tf.sparse.to_dense(v) if isinstance(v, tf.SparseTensor) else v
            for k, v in parsed.items()
        }
        name = dense[schema.IMAGE_FILENAME].numpy().decode()
        encoded = dense[schema.IMAGE_ENCODED].numpy()
        image = tf.io.decode_image(encoded, channels=3).numpy()
        height, width = image.shape[:2]
        assert (int(dense[schema.IMAGE_HEIGHT]), int(dense[schema.IMAGE_WIDTH])) == (height, width)
        assert (
            dense[schema.IMAGE_KEY_SHA256].numpy().decode() == hashlib.sha256(encoded).hexdigest()
        )
        source_id = dense[schema.IMAGE_SOURCE_ID].numpy().decode()
        assert source_id.isdigit() and source_id not in seen_ids
        seen_ids.add(source_id)
        xml_path = voc / "annotations" / (Path(name).stem + ".xml")
        expected = _expected_boxes(xml_path, width, height)
        got = list(
            zip(
                [t.decode() for t in dense[schema.CLASS_TEXT].numpy()],
                dense[schema.BBOX_XMIN].numpy(),
                dense[schema.BBOX_YMIN].numpy(),
                dense[schema.BBOX_XMAX].numpy(),
                dense[schema.BBOX_YMAX].numpy(),
                strict=True,
            )
        )
        assert len(got) == len(expected), name
        for (gname, *gbox), (ename, *ebox) in zip(got, expected, strict=True):
            assert gname == ename
            np.testing.assert_allclose(gbox, ebox, atol=1e-6, rtol=0)
        labels = dense[schema.CLASS_LABEL].numpy().tolist()
        assert [label_map[i] for i in labels] == [g[0] for g in got]
        areas = dense[schema.OBJECT_AREA].numpy()
        np.testing.assert_allclose(
            areas, [(b[3] - b[1]) * (b[4] - b[2]) * width * height for b in expected], rtol=1e-5
        )
        files.add(name)
        count += 1
    assert count == 31 and len(files) == 31


def test_exif_rotated_boxes_land_on_the_object(channel):
    _, out = channel
    checked = 0
    for _, record in _records(out):
        parsed = tf.io.parse_single_example(record, _SPEC)
        name = parsed[schema.IMAGE_FILENAME].numpy().decode()
        if name not in ("images/exif.jpg", "images/exifraw.jpg"):
            continue
        image = tf.io.decode_image(parsed[schema.IMAGE_ENCODED], channels=3).numpy()
        height, width = image.shape[:2]
        box = [
            float(tf.sparse.to_dense(parsed[k])[0])
            for k in (schema.BBOX_XMIN, schema.BBOX_YMIN, schema.BBOX_XMAX, schema.BBOX_YMAX)
        ]
        x0, y0, x1, y1 = (
            round(box[0] * width),
            round(box[1] * height),
            round(box[2] * width),
            round(box[3] * height),
        )
        inside = image[y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].reshape(-1, 3).mean(axis=0)
        mask = np.ones(image.shape[:2], bool)
        mask[max(y0 - 2, 0) : y1 + 2, max(x0 - 2, 0) : x1 + 2] = False
        outside = image[mask].mean(axis=0)
        np.testing.assert_allclose(inside, OBJECT_COLOUR, atol=20)
        np.testing.assert_allclose(outside, BACKGROUND, atol=20)
        checked += 1
    assert checked == 2


def test_model_garden_decoder_reads_the_channel(channel):
    from official.vision.dataloaders import tf_example_decoder

    _, out = channel
    decoder = tf_example_decoder.TfExampleDecoder()
    splits = {}
    for shard, record in _records(out):
        decoded = decoder.decode(record)
        assert decoded["image"].shape[-1] == 3
        assert int(decoded["source_id"].numpy()) > 0
        classes = decoded["groundtruth_classes"].numpy()
        assert ((classes >= 1) & (classes <= 3)).all()
        splits[shard.split("-")[0]] = splits.get(shard.split("-")[0], 0) + 1
    assert splits == {"train": 23, "eval": 8}


def test_tensorflow_rejects_a_corrupted_record(channel, tmp_path):
    _, out = channel
    shard = sorted(out.glob("train-*.tfrecord"))[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    broken = tmp_path / "broken.tfrecord"
    broken.write_bytes(bytes(data))
    with pytest.raises(tf.errors.DataLossError):
        for _ in tf.data.TFRecordDataset(str(broken)):
            pass


@pytest.mark.skipif(
    not RACCOON.is_dir(),
    reason=f"raccoon dataset not present at {RACCOON} (only on the project's build machine)",
)
def test_raccoon_channel_boxes_match_labelimg_xml(tmp_path):
    out = tmp_path / "channel"
    summary = build_channel(RACCOON, out)
    assert (summary["images"], summary["boxes"]) == (200, 217)
    count = boxes = 0
    for _, record in _records(out):
        parsed = tf.io.parse_single_example(record, _SPEC)
        name = parsed[schema.IMAGE_FILENAME].numpy().decode()
        width, height = int(parsed[schema.IMAGE_WIDTH]), int(parsed[schema.IMAGE_HEIGHT])
        shape = tf.io.extract_jpeg_shape(parsed[schema.IMAGE_ENCODED]).numpy()
        assert tuple(shape[:2]) == (height, width), name
        expected = _expected_boxes(
            RACCOON / "annotations" / (Path(name).stem + ".xml"), width, height
        )
        got = np.stack(
            [
                tf.sparse.to_dense(parsed[k]).numpy()
                for k in (schema.BBOX_XMIN, schema.BBOX_YMIN, schema.BBOX_XMAX, schema.BBOX_YMAX)
            ],
            axis=1,
        )
        np.testing.assert_allclose(got, [e[1:] for e in expected], atol=1e-6, rtol=0)
        count += 1
        boxes += len(expected)
    assert (count, boxes) == (200, 217)


def test_a_png_tensorflow_cannot_decode_is_never_kept(tmp_path):
    """A PNG whose IDAT checksum is wrong: Pillow loads it, TensorFlow refuses it, so a
    build that trusted Pillow would fail training hours later. The build leaves it out."""
    import json

    from PIL import Image

    voc = tmp_path / "voc"
    for number in range(3):
        add_item(voc, f"good-{number}", fmt="PNG", objects=[("circle", 5, 5, 30, 25)])
    damaged_path, _ = add_item(voc, "damaged", fmt="PNG", objects=[("circle", 5, 5, 30, 25)])
    data = bytearray(damaged_path.read_bytes())
    position = data.index(b"IDAT") - 4
    length = int.from_bytes(data[position : position + 4], "big")
    data[position + 8 + length] ^= 0xFF  # the chunk's CRC
    damaged_path.write_bytes(bytes(data))
    with Image.open(damaged_path) as image:
        image.load()  # Pillow: fine
    with pytest.raises(tf.errors.InvalidArgumentError):
        tf.io.decode_image(bytes(data), channels=3)  # TensorFlow: not fine
    out = tmp_path / "channel"
    build_channel(voc, out, eval_fraction=0.0, workers=1, skip_bad_images=True)
    dataset = json.loads((out / schema.DATASET_JSON).read_text())
    assert [item["file"] for item in dataset["skipped"]] == ["images/damaged.png"]
    assert "checksum of chunk 'IDAT'" in dataset["skipped"][0]["reason"]
    decoded = 0
    for _, record in _records(out):
        parsed = tf.io.parse_single_example(record, _SPEC)
        tf.io.decode_image(parsed[schema.IMAGE_ENCODED], channels=3)
        decoded += 1
    assert decoded == 3
