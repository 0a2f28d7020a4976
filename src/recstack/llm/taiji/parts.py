"""Incremental, resumable stage outputs: a folder of JSONL parts, each written atomically.

    store = PartStore(work / "reason")
    todo = [u for u in users if u not in store.done()]
    store.write(chunk_users, records)     # part-00007.jsonl via a temp file + os.replace
    store.records()                        # every record of every finished part, in part order

A part's first line is a header {"_users": [...]} naming the users it covers — also those that yielded
no record (e.g. every sample was filtered) — so a killed job redoes only the part it was writing.
`write_in_parts` is that loop; `write_jsonl` / `read_jsonl` are for a stage's single whole-file output
(ORFT's kept.jsonl), replaced in one rename so a reader never sees half of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from recstack.errors import DataError

T = TypeVar("T")


class PartStore:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def parts(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("part-*.jsonl"))

    def _read(self, path: Path) -> tuple[list[int], list[dict[str, Any]]]:
        lines = path.read_text().splitlines()
        try:
            header = json.loads(lines[0]) if lines else {}
            records = [json.loads(line) for line in lines[1:] if line.strip()]
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSONL ({exc}); delete the file to redo its users") from exc
        if "_users" not in header:
            raise DataError(f"{path}: the first line must be the part header {{'_users': [...]}}")
        return [int(u) for u in header["_users"]], records

    def done(self) -> set[int]:
        """Users covered by finished parts."""
        return {u for part in self.parts() for u in self._read(part)[0]}

    def records(self) -> list[dict[str, Any]]:
        return [rec for part in self.parts() for rec in self._read(part)[1]]

    def write(self, users: Sequence[int], records: Sequence[dict[str, Any]]) -> Path:
        """A new part covering `users` with `records`, atomically (temp file in the folder + rename)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self.parts()
        index = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        target = self.folder / f"part-{index:05d}.jsonl"
        tmp = self.folder / f".{target.name}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as out:
                out.write(json.dumps({"_users": [int(u) for u in users]}) + "\n")
                for rec in records:
                    out.write(json.dumps(rec) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def write_in_parts(
    store: PartStore,
    todo: Sequence[T],
    size: int,
    user: Callable[[T], int],
    records: Callable[[list[T]], Sequence[dict[str, Any]]],
    bar: Any,
) -> None:
    """The loop every per-user stage shares: `records` of `size` todo entries at a time, each chunk one part
    (a killed stage loses at most the chunk it was on); the `bar` is closed even then."""
    try:
        for start in range(0, len(todo), size):
            chunk = list(todo[start : start + size])
            store.write([user(x) for x in chunk], records(chunk))
            bar.update(len(chunk))
    finally:
        bar.close()


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
