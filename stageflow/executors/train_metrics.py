"""ROC AUC as a rank statistic (Mann-Whitney U), with tied scores sharing their mean rank.

Exact, in torch, with no scikit-learn dependency: ``AUC = (R+ - P(P+1)/2) / (P N)`` where
``R+`` is the sum of the positives' ranks among all scores.
"""

from __future__ import annotations

from typing import Any

__all__ = ["roc_auc"]


def roc_auc(scores: Any, labels: Any) -> float | None:
    """AUC of ``scores`` (1-D tensor) against 0/1 ``labels``; None when one class is absent."""
    import torch

    scores = scores.detach().double().flatten()
    positive = labels.detach().flatten() > 0.5
    n_pos = int(positive.sum())
    n_neg = positive.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # 1-based mean rank of each tie group
    ranks = torch.empty_like(scores)
    ranks[order] = torch.repeat_interleave(mean_rank, counts)
    rank_sum = float(ranks[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
