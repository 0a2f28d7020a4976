"""The Quantizer protocol: item embeddings -> semantic-ID code tuples, and back.

    fit(embeddings: [N, D]) -> self
    encode(embeddings: [N, D]) -> LongTensor[N, L]      (streamed in chunks of config.chunk_size)
    decode(codes: [N, L]) -> FloatTensor[N, D]          (sum of level centroids / FSQ / VAE decoder)
    save(dir) / Quantizer.load(dir)                      (config.json + state.safetensors)
    levels, codebook_sizes

Subclasses implement `_fit(x)`, `_encode_chunk(x)`, `_decode_chunk(codes)`, `codebook_sizes`,
`_state()` and `_load_state()`. Validation (finite rows, dimensions, code ranges, enough items for
the codebook) lives here, once, so every quantizer rejects bad input with the same messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recstack.config import to_dict
from recstack.errors import ConfigError, DataError
from recstack.registry import add_plugin_modules, load_saved_config
from recstack.train.checkpoint import atomic_dir, write_json

add_plugin_modules(
    "quantizer",
    [
        "recstack.semantic_ids.rq_kmeans",
        "recstack.semantic_ids.fsq",
        "recstack.semantic_ids.rq_vae",
        "recstack.semantic_ids.rq_gmm",
    ],
)

ArrayLike = torch.Tensor | np.ndarray


@dataclass
class QuantizerConfig:
    """Settings every quantizer shares. seed: all randomness; chunk_size: rows per encode/decode
    step (bounds memory); threads: torch / FAISS threads while fitting and encoding."""

    seed: int = 0
    chunk_size: int = 16384
    threads: int = 2

    def __post_init__(self) -> None:
        for key in ("chunk_size", "threads"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"quantizer.{key} must be > 0, got {getattr(self, key)!r}")


@contextmanager
def limited_threads(threads: int) -> Iterator[None]:
    """Cap torch (and FAISS, if loaded) threads for the duration; restore torch's count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(min(threads, previous))
    try:
        import faiss

        faiss.omp_set_num_threads(min(threads, previous))
    except ImportError:  # pragma: no cover
        pass
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---- validation ----------------------------------------------------------------------------------
def check_matrix(x: ArrayLike, where: str, dim: int | None = None) -> ArrayLike:
    """A 2-D tensor/array with `dim` columns (if given); not converted or copied."""
    if not isinstance(x, (torch.Tensor, np.ndarray)):
        raise DataError(f"{where}: expected a 2-D tensor or array, got {type(x).__name__}")
    if x.ndim != 2:
        raise DataError(f"{where}: expected a 2-D [N, D] matrix, got shape {tuple(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise DataError(f"{where}: embeddings have dimension {x.shape[1]}, the quantizer was fitted on {dim}")
    if x.shape[0] == 0:
        raise DataError(f"{where}: no rows")
    return x


def to_float_rows(x: ArrayLike, where: str, row_offset: int = 0) -> torch.Tensor:
    """float32 tensor of rows; raises DataError naming the first row with NaN/inf (offset = its index)."""
    rows = torch.as_tensor(np.asarray(x)) if isinstance(x, np.ndarray) else x
    rows = rows.detach().to("cpu", torch.float32)
    bad = ~torch.isfinite(rows).all(dim=1)
    if bool(bad.any()):
        bad_rows = torch.nonzero(bad).flatten()
        raise DataError(
            f"{where}: embedding row {int(bad_rows[0]) + row_offset} contains NaN or inf "
            f"({bad_rows.numel()} bad row(s) in rows {row_offset}..{row_offset + rows.shape[0] - 1})"
        )
    return rows


def check_enough_rows(n: int, codebook_size: int, where: str) -> None:
    if n < codebook_size:
        raise DataError(
            f"{where}: codebook size {codebook_size} is larger than the number of items ({n}); "
            f"use a smaller codebook_size or more items"
        )


class Quantizer:
    """Base class: subclasses set `name` and keep their dataclass config (a QuantizerConfig) in `config`."""

    name: str = "quantizer"

    def __init__(self, config: QuantizerConfig) -> None:
        self.config = config
        self.dim: int | None = None  # input dimension, set by fit / load

    # ---- to implement ----------------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> list[int]:
        raise NotImplementedError

    def _fit(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors for state.safetensors, extra JSON metadata)."""
        raise NotImplementedError

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def _min_rows(self) -> int:
        """Fewest rows `fit` accepts (the largest learned codebook)."""
        return max(self.codebook_sizes)

    # ---- public API ------------------------------------------------------------------------------
    @property
    def levels(self) -> int:
        return len(self.codebook_sizes)

    @property
    def fitted(self) -> bool:
        return self.dim is not None

    def fit(self, embeddings: ArrayLike) -> Quantizer:
        """embeddings: [N, D] float, all finite, N >= the codebook size."""
        where = f"{self.name}.fit"
        x = to_float_rows(check_matrix(embeddings, where), where)
        check_enough_rows(x.shape[0], self._min_rows(), where)
        with limited_threads(self.config.threads):
            self._fit(x)
        self.dim = x.shape[1]
        return self

    def encode(self, embeddings: ArrayLike) -> torch.Tensor:
        """[N, D] -> LongTensor[N, levels]; converts and encodes chunk_size rows at a time, so a
        memory-mapped array is never loaded whole."""
        return self._encode(embeddings, row_offset=0)

    def encode_stream(self, chunks: Iterable[ArrayLike]) -> Iterator[torch.Tensor]:
        """Encode an iterable of [n_i, D] chunks lazily (e.g. read from disk); yields [n_i, levels].
        Error messages count rows across the whole stream."""
        offset = 0
        for chunk in chunks:
            yield self._encode(chunk, row_offset=offset)
            offset += chunk.shape[0]

    def _encode(self, embeddings: ArrayLike, row_offset: int) -> torch.Tensor:
        where = f"{self.name}.encode"
        self._require_fitted(where)
        check_matrix(embeddings, where, self.dim)
        n, step = embeddings.shape[0], self.config.chunk_size
        codes = torch.empty(n, self.levels, dtype=torch.long)
        with limited_threads(self.config.threads), torch.no_grad():
            for start in range(0, n, step):
                rows = to_float_rows(embeddings[start : start + step], where, row_offset=row_offset + start)
                codes[start : start + rows.shape[0]] = self._encode_chunk(rows)
        return codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """LongTensor[N, levels] -> FloatTensor[N, D] reconstruction."""
        where = f"{self.name}.decode"
        self._require_fitted(where)
        assert self.dim is not None
        codes = self.check_codes(codes, where)
        step = self.config.chunk_size
        out = torch.empty(codes.shape[0], self.dim, dtype=torch.float32)
        with limited_threads(self.config.threads), torch.no_grad():
            for start in range(0, codes.shape[0], step):
                out[start : start + step] = self._decode_chunk(codes[start : start + step])
        return out

    def check_codes(self, codes: torch.Tensor, where: str) -> torch.Tensor:
        """Integer [N, levels] codes, each within its level's codebook; errors name row and level."""
        codes = torch.as_tensor(codes)
        if codes.dim() != 2 or codes.shape[1] != self.levels:
            raise DataError(f"{where}: expected codes of shape [N, {self.levels}], got {tuple(codes.shape)}")
        if codes.dtype.is_floating_point or codes.dtype == torch.bool:
            raise DataError(f"{where}: codes must be integers, got {codes.dtype}")
        codes = codes.long()
        sizes = torch.tensor(self.codebook_sizes)
        bad = (codes < 0) | (codes >= sizes)
        if bool(bad.any()):
            row, level = (int(v) for v in torch.nonzero(bad)[0])
            raise DataError(
                f"{where}: code {int(codes[row, level])} in row {row}, level {level} is outside "
                f"[0, {self.codebook_sizes[level]})"
            )
        return codes

    def _require_fitted(self, where: str) -> None:
        if not self.fitted:
            raise DataError(f"{where}: the quantizer is not fitted; call fit() or Quantizer.load() first")

    # ---- persistence -----------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write config.json (registry name, config, dim) + state.safetensors atomically into `path`."""
        self._require_fitted(f"{self.name}.save")
        tensors, extra = self._state()
        meta = {
            "name": self.name,
            "config": to_dict(self.config),
            "dim": self.dim,
            "codebook_sizes": self.codebook_sizes,
            **extra,
        }
        with atomic_dir(path) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
            write_json(tmp / "config.json", meta)

    @staticmethod
    def load(path: str | Path) -> Quantizer:
        path = Path(path)
        entry, config, meta = load_saved_config(path, "quantizer")
        try:
            tensors = load_file(str(path / "state.safetensors"))
        except (OSError, SafetensorError) as exc:
            raise DataError(f"{path}: unreadable saved quantizer: {exc}") from exc
        model = entry.cls(config)
        model.dim = int(meta["dim"])
        model._load_state(tensors, meta)
        return model
