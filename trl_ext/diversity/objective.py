"""The diversity objective of one generation batch, as pure functions (docs/diversity.md, "Trainer").

The trainer encodes each completion's blocks in a table and computes the loss of the *whole* generation batch (all
processes, all gradient-accumulation steps) from the per-token log-probs ``log p_t``:

* **block table** (:func:`block_table`): ``(B, M, 6)`` int64 with the columns of :data:`BLOCK_COLUMNS`:
  ``start, end`` (completion token positions, ``end`` exclusive), ``concept`` (its index; −1 marks an unused row),
  ``option`` (the option of a concept block, or of the concept block that an open block follows; −1 otherwise),
  ``role`` (:data:`ROLE_CONCEPT`, :data:`ROLE_FOLLOWING` — the open block right after a concept block —, or
  :data:`ROLE_OTHER`), ``cluster`` (the replay buffer's label of a following open block; −1 when unclustered);
* **groups**: ``(B,)`` the prompt of each completion (an index); every distribution is per prompt.

:func:`diversity_objective` then gives, with G the (prompt, concept) pairs present in the batch,

* ``L_c = mean_{(g,c)} KL(P̂_{g,c} ‖ U)`` — :func:`~trl_ext.diversity.losses.concept_loss` of the concept blocks;
* ``L_o = mean_{(g,c)} reduce_o L_o(g,c,o)`` — :func:`~trl_ext.diversity.losses.open_block_loss` of the following
  open blocks of each option (0 for an option whose buffer is not clustered yet), reduced by ``"sum"`` or
  ``"weighted"`` (:func:`~trl_ext.diversity.losses.reduce_open_block_losses`);
* ``loss_type="kl"``: ``w_c · L_c + w_o · L_o``; ``loss_type="tb"``: trajectory balance
  ``mean_i (log Z_{g(i)} + Σ_t log p_t − log R_i)²`` with the rarity reward of :func:`cell_log_rewards`.

With one prompt and one concept this is exactly the document's ``w_c · L_c + w_o · Σ_o L_o(o)``.

Because the loss is a function of the whole batch, the trainer differentiates it once per generation batch with
respect to the (detached) per-token log-probs, ``W_t = ∂L/∂ log p_t`` (and ``∂L/∂ log Z``), and each micro-batch
back-propagates the surrogate ``Σ_t W_t log p_θ(y_t)``, whose gradient is exactly ``∇_θ L`` summed over the
micro-batches and processes (:func:`objective_weights`). This is what makes gradient accumulation and DDP give the
same update as one process with the whole batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from trl_ext.common.errors import ConfigError
from trl_ext.diversity.concepts import Block, Concept
from trl_ext.diversity.losses import (
    block_logps,
    cluster_rarity_log_reward,
    concept_distribution,
    concept_loss,
    open_block_loss,
    reduce_open_block_losses,
    trajectory_balance_loss,
)

__all__ = [
    "BLOCK_COLUMNS",
    "ROLE_CONCEPT",
    "ROLE_FOLLOWING",
    "ROLE_OTHER",
    "DiversityLoss",
    "block_table",
    "cell_ids",
    "cell_log_rewards",
    "diversity_objective",
    "k2_k3",
    "objective_weights",
    "stop_string_cut",
    "top_p_renormalized_logps",
]

BLOCK_COLUMNS = ("start", "end", "concept", "option", "role", "cluster")
ROLE_CONCEPT, ROLE_FOLLOWING, ROLE_OTHER = 0, 1, 2
_S, _E, _C, _O, _R, _K = range(6)


# --------------------------------------------------------------------------------------------- encoding
def block_table(
    rows: Sequence[Sequence[Block]],
    concepts: Sequence[Concept],
    width: int | None = None,
) -> torch.Tensor:
    """Encode the blocks of each completion (from :func:`~trl_ext.diversity.concepts.segment`) as ``(B, M, 6)``.

    ``M = width`` (default: the most blocks of a row; at least 1). The cluster column starts at −1; the trainer
    fills it from the replay buffers. Unused rows have ``concept = −1``.
    """
    index = {c.name: i for i, c in enumerate(concepts)}
    width = max([len(r) for r in rows] + [1]) if width is None else width
    table = torch.full((len(rows), width, 6), -1, dtype=torch.long)
    table[:, :, _S] = 0
    table[:, :, _E] = 0
    for i, blocks in enumerate(rows):
        if len(blocks) > width:
            raise ValueError(f"completion {i} has {len(blocks)} blocks, more than the table width {width}")
        previous: Block | None = None
        for j, b in enumerate(blocks):
            table[i, j, _S], table[i, j, _E] = b.start, b.end
            if b.kind == "concept":
                c = index[b.concept]
                table[i, j, _C], table[i, j, _O], table[i, j, _R] = c, concepts[c].option_index(b.option), ROLE_CONCEPT
            elif previous is not None and previous.kind == "concept":
                c = index[previous.concept]
                table[i, j, _C] = c
                table[i, j, _O] = concepts[c].option_index(previous.option)
                table[i, j, _R] = ROLE_FOLLOWING
            else:
                table[i, j, _C], table[i, j, _R] = len(concepts), ROLE_OTHER  # a concept index that no loss reads
            previous = b
    return table


def cell_ids(table: torch.Tensor, concept: int = 0) -> torch.Tensor:
    """``(B,)`` the *cell* of each completion for ``concept``: ``option · (K_max + 1) + cluster + 1`` from its
    following open block (cluster −1 when unclustered or absent), or −1 without a concept block."""
    out = torch.full((table.shape[0],), -1, dtype=torch.long, device=table.device)
    k_span = int(table[:, :, _K].max().clamp(min=0)) + 2
    for i in range(table.shape[0]):
        rows = table[i]
        concept_rows = rows[(rows[:, _C] == concept) & (rows[:, _R] == ROLE_CONCEPT)]
        if concept_rows.shape[0] == 0:
            continue
        option = int(concept_rows[0, _O])
        following = rows[(rows[:, _C] == concept) & (rows[:, _R] == ROLE_FOLLOWING)]
        cluster = int(following[0, _K]) if following.shape[0] else -1
        out[i] = option * k_span + cluster + 1
    return out


def cell_log_rewards(table: torch.Tensor, groups: torch.Tensor, n_concepts: int) -> torch.Tensor:
    """``log R_i`` of the trajectory-balance loss: the rarity of the completion's cell within its prompt group.

    The cell of a completion is the tuple over concepts of (option, cluster of the following open block); within a
    prompt group of ``n`` completions, ``log R_i = log(n / n_{cell_i})`` (:func:`cluster_rarity_log_reward`).

    **Decision:** a completion that names no option of any concept gets ``log R = 0``, the reward of a batch that
    is all one cell: never more than a completion that names an option.
    """
    out = torch.zeros(table.shape[0], dtype=torch.float32, device=table.device)
    cells = torch.stack([cell_ids(table, c) for c in range(n_concepts)], dim=1)  # (B, C)
    matched = (cells >= 0).any(dim=1)
    for g in torch.unique(groups):
        members = groups == g
        n = int(members.sum())
        keep = members & matched
        if not keep.any():
            continue
        _, codes = torch.unique(cells[keep], dim=0, return_inverse=True)
        # log(n / n_c): the share counts every completion of the group, the unmatched ones included
        out[keep] = cluster_rarity_log_reward(codes) + math.log(n / int(keep.sum()))
    return out


# ---------------------------------------------------------------------------------------------- objective
@dataclass
class DiversityLoss:
    """The loss of one generation batch and its parts (scalars; ``loss`` is in the autograd graph)."""

    loss: torch.Tensor
    concept: torch.Tensor
    open_block: torch.Tensor
    tb: torch.Tensor | None = None
    concept_shares: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    cluster_entropy: float | None = None
    unclustered: set[tuple[int, int]] = field(default_factory=set)


def diversity_objective(
    token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    table: torch.Tensor,
    groups: torch.Tensor,
    concept_sizes: Sequence[int],
    *,
    n_clusters: int,
    loss_type: str = "kl",
    w_c: float = 0.5,
    w_o: float = 0.5,
    uniform_over: str = "all",
    open_block_reduction: str = "sum",
    log_z: torch.Tensor | None = None,
    log_rewards: torch.Tensor | None = None,
) -> DiversityLoss:
    """The loss of a generation batch (see the module docstring).

    Args:
        token_logps: ``(B, T)`` per-token log-probs of the completions.
        completion_mask: ``(B, T)`` 1 on completion tokens (the TB sequence log-prob is the masked sum).
        table: ``(B, M, 6)`` from :func:`block_table`, cluster column filled.
        groups: ``(B,)`` prompt index of each completion (indexes ``log_z``).
        concept_sizes: the number of options of each concept.
        n_clusters: K.
        loss_type: ``"kl"`` or ``"tb"`` (then ``log_z`` ``(G,)`` and ``log_rewards`` ``(B,)`` are required).

    Returns:
        :class:`DiversityLoss`: ``loss`` and its parts, the concept distribution ``P̂`` per ``(group, concept)``
        (detached), the mean cluster-mass entropy ``−Σ_k P̂_k log P̂_k`` over the clustered (group, concept, option)
        triples, and the ``(concept, option)`` pairs whose following blocks had no clusters (their loss is 0).
    """
    if token_logps.dim() != 2 or completion_mask.shape != token_logps.shape:
        raise ValueError(
            f"token_logps {tuple(token_logps.shape)} and completion_mask {tuple(completion_mask.shape)} must be the "
            "same (B, T)"
        )
    if table.dim() != 3 or table.shape[0] != token_logps.shape[0] or table.shape[2] != len(BLOCK_COLUMNS):
        raise ValueError(f"table must be (B, M, {len(BLOCK_COLUMNS)}) with B = {token_logps.shape[0]}")
    if groups.shape != (token_logps.shape[0],):
        raise ValueError(f"groups must be ({token_logps.shape[0]},), got {tuple(groups.shape)}")
    zero = token_logps.sum() * 0.0
    concept_terms, open_terms = [], []
    shares: dict[tuple[int, int], torch.Tensor] = {}
    entropies: list[float] = []
    unclustered: set[tuple[int, int]] = set()
    flat = table.reshape(-1, table.shape[2])
    row_of = torch.arange(table.shape[0], device=table.device).repeat_interleave(table.shape[1])
    for g in torch.unique(groups).tolist():
        in_group = groups[row_of] == g
        for c, n_options in enumerate(concept_sizes):
            is_c = in_group & (flat[:, _C] == c)
            cb = flat[is_c & (flat[:, _R] == ROLE_CONCEPT)]
            if cb.shape[0] == 0:
                continue
            rows = row_of[is_c & (flat[:, _R] == ROLE_CONCEPT)]
            lp = block_logps(token_logps, list(zip(rows.tolist(), cb[:, _S].tolist(), cb[:, _E].tolist())))
            concept_terms.append(concept_loss(lp, cb[:, _O], n_options, uniform_over))
            p_hat = concept_distribution(lp.detach(), cb[:, _O], n_options)
            shares[(g, c)] = p_hat
            per_option = []
            for o in range(n_options):
                sel = is_c & (flat[:, _R] == ROLE_FOLLOWING) & (flat[:, _O] == o)
                fb = flat[sel]
                if fb.shape[0] == 0:
                    per_option.append(zero)
                    continue
                if (fb[:, _K] < 0).any():
                    unclustered.add((c, o))
                    per_option.append(zero)
                    continue
                spans = list(zip(row_of[sel].tolist(), fb[:, _S].tolist(), fb[:, _E].tolist()))
                mean_lp = block_logps(token_logps, spans, normalize=True)
                per_option.append(open_block_loss(mean_lp, fb[:, _K], n_clusters))
                entropies.append(_cluster_entropy(mean_lp.detach(), fb[:, _K]))
            open_terms.append(
                reduce_open_block_losses(torch.stack(per_option), open_block_reduction, p_hat.to(zero.dtype))
            )
    l_c = torch.stack(concept_terms).mean() if concept_terms else zero
    l_o = torch.stack(open_terms).mean() if open_terms else zero
    tb = None
    if loss_type == "tb":
        if log_z is None or log_rewards is None:
            raise ConfigError("loss_type='tb' needs log_z and log_rewards")
        seq = (token_logps * completion_mask).sum(dim=1)
        tb = _grouped_tb(log_z, seq, log_rewards, groups)
        loss = tb
    elif loss_type == "kl":
        loss = w_c * l_c + w_o * l_o
    else:
        raise ConfigError(f"loss_type must be 'kl' or 'tb', got {loss_type!r}")
    entropy = float(sum(entropies) / len(entropies)) if entropies else None
    return DiversityLoss(loss, l_c, l_o, tb, shares, entropy, unclustered)


def _grouped_tb(log_z: torch.Tensor, seq: torch.Tensor, log_rewards: torch.Tensor, groups: torch.Tensor):
    """``mean_i (log Z_{g(i)} + Σ_t log p_t − log R_i)²`` (:func:`trajectory_balance_loss` per group, weighted
    by the group's size so that the mean runs over every completion)."""
    total = seq.sum() * 0.0
    for g in torch.unique(groups).tolist():
        members = groups == g
        total = total + trajectory_balance_loss(log_z[g], seq[members], log_rewards[members]) * members.sum()
    return total / max(1, seq.shape[0])


def _cluster_entropy(mean_logps: torch.Tensor, labels: torch.Tensor) -> float:
    observed = torch.unique(labels)
    log_m = torch.stack([torch.logsumexp(mean_logps[labels == k].double(), 0) for k in observed])
    log_p = log_m - torch.logsumexp(log_m, 0)
    return float(-(log_p.exp() * log_p).sum())


def objective_weights(
    token_logps: torch.Tensor, log_z: torch.Tensor | None, build_loss
) -> tuple[DiversityLoss, torch.Tensor, torch.Tensor | None]:
    """``(result, W, ∂L/∂log Z)`` with ``W = ∂L/∂ log p`` of ``result = build_loss(logps_leaf, log_z_leaf)``.

    ``token_logps`` and ``log_z`` are detached into leaves, so the returned gradients are those of the loss as a
    function of the log-probs (no model parameter is involved). ``W`` is 0 wherever a token enters no term.
    """
    leaf = token_logps.detach().float().requires_grad_(True)
    z_leaf = log_z.detach().float().requires_grad_(True) if log_z is not None else None
    result = build_loss(leaf, z_leaf)
    if result.loss.requires_grad:
        inputs = [leaf] + ([z_leaf] if z_leaf is not None else [])
        grads = torch.autograd.grad(result.loss, inputs, allow_unused=True)
        w = grads[0] if grads[0] is not None else torch.zeros_like(leaf)
        gz = (grads[1] if grads[1] is not None else torch.zeros_like(z_leaf)) if z_leaf is not None else None
    else:
        w = torch.zeros_like(leaf)
        gz = torch.zeros_like(z_leaf) if z_leaf is not None else None
    return result, w.detach(), gz


# ----------------------------------------------------------------------------------------- token log-probs
def top_p_renormalized_logps(logits: torch.Tensor, token_ids: torch.Tensor, top_p: float, temperature: float):
    """``(log p_t − log Σ_{v ∈ N_t} p_v, log p_t)``: the sampled tokens' log-probs under the top-p distribution
    (``renormalize_top_p=True``) and under the temperature-scaled softmax.

    ``p = softmax(logits / temperature)``; the nucleus ``N_t`` is transformers' ``TopPLogitsWarper``'s: sort
    ascending, drop the tokens whose cumulative probability is ``≤ 1 − top_p``, always keep the most likely one.
    ``logits`` ``(B, T, V)``, ``token_ids`` ``(B, T)``; both outputs ``(B, T)`` float32, differentiable.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    chosen = logp.gather(-1, token_ids.unsqueeze(-1)).squeeze(-1)
    if top_p >= 1.0:
        return chosen, chosen
    sorted_logp, _ = torch.sort(logp, dim=-1)  # ascending
    cumulative = sorted_logp.exp().cumsum(dim=-1)
    removed = cumulative <= (1.0 - top_p)
    removed[..., -1] = False
    kept_mass = torch.logsumexp(sorted_logp.masked_fill(removed, -math.inf), dim=-1)
    return chosen - kept_mass, chosen


def k2_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``(k2, k3)`` with ``d = log p_θ − log p_ref`` at the sampled tokens: ``k2 = d²/2`` (its gradient
    ``d ∇ log p_θ`` has expectation ``∇_θ KL(p_θ ‖ p_ref)`` under the policy's sampling: the loss) and
    ``k3 = e^{−d} + d − 1`` (an unbiased, non-negative estimate of the KL's value: the metric)."""
    d = logps - ref_logps
    return 0.5 * d.pow(2), torch.exp(-d.detach()) + d.detach() - 1.0


def stop_string_cut(token_ids: Sequence[int], decode, stop_strings: Sequence[str]) -> int:
    """The number of tokens to keep: up to and including the first token at which the decoded prefix contains a
    stop string (all tokens when none does). ``decode(ids) -> str``."""
    if not stop_strings or not token_ids:
        return len(token_ids)
    text = decode(list(token_ids))
    if not any(s in text for s in stop_strings):
        return len(token_ids)
    lo, hi = 1, len(token_ids)  # smallest k with a stop string in decode(ids[:k]): the property is monotone in k
    while lo < hi:
        mid = (lo + hi) // 2
        if any(s in decode(list(token_ids[:mid])) for s in stop_strings):
            hi = mid
        else:
            lo = mid + 1
    return lo
