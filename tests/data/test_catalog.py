"""The dataset catalog: names, errors that say where to put files, fetch fallbacks (all offline)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from recstack.data import catalog, download
from recstack.data.catalog import (
    DatasetInfo,
    WheelDownload,
    ZipDownload,
    dataset_folder,
    fetch,
    list_datasets,
    load_raw,
)
from recstack.data.prepare import PrepareConfig, prepare
from recstack.data.sources import source_names
from recstack.errors import DataError
from tests.data.local_http import closed_port_url, serve
from tests.data.test_sources import write_100k, write_recbole_100k

NAMES = [
    "ml-100k",
    "ml-1m",
    "ml-latest-small",
    "amazon-beauty",
    "amazon-scientific",
    "amazon-industrial",
    "kuairand-pure",
    "kuairec",
    "generic",
    "world",
]


def test_every_entry_names_a_real_source_and_a_valid_prepare_config():
    infos = list_datasets()
    assert [info.name for info in infos] == NAMES
    for info in infos:
        assert isinstance(info, DatasetInfo) and info.source in source_names() and info.description
        assert isinstance(info.prepare_config(), PrepareConfig)
    assert catalog.default_prepare("amazon-beauty") == {}


def test_unknown_dataset_lists_the_known_names():
    with pytest.raises(DataError, match="unknown dataset 'ml-42m'; known datasets: ml-100k, ml-1m"):
        load_raw("ml-42m")


def test_dataset_without_download_says_which_files_go_where(isolated_home):
    with pytest.raises(DataError) as error:
        fetch("amazon-beauty")
    message = str(error.value)
    assert "user_sequence.txt" in message and "items.jsonl" in message
    assert str(isolated_home / "downloads" / "amazon-beauty") in message
    with pytest.raises(DataError, match="mapping.yaml"):
        fetch("generic")


def test_files_placed_in_the_folder_are_found_and_loaded(tmp_path):
    folder = dataset_folder("amazon-beauty")
    folder.mkdir(parents=True)
    (folder / "user_sequence.txt").write_text("U1 A B C\nU2 B C\n")
    assert fetch("amazon-beauty") == folder
    raw = load_raw("amazon-beauty")
    assert raw.name == "amazon-beauty" and raw.interactions.height == 5
    assert load_raw("amazon-beauty", folder).interactions.height == 5
    with pytest.raises(DataError, match="not found"):
        load_raw("amazon-beauty", tmp_path / "absent")


def zip_of(folder: Path, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.writestr(prefix + path.name, path.read_bytes())
    return buffer.getvalue()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.fixture
def tiny_ml100k(tmp_path, monkeypatch):
    """Swap the ml-100k downloads for local ones serving tiny copies in both formats; pip is faked."""
    grouplens, recbole = write_100k(tmp_path / "gl"), write_recbole_100k(tmp_path / "rb")
    wheel = zip_of(recbole, "recbole/dataset_example/ml-100k/")

    def fake_pip(command, **kwargs):
        Path(command[command.index("-d") + 1], "recbole-1.2.1-py3-none-any.whl").write_bytes(wheel)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(download.subprocess, "run", fake_pip)

    def use(zip_url: str) -> None:
        info = dataclasses.replace(
            catalog.DATASETS["ml-100k"],
            downloads=(
                ZipDownload(zip_url, "ml-100k/", digests(grouplens), timeout=2.0),
                WheelDownload("recbole", "1.2.1", "recbole/dataset_example/ml-100k/", digests(recbole)),
            ),
        )
        monkeypatch.setitem(catalog.DATASETS, "ml-100k", info)

    return use, zip_of(grouplens, "ml-100k/")


def test_ml100k_falls_back_to_the_wheel_when_grouplens_is_unreachable(tiny_ml100k):
    use, _ = tiny_ml100k
    use(closed_port_url())
    folder = fetch("ml-100k")
    assert sorted(p.name for p in folder.iterdir()) == ["ml-100k.inter", "ml-100k.item", "ml-100k.user"]
    raw = load_raw("ml-100k")
    assert raw.interactions.height == 5 and raw.items.height == 3 and raw.users.height == 3
    assert prepare(raw).meta["counts"]["interactions"] == 5


def test_ml100k_from_grouplens_zip_equals_the_wheel_copy(tiny_ml100k, tmp_path):
    use, grouplens_zip = tiny_ml100k
    with serve({"/ml-100k.zip": grouplens_zip}) as (base, log):
        use(f"{base}/ml-100k.zip")
        folder = fetch("ml-100k")
    assert (folder / "u.data").is_file() and len(log) == 1
    from_zip = load_raw("ml-100k")
    use(closed_port_url())
    shutil.rmtree(folder)
    from_wheel = load_raw("ml-100k")
    assert (folder / "ml-100k.inter").is_file()
    for table in ("interactions", "items", "users"):
        a, b = getattr(from_zip, table), getattr(from_wheel, table)
        assert a.sort(a.columns[:2]).equals(b.sort(b.columns[:2])), table


def test_corrupt_download_is_rejected_and_explained(tiny_ml100k, monkeypatch):
    use, _ = tiny_ml100k
    with serve({"/ml-100k.zip": b"not a zip"}) as (base, _):
        use(f"{base}/ml-100k.zip")
        info = dataclasses.replace(catalog.DATASETS["ml-100k"], downloads=catalog.DATASETS["ml-100k"].downloads[:1])
        monkeypatch.setitem(catalog.DATASETS, "ml-100k", info)
        with pytest.raises(DataError, match=r"not a readable zip.*Place u\.data, u\.item, u\.user"):
            fetch("ml-100k")
    assert not (dataset_folder("ml-100k").parent / "ml-100k.zip").exists()  # not kept in the cache
