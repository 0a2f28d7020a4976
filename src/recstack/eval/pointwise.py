"""Pointwise (ranking-stage) metrics: AUC, GAUC, logloss, per task. Vectorised, float64 throughout."""

from __future__ import annotations

import torch

from recstack.errors import DataError


def _as_1d(values, name: str) -> torch.Tensor:
    tensor = torch.as_tensor(values).reshape(-1) if not isinstance(values, torch.Tensor) else values.reshape(-1)
    if tensor.is_floating_point() and torch.isnan(tensor).any():
        raise DataError(f"{name} contains NaN at position {int(torch.isnan(tensor).nonzero()[0])}")
    return tensor.double()


def _binary_labels(labels, name: str = "labels") -> torch.Tensor:
    labels = _as_1d(labels, name)
    bad = (labels != 0) & (labels != 1)
    if bad.any():
        row = int(bad.nonzero()[0])
        raise DataError(f"{name} must be 0/1; position {row} holds {float(labels[row])}")
    return labels


def _same_length(*tensors: tuple[str, torch.Tensor]) -> None:
    lengths = {name: t.numel() for name, t in tensors}
    if len(set(lengths.values())) > 1:
        raise DataError(f"length mismatch: {lengths}")


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of `values` [N] in ascending order, tied values sharing their mean rank. [N] float64."""
    sorted_values, order = torch.sort(values)
    _, inverse, counts = torch.unique_consecutive(sorted_values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()  # rank of the last member of each tie group
    group_rank = ends - (counts.double() - 1) / 2
    ranks = torch.empty_like(values, dtype=torch.float64)
    ranks[order] = group_rank[inverse]
    return ranks


def auc(labels, scores) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted as half; equals sklearn roc_auc_score.

    labels: [N] 0/1. scores: [N] any real. NaN when only one class is present (AUC undefined).
    """
    labels, scores = _binary_labels(labels), _as_1d(scores, "scores")
    _same_length(("labels", labels), ("scores", scores))
    positives = float(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = float((average_ranks(scores) * labels).sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def gauc(users, labels, scores) -> float:
    """Group AUC: per-user AUC averaged with weights = the user's number of samples.

    users, labels (0/1), scores: [N]. Only users with both a positive and a negative take part;
    NaN when there is none. One sort over (user, score) and segment sums; no loop over users.
    """
    users, labels, scores = torch.as_tensor(users).reshape(-1).long(), _binary_labels(labels), _as_1d(scores, "scores")
    _same_length(("users", users), ("labels", labels), ("scores", scores))
    if users.numel() == 0:
        return float("nan")
    order = torch.sort(scores, stable=True).indices
    order = order[torch.sort(users[order], stable=True).indices]  # by user, then by score
    users, labels, scores = users[order], labels[order], scores[order]
    n = users.numel()
    new_user = torch.ones(n, dtype=torch.bool)
    new_user[1:] = users[1:] != users[:-1]
    new_group = new_user.clone()  # a run of equal scores of one user
    new_group[1:] |= scores[1:] != scores[:-1]
    user_id = new_user.long().cumsum(0) - 1
    group_id = new_group.long().cumsum(0) - 1
    position = torch.arange(n)
    rank_in_user = (position - position[new_user][user_id] + 1).double()
    group_size = torch.bincount(group_id).double()
    group_rank = rank_in_user[new_group] + (group_size - 1) / 2  # mean rank of the tie group
    rank = group_rank[group_id]
    size = torch.bincount(user_id).double()
    pos = torch.bincount(user_id, weights=labels)
    neg = size - pos
    rank_sum = torch.bincount(user_id, weights=labels * rank)
    valid = (pos > 0) & (neg > 0)
    if not valid.any():
        return float("nan")
    per_user = (rank_sum[valid] - pos[valid] * (pos[valid] + 1) / 2) / (pos[valid] * neg[valid])
    return float((per_user * size[valid]).sum() / size[valid].sum())


def logloss(labels, probs, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy; probs [N] in [0, 1] are clipped to [eps, 1 - eps]. labels [N] in [0, 1]."""
    labels, probs = _as_1d(labels, "labels"), _as_1d(probs, "probs")
    _same_length(("labels", labels), ("probs", probs))
    for name, t in (("labels", labels), ("probs", probs)):
        bad = (t < 0) | (t > 1)
        if bad.any():
            row = int(bad.nonzero()[0])
            raise DataError(f"{name} must lie in [0, 1]; position {row} holds {float(t[row])}")
    if labels.numel() == 0:
        return float("nan")
    p = probs.clamp(eps, 1 - eps)
    return float(-(labels * torch.log(p) + (1 - labels) * torch.log1p(-p)).mean())


def pointwise_metrics(
    labels: dict[str, torch.Tensor],
    scores: dict[str, torch.Tensor],
    users: torch.Tensor | None = None,
    logits: bool = False,
) -> dict[str, float]:
    """AUC, GAUC and logloss for every task in `labels`: keys "click/auc", "click/gauc", "click/logloss".

    labels, scores: task -> [N]. users: [N] user ids (GAUC is skipped when None).
    logits=True: scores are logits and pass through a sigmoid for logloss (AUC is unaffected).
    """
    out: dict[str, float] = {}
    for task, task_labels in labels.items():
        if task not in scores:
            raise DataError(f"no scores for task {task!r} (scores have: {', '.join(scores) or 'none'})")
        task_scores = torch.as_tensor(scores[task]).reshape(-1).double()
        try:
            out[f"{task}/auc"] = auc(task_labels, task_scores)
            if users is not None:
                out[f"{task}/gauc"] = gauc(users, task_labels, task_scores)
            probs = torch.sigmoid(task_scores) if logits else task_scores
            out[f"{task}/logloss"] = logloss(task_labels, probs)
        except DataError as exc:
            hint = " (for raw logits pass logits=True)" if not logits and "probs must" in str(exc) else ""
            raise DataError(f"task {task!r}: {exc}{hint}") from exc
    return out
