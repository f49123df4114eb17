"""`launch pretrained list|fetch`: the catalogue, and downloads from a loopback HTTP server that
answers as Google Cloud Storage does (x-goog-hash, Range), with a cut connection and a corrupt
file. The bytes served are a .tar.gz of the checkpoint the shared training run wrote."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
from conftest import checkpoint_archive
from launch_helpers import FileServer

from sagemaker_tfod.launch import pretrained
from sagemaker_tfod.launch.cli import main
from sagemaker_tfod.launch.errors import LaunchError

NAME = "mobilenetv2_256_coco"


def served_path(name: str = NAME, index: int = 0) -> str:
    return urllib.parse.urlparse(pretrained.CATALOGUE[name].files[index].url).path


@pytest.fixture(scope="module")
def archive(trained_run, tmp_path_factory) -> bytes:
    folder = tmp_path_factory.mktemp("archive")
    return checkpoint_archive(trained_run.checkpoint_dir, folder / "ckpt.tar.gz").read_bytes()


def fetch_cli(cache: Path, mirror: str, capsys, *extra: str) -> tuple[int, str, str]:
    arguments = ["--pretrained-cache", str(cache), "--pretrained-mirror", mirror, *extra]
    code = main(["pretrained", "fetch", NAME, *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_fetch_resumes_after_a_cut_connection_and_checks_the_file(
    archive, tmp_path, capsys, caplog
):
    caplog.set_level("INFO", logger="sagemaker_tfod.launch")
    cache = tmp_path / "cache"
    path = served_path()
    half = len(archive) // 2
    with FileServer({path: archive}, cut={path: half}) as url:
        code, out, err = fetch_cli(cache, url, capsys)
    assert code == 0, err
    report = json.loads(out)
    downloaded = Path(report["folder"]) / "mobilenetv2_ssd_i256_ckpt.tar.gz"
    assert downloaded.read_bytes() == archive
    item = report["files"]["mobilenetv2_ssd_i256_ckpt.tar.gz"]
    assert sorted(item["checked"]) == ["crc32c (x-goog-hash)", "md5 (x-goog-hash)", "size"]
    assert item["resumed_requests"] == 1
    assert "fetch mobilenetv2_ssd_i256_ckpt.tar.gz" in err and "100%" in err  # the bar
    assert "connection cut at" in caplog.text
    assert f"resuming at {half} bytes" in caplog.text
    assert not (cache / pretrained.PARTIAL_DIR / NAME).exists()

    # Fetched once: a second fetch checks the cache and sends no request.
    server = FileServer({path: archive})
    with server as url:
        code, out, err = fetch_cli(cache, url, capsys)
    assert code == 0
    assert json.loads(out)["from_cache"] is True
    assert server.requests == []


def test_fetch_asks_only_for_the_missing_bytes(archive, tmp_path, capsys):
    path = served_path()
    server = FileServer({path: archive}, cut={path: 1000})
    with server as url:
        code, _, err = fetch_cli(tmp_path / "cache", url, capsys, "--no-progress")
    assert code == 0, err
    assert server.requests == [(path, None), (path, "bytes=1000-")]


def test_a_download_interrupted_in_an_earlier_run_resumes(archive, tmp_path, capsys):
    """The partial file and what the server said survive the process: a second run resumes."""
    path = served_path()
    with (
        FileServer({path: archive}, cut={path: 3000}) as url,
        pytest.raises(LaunchError, match="failed after 1 attempts"),
    ):
        pretrained.fetch(
            pretrained.get(NAME), tmp_path / "cache", mirror=url, progress=False, attempts=1
        )
    partial = tmp_path / "cache" / pretrained.PARTIAL_DIR / NAME
    assert (partial / "mobilenetv2_ssd_i256_ckpt.tar.gz.part").stat().st_size == 3000
    server = FileServer({path: archive})
    with server as url:
        code, out, err = fetch_cli(tmp_path / "cache", url, capsys, "--no-progress")
    assert code == 0, err
    assert server.requests == [(path, "bytes=3000-")]
    assert Path(json.loads(out)["folder"], "mobilenetv2_ssd_i256_ckpt.tar.gz").read_bytes() == (
        archive
    )


def test_a_corrupt_download_is_refused_and_deleted(archive, tmp_path, capsys):
    path = served_path()
    with FileServer({path: archive}, wrong_hash=[path]) as url:
        code, out, err = fetch_cli(tmp_path / "cache", url, capsys, "--no-progress")
    assert code == 2
    assert out == ""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    assert "is corrupt (" in lines[0] and "md5 " in lines[0] and "the server says" in lines[0]
    assert "it was deleted: run the same command again" in lines[0]
    assert not list((tmp_path / "cache").rglob("*.tar.gz*"))
    assert pretrained.read_manifest(tmp_path / "cache", NAME) is None


def test_a_changed_cache_file_is_fetched_again(archive, tmp_path, capsys):
    path = served_path()
    with FileServer({path: archive}) as url:
        assert fetch_cli(tmp_path / "cache", url, capsys, "--no-progress")[0] == 0
        cached = tmp_path / "cache" / NAME / "mobilenetv2_ssd_i256_ckpt.tar.gz"
        cached.write_bytes(b"x" * len(archive))  # same size, other bytes
        code, out, _ = fetch_cli(tmp_path / "cache", url, capsys, "--no-progress")
    assert code == 0
    assert json.loads(out)["from_cache"] is False
    assert cached.read_bytes() == archive


def test_missing_file_and_unknown_name(tmp_path, capsys):
    with FileServer({}) as url:
        code, _, err = fetch_cli(tmp_path / "cache", url, capsys)
    assert code == 2
    assert "HTTP 404" in err and "check the catalogue entry or pretrained_mirror" in err
    assert main(["pretrained", "fetch", "yolo"]) == 2
    assert "'yolo' is not in the pretrained catalogue" in capsys.readouterr().err


def test_plain_http_only_on_loopback():
    assert pretrained.download_url("https://storage.googleapis.com/a/b.tar.gz", None) == (
        "https://storage.googleapis.com/a/b.tar.gz"
    )
    assert pretrained.download_url("https://storage.googleapis.com/a/b", "http://127.0.0.1:9/") == (
        "http://127.0.0.1:9/a/b"
    )
    with pytest.raises(LaunchError, match="over https only"):
        pretrained.download_url("https://storage.googleapis.com/a/b", "http://mirror.example/")


def test_list_shows_every_entry_and_its_source(tmp_path, capsys):
    assert main(["pretrained", "list", "--pretrained-cache", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["name"] for row in rows] == list(pretrained.CATALOGUE)
    spinenet = next(row for row in rows if row["name"] == "spinenet49_mobile_384_coco")
    assert spinenet["preset"] == "retinanet_spinenet49_mobile_384"
    assert spinenet["published"] == "COCO val2017 box AP 28.1"
    assert spinenet["source_url"] == (
        "https://storage.googleapis.com/tf_model_garden/vision/retinanet/spinenet49mobile.tar.gz"
    )
    assert spinenet["size"] == "unknown until fetched"


def test_catalogue_entries_name_real_presets_and_accepted_modules():
    from sagemaker_tfod.container.hyperparameters import parse_hyperparameters
    from sagemaker_tfod.container.presets import PRESETS

    for entry in pretrained.CATALOGUE.values():
        assert entry.preset in PRESETS, entry.name
        hp = parse_hyperparameters(
            {"model": entry.preset, "init_checkpoint_modules": entry.modules}
        )
        assert hp.init_checkpoint_modules == entry.modules
        assert all(f.url.startswith("https://storage.googleapis.com/") for f in entry.files)


def test_with_pretrained_sets_preset_and_modules():
    entry = pretrained.get(NAME)
    assert pretrained.with_pretrained({"num_steps": 10}, entry) == {
        "num_steps": 10,
        "model": "retinanet_mobilenetv2_fpnlite_256",
        "init_checkpoint_modules": "backbone,decoder",
    }
    kept = pretrained.with_pretrained({"init_checkpoint_modules": "backbone"}, entry)
    assert kept["init_checkpoint_modules"] == "backbone"
    with pytest.raises(LaunchError, match="fits model=retinanet_mobilenetv2_fpnlite_256"):
        pretrained.with_pretrained({"model": "retinanet_resnet50_fpn_640"}, entry)


def test_local_pretrained_links_the_cached_weights_as_the_checkpoint_channel(tmp_path, capsys):
    """`launch local CHANNEL --pretrained NAME`: fetched, linked as input/data/checkpoint, and
    the preset and modules written to hyperparameters.json."""
    name = "keras_mobilenetv2_imagenet"
    path = served_path(name)
    channel = tmp_path / "channel"
    channel.mkdir()
    (channel / "train-00000-of-00001.tfrecord").write_bytes(b"")
    cache = tmp_path / "cache"
    server = FileServer({path: b"h5 bytes"})
    with server as url:
        settings = ["--pretrained-cache", str(cache), "--pretrained-mirror", url]
        arguments = ["local", str(channel), "--pretrained", name, *settings]
        assert main([*arguments, "--dry-run"]) == 0
        assert server.requests == []  # a dry run downloads nothing
        capsys.readouterr()
        code = main([*arguments, "--prepare-only", "--base-dir", str(tmp_path / "opt_ml")])
        assert code == 0, capsys.readouterr().err
    base = tmp_path / "opt_ml"
    linked = base / "input" / "data" / "checkpoint"
    assert linked.resolve() == (cache / name).resolve()
    assert (linked / pathlib_name(path)).read_bytes() == b"h5 bytes"
    row = next(r for r in pretrained.catalogue_rows(cache) if r["name"] == name)
    assert row["cached"] is True and row["size"] == "0.0 MiB"  # 8 bytes, as fetched
    hyperparameters = json.loads((base / "input" / "config" / "hyperparameters.json").read_text())
    assert hyperparameters == {
        "model": "retinanet_mobilenetv2_fpnlite_320",
        "init_checkpoint_modules": "backbone",
    }


def pathlib_name(url_path: str) -> str:
    return url_path.rsplit("/", 1)[-1]
