"""Mask builders checked element by element on small hand-made cases (True = query row may attend key column)."""

from __future__ import annotations

import torch

from recstack.nn.masks import (
    HISTORY,
    PAD,
    REALTIME,
    TARGET,
    hstu_target_mask,
    mtfm_dynamic_mask,
    sliding_window_causal_mask,
)


def grid(rows: list[str]) -> list[list[bool]]:
    return [[c == "1" for c in row] for row in rows]


def test_sliding_window_causal_mask():
    valid = torch.tensor([[False, True, True, True, True]])
    mask = sliding_window_causal_mask(valid, window=2)[0]
    assert mask.tolist() == grid(
        [
            "10000",  # padding query: itself only
            "01000",
            "01100",
            "00110",  # window 2: keys 2, 3
            "00011",
        ]
    )
    assert sliding_window_causal_mask(valid, None)[0].tolist() == grid(["10000", "01000", "01100", "01110", "01111"])


def test_hstu_target_mask():
    history = torch.tensor([[False, True, True]])  # one padding slot, two events
    targets = torch.tensor([[True, True, False]])  # two candidates, one empty slot
    mask = hstu_target_mask(history, targets)[0]
    assert mask.tolist() == grid(
        [
            "100000",
            "010000",
            "011000",  # history: causal, never a target
            "011100",  # target 1: the history + itself
            "011010",  # target 2: not target 1
            "000001",
        ]
    )  # empty slot: itself only
    visible = torch.tensor([[[True, True, True], [True, True, False], [True, True, True]]])  # target 2: event 1 only
    mask = hstu_target_mask(history, targets, target_visible=visible, target_self=False)[0]
    assert mask[3].tolist() == [False, True, True, False, False, False]
    assert mask[4].tolist() == [False, True, False, False, False, False]
    assert mask[5].tolist() == [False, False, False, False, False, True]  # sees nothing: keeps its diagonal
    windowed = hstu_target_mask(torch.ones(1, 3, dtype=torch.bool), targets[:, :1], window=2)[0]
    assert windowed[:3, :3].tolist() == grid(["100", "110", "011"]) and windowed[3].tolist() == [True] * 4


def test_mtfm_dynamic_mask():
    types = torch.tensor([[PAD, HISTORY, HISTORY, REALTIME, REALTIME, TARGET, TARGET]])
    #                      pad  h@1      h@2      r@5       r@8       t@6     t@9
    times = torch.tensor([[0.0, 1.0, 2.0, 5.0, 8.0, 6.0, 9.0]])
    mask = mtfm_dynamic_mask(types, times)[0]
    assert mask.tolist() == grid(
        [
            "1000000",  # padding: itself
            "0110000",  # H sees H (both ways), never R or T
            "0110000",
            "0111000",  # r@5 sees H and itself, not the later r@8
            "0111100",  # r@8 sees H, r@5
            "0111010",  # t@6 sees H and r@5 (before it), not r@8, not t@9
            "0111101",
        ]
    )  # t@9 sees H, both R, not t@6
    # batched: each row uses its own types and times
    both = mtfm_dynamic_mask(torch.cat([types, types.flip(1)]), torch.cat([times, times.flip(1)]))
    assert torch.equal(both[0], mask) and torch.equal(both[1], mask.flip(0).flip(1))
