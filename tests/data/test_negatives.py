import torch

from recstack.data.jagged import Jagged
from recstack.data.negatives import PopularitySampler, UniformSampler, resample_positives


def test_uniform_never_draws_padding_and_is_seeded():
    a = UniformSampler(10, seed=3).sample(100, 5)
    b = UniformSampler(10, seed=3).sample(100, 5)
    assert torch.equal(a, b)
    assert a.min() >= 1 and a.max() <= 10


def test_popularity_follows_counts():
    counts = torch.tensor([0.0, 1.0, 0.0, 9.0])
    draws = PopularitySampler(counts, alpha=1.0, seed=0).sample(1, 20000)
    assert (draws == 2).sum() == 0 and (draws == 0).sum() == 0
    share = (draws == 3).float().mean().item()
    assert abs(share - 0.9) < 0.02


def test_resample_removes_positives():
    sampler = UniformSampler(5, seed=0)
    negatives = torch.tensor([[1, 2, 3], [4, 4, 5]])
    positives = Jagged.from_lists([[1, 2], [4]])
    out = resample_positives(negatives, positives, sampler, max_rounds=50)
    assert not torch.isin(out[0], torch.tensor([1, 2])).any()
    assert not (out[1] == 4).any()
