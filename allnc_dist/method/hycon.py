"""HyCon, the hybrid contrastive loss of AllNC (pulls each activation to its class: NC1).

Two "views" only: the anchor activation and its class mean. For anchor i and class k the set
A_k(i) holds the batch samples of class k other than i plus the class prototype p_k, so every class
seen so far takes part through its prototype even when absent from the batch. As in BCL, each class
set is averaged in the denominator, so head classes do not dominate it:

    L_i = -1/|A_y(i)| sum_{p in A_y(i)} log( exp(z_i.p/tau) / sum_k 1/|A_k(i)| sum_{a in A_k(i)} exp(z_i.a/tau) )
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def hycon_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    prototypes: torch.Tensor,
    valid_classes: torch.Tensor,
    tau: float = 0.1,
    use_samples: bool = True,
) -> torch.Tensor:
    """Mean HyCon loss over the anchors.

    embeddings: (N, E) unit vectors; labels: (N,); prototypes: (K, E) unit vectors;
    valid_classes: (K,) bool, the classes whose prototype exists (every label must be valid).
    use_samples=False keeps the prototypes only (the pure two-view form).
    """
    n, k = len(labels), len(prototypes)
    onehot = F.one_hot(labels, k).to(embeddings.dtype)
    to_prototypes = embeddings @ prototypes.T / tau  # (N, K)
    if use_samples:
        set_size = onehot.sum(0, keepdim=True) - onehot + 1.0  # |A_k(i)|, (N, K)
    else:
        set_size = torch.ones_like(onehot)
    log_set_weight = -set_size.log()
    invalid = ~valid_classes.unsqueeze(0)
    terms = [(to_prototypes + log_set_weight).masked_fill(invalid, float("-inf"))]
    positives = to_prototypes.gather(1, labels.unsqueeze(1)).squeeze(1)
    if use_samples:
        to_samples = embeddings @ embeddings.T / tau  # (N, N)
        self_mask = torch.eye(n, dtype=torch.bool, device=embeddings.device)
        sample_weight = log_set_weight.gather(1, labels.unsqueeze(0).expand(n, n))
        terms.append((to_samples + sample_weight).masked_fill(self_mask, float("-inf")))
        same_class = (labels.unsqueeze(0) == labels.unsqueeze(1)) & ~self_mask
        positives = positives + (to_samples * same_class).sum(1)
    denominator = torch.logsumexp(torch.cat(terms, dim=1), dim=1)
    numerator = positives / set_size.gather(1, labels.unsqueeze(1)).squeeze(1)
    return (denominator - numerator).mean()
