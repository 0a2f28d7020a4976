"""Attention-mask builders: bool [B, S, S], True where query i may attend key j (shared by heads).

Pure functions of validity / token types / times, checked element by element in tests/nn/test_masks.py.
Every position may attend itself, so a padding query never has an empty softmax row (its output is ignored).

- `sliding_window_causal_mask`: key j <= i within the last `window` positions (nn/sliding_window.py's band).
- `hstu_target_mask` (HSTU ranking, METHODS.md §1.2): [history (T) ; targets (M)]. History is causal (optionally
  windowed, HSTU's max_attn_len); each target sees the (visible) history and itself, never another target, and
  no history token sees a target. `target_visible` [B, M, T] restricts which history events each target may see
  (user-level aggregation: only events before that target's request).
- `mtfm_dynamic_mask` (MTFM, METHODS.md §2.6): token types H (history), R (real-time), T (target) with times.
  H keys are visible to every token; an R key only to R / T queries with a strictly later time; a T key only to
  itself. H queries see H only.
"""

from __future__ import annotations

import torch

from recstack.nn.sliding_window import window_mask

PAD, HISTORY, REALTIME, TARGET = 0, 1, 2, 3  # token types of mtfm_dynamic_mask


def sliding_window_causal_mask(valid: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """valid [B, T] bool -> [B, T, T]: query i sees valid keys j with i - window < j <= i (None = all j <= i)."""
    return window_mask(valid, window, causal=True)


def hstu_target_mask(
    history_valid: torch.Tensor,
    target_valid: torch.Tensor,
    window: int | None = None,
    target_visible: torch.Tensor | None = None,
    target_self: bool = True,
) -> torch.Tensor:
    """history_valid [B, T], target_valid [B, M] bool -> [B, T + M, T + M].

    target_visible: [B, M, T] bool or None (= every history event); target_self: a target attends itself
    (False: only the history; a target that sees nothing still keeps its diagonal for a defined softmax).
    """
    b, t = history_valid.shape
    m = target_valid.shape[1]
    device = history_valid.device
    mask = torch.zeros(b, t + m, t + m, dtype=torch.bool, device=device)
    mask[:, :t, :t] = sliding_window_causal_mask(history_valid, window)
    sees = history_valid.unsqueeze(1) & target_valid.unsqueeze(2)  # [B, M, T]
    if target_visible is not None:
        sees = sees & target_visible
    mask[:, t:, :t] = sees
    eye = torch.eye(m, dtype=torch.bool, device=device).unsqueeze(0)
    if target_self:
        diagonal = eye.expand(b, m, m)
    else:  # only targets with nothing to see keep their diagonal (a defined softmax; the output is ignored)
        diagonal = eye & ~sees.any(-1).unsqueeze(-1)
    mask[:, t:, t:] = diagonal
    return mask


def mtfm_dynamic_mask(token_type: torch.Tensor, token_time: torch.Tensor) -> torch.Tensor:
    """token_type [B, S] long (PAD, HISTORY, REALTIME, TARGET); token_time [B, S] float (any monotone clock:
    a target's time is its request time, an event's its occurrence) -> [B, S, S].

    allowed[i, j] = j == i, or (key j is H and query i is H, R or T), or (key j is R, query i is R or T and
    time[j] < time[i]). So H sees H; R sees H and earlier R; T sees H and the R before its request; no token
    sees a T (targets are isolated from each other); padding keys are invisible.
    """
    q, k = token_type.unsqueeze(2), token_type.unsqueeze(1)
    earlier = token_time.unsqueeze(1) < token_time.unsqueeze(2)  # [B, i, j]: time[j] < time[i]
    later_query = (q == REALTIME) | (q == TARGET)
    mask = (k == HISTORY) & (q != PAD)
    mask |= (k == REALTIME) & later_query & earlier
    s = token_type.shape[1]
    return mask | torch.eye(s, dtype=torch.bool, device=token_type.device).unsqueeze(0)
