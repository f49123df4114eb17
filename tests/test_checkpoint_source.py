"""container/checkpoint_source.py: finding, unpacking and comparing checkpoints (pure parts and
real files; the end-to-end runs are in test_container_train.py and test_container_bad_input.py)."""

from __future__ import annotations

import io
import pathlib
import tarfile

import numpy as np
import pytest

from sagemaker_tfod.container import checkpoint_source as cs
from sagemaker_tfod.container.errors import UserError

V = "/.ATTRIBUTES/VARIABLE_VALUE"


def key(path: str) -> str:
    return path + V


SHAPES = {
    "_CHECKPOINTABLE_OBJECT_GRAPH": [],
    "global_step" + V: [],
    "save_counter" + V: [],
    key("backbone/layer_with_weights-0/_conv0/kernel"): [3, 3, 3, 32],
    "backbone/layer_with_weights-0/_conv0/kernel/.OPTIMIZER_SLOT/optimizer/momentum" + V: [
        3,
        3,
        3,
        32,
    ],
    key("backbone/layer_with_weights-0/_norm0/gamma"): [32],
    key("decoder/layer_with_weights-0/bias"): [128],
    key("head/layer_with_weights-9/bias"): [36],
    key("model/backbone/layer_with_weights-0/_conv0/kernel"): [3, 3, 3, 32],
    key("optimizer/iter"): [],
}


def test_module_variables_keeps_model_variables_only():
    variables = cs.module_variables(SHAPES)
    assert variables == {
        "backbone": {
            key("backbone/layer_with_weights-0/_conv0/kernel"): (3, 3, 3, 32),
            key("backbone/layer_with_weights-0/_norm0/gamma"): (32,),
        },
        "decoder": {key("decoder/layer_with_weights-0/bias"): (128,)},
        "head": {key("head/layer_with_weights-9/bias"): (36,)},
    }
    assert cs.describe_variables(variables) == "backbone 2, decoder 1, head 1 variables"
    assert cs.requested_modules("all") == ("backbone", "decoder", "head")
    assert cs.requested_modules("backbone,decoder") == ("backbone", "decoder")
    assert cs.requested_modules("none") == ()


def test_compare_names_missing_extra_and_reshaped_variables():
    checkpoint = cs.module_variables(SHAPES)
    model = {
        "backbone": {
            key("backbone/layer_with_weights-0/_conv0/kernel"): (3, 3, 3, 16),
            key("backbone/layer_with_weights-1/_conv0/kernel"): (1, 1, 16, 8),
        },
        "decoder": {key("decoder/layer_with_weights-0/bias"): (128,)},
    }
    fits = cs.compare(checkpoint, model, ["backbone", "decoder"])
    assert fits["decoder"].fits
    backbone = fits["backbone"]
    assert not backbone.fits
    assert backbone.mismatched == (
        (key("backbone/layer_with_weights-0/_conv0/kernel"), (3, 3, 3, 32), (3, 3, 3, 16)),
    )
    assert backbone.missing == (key("backbone/layer_with_weights-1/_conv0/kernel"),)
    assert backbone.extra == (key("backbone/layer_with_weights-0/_norm0/gamma"),)
    summary = backbone.summary()
    assert "of 2 model variables, 1 differ in shape" in summary
    assert "[3, 3, 3, 32] in the checkpoint, [3, 3, 3, 16] in the model" in summary
    assert "1 are not in the checkpoint" in summary
    # A module the model has no variables in never "fits": nothing would be restored.
    assert not cs.compare(checkpoint, {}, ["backbone"])["backbone"].fits


def test_fitting_presets_by_backbone_and_decoder():
    checkpoint = cs.module_variables(SHAPES)
    same = {m: checkpoint[m] for m in ("backbone", "decoder")}
    other_decoder = {"backbone": checkpoint["backbone"], "decoder": {key("decoder/x"): (1,)}}
    no_decoder = {"backbone": checkpoint["backbone"]}
    other = {"backbone": {key("backbone/y"): (7, 7, 3, 64)}}
    found = cs.fitting_presets(
        checkpoint, {"a": same, "b": other_decoder, "c": no_decoder, "d": other}
    )
    assert found == [cs.PresetFit("a", ("backbone", "decoder")), cs.PresetFit("c", ("backbone",))]


def test_restored_counts_compare_values():
    model = {
        "backbone/a" + V: np.ones(3),
        "backbone/b" + V: np.zeros(2),
        "decoder/c" + V: np.ones(1),
    }
    checkpoint = {"backbone/a" + V: np.ones(3), "backbone/b" + V: np.ones(2)}
    assert cs.restored_counts(model, checkpoint) == {"backbone": (1, 2), "decoder": (0, 1)}


def write_fake_checkpoint(folder: pathlib.Path, step: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ckpt-{step}.index").write_bytes(b"i")
    (folder / f"ckpt-{step}.data-00000-of-00001").write_bytes(b"d")


def test_locate_finds_what_the_channel_holds(tmp_path):
    assert cs.locate(tmp_path / "absent") is None
    channel = tmp_path / "channel"
    channel.mkdir()
    with pytest.raises(UserError, match="is empty"):
        cs.locate(channel)
    nested = channel / "job" / "checkpoints"
    write_fake_checkpoint(nested, 3)
    write_fake_checkpoint(nested, 12)
    (nested / "ckpt-99.index").write_bytes(b"no data file")
    found = cs.locate(channel)
    assert found == cs.ChannelContent("checkpoint", nested / "ckpt-12")
    # Checkpoints win over an archive beside them; an archive alone is used.
    (channel / "pretrained.tar.gz").write_bytes(b"x")
    assert cs.locate(channel).kind == "checkpoint"
    archive_only = tmp_path / "archive_only"
    archive_only.mkdir()
    (archive_only / "spinenet49mobile.tar.gz").write_bytes(b"x")
    assert cs.locate(archive_only) == cs.ChannelContent(
        "archive", archive_only / "spinenet49mobile.tar.gz"
    )
    (archive_only / "second.tgz").write_bytes(b"x")
    with pytest.raises(UserError, match="holds several candidates"):
        cs.locate(archive_only)
    keras = tmp_path / "keras"
    keras.mkdir()
    (keras / "weights.h5").write_bytes(b"x")
    assert cs.locate(keras) == cs.ChannelContent("keras_h5", keras / "weights.h5")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"holds no TensorFlow checkpoint .*notes\.txt"):
        cs.locate(other)


def test_latest_prefix_prefers_the_state_file(tmp_path):
    write_fake_checkpoint(tmp_path, 5)
    write_fake_checkpoint(tmp_path, 40)
    prefixes = cs.checkpoint_prefixes(tmp_path)
    assert cs.latest_prefix(prefixes) == str(tmp_path / "ckpt-40")
    (tmp_path / "checkpoint").write_text(
        'model_checkpoint_path: "ckpt-5"\nall_model_checkpoint_paths: "ckpt-5"\n'
    )
    assert cs.latest_prefix(prefixes) == str(tmp_path / "ckpt-5")


def tar_with(path: pathlib.Path, members: list[tarfile.TarInfo]) -> pathlib.Path:
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            data = b"x" * member.size if member.isfile() else None
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "bad",
    [
        member("../evil"),
        member("/etc/evil"),
        member("ckpt/../../evil"),
        member("link", tarfile.SYMTYPE, "/etc/passwd"),
        member("hard", tarfile.LNKTYPE, "ckpt/ckpt-1.index"),
        member("dev", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink", "hardlink", "device"],
)
def test_unpack_refuses_members_that_leave_the_folder(tmp_path, bad):
    archive = tar_with(tmp_path / "bad.tar.gz", [member("ckpt/ckpt-1.index"), bad])
    destination = tmp_path / "out"
    with pytest.raises(UserError, match=f"refusing to unpack member '{bad.name}'"):
        cs.unpack_archive(archive, destination)
    assert not any(destination.rglob("*"))  # refused before anything was written
    assert not (tmp_path / "evil").exists()


def test_unpack_a_good_archive_and_refuse_a_broken_one(tmp_path):
    archive = tar_with(
        tmp_path / "good.tar.gz",
        [
            member("spinenet49mobile", tarfile.DIRTYPE),
            member("spinenet49mobile/ckpt-277200.index"),
            member("spinenet49mobile/ckpt-277200.data-00000-of-00001"),
        ],
    )
    names = cs.unpack_archive(archive, tmp_path / "out")
    assert "spinenet49mobile/ckpt-277200.index" in names
    assert cs.checkpoint_prefixes(tmp_path / "out") == [
        str(tmp_path / "out" / "spinenet49mobile" / "ckpt-277200")
    ]
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(UserError, match=r"not a readable \.tar\.gz"):
        cs.unpack_archive(truncated, tmp_path / "out2")


def test_mismatch_message_for_modules_the_checkpoint_lacks(tmp_path):
    """An ImageNet backbone checkpoint asked for `all`: set the modules it holds."""
    backbone = {key("backbone/layer_with_weights-0/_conv0/kernel"): (3, 3, 3, 32)}
    checkpoint = {"backbone": backbone}
    model = {**checkpoint, "decoder": {key("decoder/b"): (128,)}, "head": {key("head/b"): (36,)}}
    fits = cs.compare(checkpoint, model, ["backbone", "decoder", "head"])
    message = cs.mismatch_message("ckpt-180648", "p", "all", fits, checkpoint, tmp_path)
    assert "it holds no decoder or head variables; set init_checkpoint_modules=backbone" in message
    # A head of another class count: start a new one.
    theirs = {**model, "head": {key("head/b"): (91 * 9,)}}
    fits = cs.compare(theirs, model, ["backbone", "decoder", "head"])
    message = cs.mismatch_message("ckpt", "p", "all", fits, theirs, tmp_path)
    assert "head: of 1 model variables, 1 differ in shape" in message
    assert "use init_checkpoint_modules=backbone,decoder to start a new head" in message
