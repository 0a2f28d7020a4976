"""RQ-VAE semantic IDs (TIGER, Rajput et al., NeurIPS'23; METHODS.md §1.4).

x [N, D] → MLP encoder → z [N, latent_dim] → residual quantisation with `levels` codebooks
([K, latent_dim] each; code_l = nearest codeword to the residual r_{l−1}) → ẑ = Σ_l e_{code_l} →
MLP decoder → x̂ [N, D]. Loss (β = 0.25, straight-through estimator for ẑ):

    ||x − x̂||² + Σ_l ||sg(r_{l−1}) − e_l||² + β Σ_l ||r_{l−1} − sg(e_l)||²

Training: AdamW over shuffled mini-batches for `epochs` epochs. Codebooks are initialised by
residual K-means on the encoder outputs of the first batch (at least codebook_size rows); after each
epoch, codes no item used in that epoch are re-seeded from the residuals of random items ([I]: the
residual at that level, so a restarted code lands where that level's data lives).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from recstack.errors import ConfigError
from recstack.nn.mlp import MLP
from recstack.registry import register
from recstack.semantic_ids.base import Quantizer, QuantizerConfig
from recstack.semantic_ids.kmeans import KMeansConfig, fit_kmeans, squared_distances


class RQVAENet(nn.Module):
    def __init__(
        self, dim: int, hidden: list[int], latent_dim: int, levels: int, codebook_size: int, beta: float
    ) -> None:
        super().__init__()
        self.beta = beta
        self.encoder = MLP(dim, hidden, latent_dim)
        self.decoder = MLP(latent_dim, list(reversed(hidden)), dim)
        self.codebooks = nn.Parameter(torch.randn(levels, codebook_size, latent_dim) * 0.01)

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """z [n, latent] -> (codes [n, L], ẑ [n, latent], codebook+commitment loss, residuals before each level)."""
        residual, quantized, loss = z, torch.zeros_like(z), z.new_zeros(())
        codes, residuals = [], []
        for codebook in self.codebooks:
            residuals.append(residual)
            code = squared_distances(residual.detach(), codebook.detach()).argmin(1)
            chosen = codebook[code]
            loss = (
                loss
                + (residual.detach() - chosen).pow(2).sum(1).mean()
                + self.beta * (residual - chosen.detach()).pow(2).sum(1).mean()
            )
            quantized = quantized + chosen
            residual = residual - chosen.detach()
            codes.append(code)
        quantized = z + (quantized - z).detach()  # straight-through estimator
        return torch.stack(codes, 1), quantized, loss, residuals


@dataclass
class RQVAEConfig(QuantizerConfig):
    """Sizes follow TIGER (MLP 512-256-128 → 32-d latent, 3 × 256 codes); training by AdamW."""

    levels: int = 3
    codebook_size: int = 256
    latent_dim: int = 32
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])
    beta: float = 0.25
    epochs: int = 50
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    cosine_decay: bool = True
    kmeans_init: bool = True
    restart_dead_codes: bool = True
    kmeans: KMeansConfig = field(default_factory=lambda: KMeansConfig(niter=10))

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("levels", "codebook_size", "latent_dim", "epochs", "batch_size"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"rq_vae.{key} must be > 0, got {getattr(self, key)!r}")
        if self.lr <= 0 or self.beta < 0:
            raise ConfigError("rq_vae: lr must be > 0 and beta >= 0")


@register("quantizer", "rq_vae", config=RQVAEConfig)
class RQVAE(Quantizer):
    """[N, D] -> codes [N, levels]; decode runs the decoder on the summed codewords."""

    name = "rq_vae"
    config: RQVAEConfig

    def __init__(self, config: RQVAEConfig | None = None) -> None:
        super().__init__(config or RQVAEConfig())
        self.net: RQVAENet | None = None
        self.history: list[float] = []  # mean training loss per epoch

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.config.codebook_size] * self.config.levels

    def _fitted_net(self) -> RQVAENet:
        assert self.net is not None, "rq_vae: the network is built by fit / load"
        return self.net

    def _build(self, dim: int) -> RQVAENet:
        c = self.config
        return RQVAENet(dim, list(c.hidden_dims), c.latent_dim, c.levels, c.codebook_size, c.beta)

    def _fit(self, x: torch.Tensor) -> None:
        c = self.config
        n = x.shape[0]
        generator = torch.Generator().manual_seed(c.seed)
        with torch.random.fork_rng():
            torch.manual_seed(c.seed)
            self.net = net = self._build(x.shape[1])
        optimiser = torch.optim.AdamW(net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        steps = c.epochs * -(-n // c.batch_size)
        # cosine decay: Adam's steps have size ~lr, which would otherwise blur fine last-level codewords
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)) if c.cosine_decay else 1.0
        )
        self.history = []
        for epoch in range(c.epochs):
            order = torch.randperm(n, generator=generator)
            if epoch == 0 and c.kmeans_init:
                self._kmeans_init(x[order[: max(c.batch_size, c.codebook_size)]])
            used = torch.zeros(c.levels, c.codebook_size, dtype=torch.bool)
            total = 0.0
            net.train()
            for start in range(0, n, c.batch_size):
                batch = x[order[start : start + c.batch_size]]
                codes, quantized, vq_loss, _ = net.quantize(net.encoder(batch))
                loss = (net.decoder(quantized) - batch).pow(2).sum(1).mean() + vq_loss
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                used.scatter_(1, codes.T, True)
                total += float(loss.detach()) * batch.shape[0]
            self.history.append(total / n)
            if c.restart_dead_codes and epoch < c.epochs - 1 and not bool(used.all()):
                self._restart(x, ~used, generator)
        net.eval()

    @torch.no_grad()
    def _kmeans_init(self, batch: torch.Tensor) -> None:
        net = self._fitted_net()
        residual = net.encoder(batch)
        for level in range(self.config.levels):
            result = fit_kmeans(
                residual.float(), self.config.codebook_size, self.config.kmeans, self.config.seed + 1000 * level
            )
            net.codebooks[level].copy_(result.centroids)
            residual = residual - result.centroids[squared_distances(residual, result.centroids).argmin(1)]

    @torch.no_grad()
    def _restart(self, x: torch.Tensor, dead: torch.Tensor, generator: torch.Generator) -> None:
        """Re-seed dead codes [L, K] (bool) at the level residuals of random items."""
        needed = int(dead.sum(1).max())
        sample = x[torch.randperm(x.shape[0], generator=generator)[:needed]]
        net = self._fitted_net()
        _, _, _, residuals = net.quantize(net.encoder(sample))
        for level in range(self.config.levels):
            slots = torch.nonzero(dead[level]).flatten()
            net.codebooks[level, slots] = residuals[level][: slots.numel()]

    def _encode_chunk(self, x: torch.Tensor) -> torch.Tensor:
        net = self._fitted_net()
        return net.quantize(net.encoder(x))[0]

    def _decode_chunk(self, codes: torch.Tensor) -> torch.Tensor:
        net = self._fitted_net()
        levels = torch.arange(self.levels)
        return net.decoder(net.codebooks[levels, codes].sum(1))

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        return {k: v.detach() for k, v in self._fitted_net().state_dict().items()}, {"loss_history": self.history}

    def _load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        assert self.dim is not None  # Quantizer.load sets dim first
        self.net = self._build(self.dim)
        self.net.load_state_dict(tensors)
        self.net.eval()
        self.history = meta.get("loss_history", [])
