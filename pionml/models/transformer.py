"""A transformer on the cells of a cluster with pairwise interaction features (Particle
Transformer, Qu, Li, Qian, arXiv:2202.03772; weaver-core ``ParticleTransformer.py``).

Every cell is a token: the point-cloud features the GNN and PFN read (E / E_cluster, log E, eta
and phi relative to the centroid, rperp, cell size, layer one-hot; standardised by the loader,
pionml.data.normalise.CLOUD_FEATURES). Self-attention blocks (pre-LayerNorm, as ParT's particle
attention blocks) add to the attention scores of every head a bias made once per batch from
features of the pair of cells (ParT's interaction matrix U, shared by the blocks):

- the continuous pair features (:func:`pair_features`): ln dR, ln z = ln(min(E_i, E_j) /
  (E_i + E_j)), ln kT = ln(min(E_i, E_j) dR), |d eta|, |d phi|, |d rperp|, through a small
  pointwise MLP (pairs -> ``pair_hidden`` -> one value per head);
- the layer pair: a learned symmetric table (layer_i, layer_j) -> one value per head, read
  through the layer one-hots (same layer, adjacent layers, EM against hadronic, ...).

The loader gives standardised features, not the physical ones: eta, phi, rperp and log E enter
the pair features as (standardised value) x (a learned positive scale per coordinate, 1 at the
start). The standardisation's shift cancels in every difference and in ln z (a ratio); ln kT
keeps it as a constant, which the pair MLP's bias absorbs. Then class-attention pooling (CaiT,
Touvron et al. 2103.17239; ParT's class-token blocks): a learned class token attends to the
cells in ``class_blocks`` blocks; its final state is the body's output, followed by the shared
scalar branch and the task's heads.

The defaults make the tokens see the cells around them and the readout see every cell, which
the cap on the cells (below) otherwise drops, and attend among the 16 leading cells only (within
2x of the GNN's CPU time, and above it in accuracy at 100,000 clusters; docs/models.md):
``local`` = 3 GraphConv layers (mean over the kNN cell
graph, residual, the GNN's message passing; as the neighbour embedding in front of the
attention of the Point Cloud Transformer, Guo et al., arXiv:2012.09688) on the embedded cells
of the whole cluster before the cap, so that each kept token carries its neighbourhood, and
``pool``: the body's output also gets the mean, max and sum / 10 of those cell states over all
cells of the cluster (the GNN's readout), through a dense layer with the class token's state.
``local`` needs the kNN edges of the loader (data option ``knn_k``, 6 by default when
``local`` > 0). ``CELLS_ONLY`` gives back the first defaults: the tokens of the cells alone
(no local layers, no pool), two self-attention blocks, ParT's cap of 128 cells.

Variable numbers of cells: the clusters of a batch are padded to the largest and a key-padding
mask keeps every query from attending to padding (a cluster's output does not depend on the
batch it is in). The loader does not sort clusters by size, so in training and evaluation the
model buckets the clusters of a batch by size itself (``buckets`` groups of similar size, each
padded to its own largest; the same values as one padded block, less padding); an exported
graph pads once. Clusters with more than ``max_cells`` cells keep their ``max_cells``
highest-energy cells: counted over the training rows in the model card (``truncation``) and
logged, and counted again in every forward pass outside an export (``truncated``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from pionml.data.normalise import CLOUD_FEATURES
from pionml.errors import ConfigError
from pionml.models.base import (CLUSTER_VARIANTS, Body, ClusterModel, DataSpec, check_hyper,
                                mlp, register)
from pionml.models.pooling import cluster_max, cluster_mean, cluster_sum

logger = logging.getLogger(__name__)

#: The continuous pair features, in the order of :func:`pair_features`.
PAIR_FEATURES = ("ln_dR", "ln_z", "ln_kT", "abs_deta", "abs_dphi", "abs_drperp")
#: Smallest dR in ln dR and ln kT (cells with the same centre in two layers have dR = 0).
DR_FLOOR = 1e-3
#: The first defaults (2026-12-03 to -05): the tokens of the cells alone (no local layers, no
#: readout of every cell), two self-attention blocks, ParT's cap of 128 cells.
CELLS_ONLY = {"blocks": 2, "max_cells": 128, "buckets": 8, "local": 0, "pool": False}
#: The score of a padded key: exp of it is exactly 0 in float32 and bfloat16.
MASKED = -1e9
#: Columns of the point-cloud features the pair features read.
_DETA, _DPHI = CLOUD_FEATURES.index("deta"), CLOUD_FEATURES.index("dphi")
_RPERP, _LOGE = CLOUD_FEATURES.index("rperp"), CLOUD_FEATURES.index("log_E")
#: The cap orders cells by E / E_EM (linear in E, so cells below the 1 MeV floor of log E keep
#: their order; the standardisation keeps it too).
_EFRAC = CLOUD_FEATURES.index("E_frac")


def pair_features(deta: torch.Tensor, dphi: torch.Tensor, rperp: torch.Tensor,
                  log_e: torch.Tensor) -> torch.Tensor:
    """(6, B, N, N) features of every pair of cells (i, j), feature first, from (B, N) per-cell
    eta and phi (relative to the cluster), rperp and ln E; in :data:`PAIR_FEATURES` order:

    ln dR with dR = sqrt(d eta^2 + d phi^2 + DR_FLOOR^2) (finite, and differentiable at 0);
    ln z = ln(min(E_i, E_j) / (E_i + E_j)) = -softplus(|ln E_i - ln E_j|) (stable, and exported
    to ONNX as one Softplus); ln kT = min(ln E_i, ln E_j) + ln dR; |d eta|, |d phi|, |d rperp|.
    All symmetric in (i, j). dphi is relative to the cluster centroid and already wrapped, so
    differences within a cluster need no wrap. Feature first, so that the pair MLP is one
    matrix product over all pairs (:meth:`Transformer.pair_bias`)."""
    def diff(a):
        return a.unsqueeze(2) - a.unsqueeze(1)

    de, dp, dr_perp = diff(deta), diff(dphi), diff(rperp)
    ln_dr = 0.5 * torch.log(de * de + dp * dp + DR_FLOOR ** 2)
    ln_z = -nn.functional.softplus(diff(log_e).abs())
    lmin = torch.minimum(log_e.unsqueeze(2), log_e.unsqueeze(1))
    return torch.stack([ln_dr, ln_z, lmin + ln_dr, de.abs(), dp.abs(), dr_perp.abs()])


def pad_cells(x: torch.Tensor, cell_cluster: torch.Tensor, rows: torch.Tensor):
    """Flat cells -> ((B, N, F) padded, (B, N) valid, (B,) counts), N = the most cells of a
    cluster; ``cell_cluster`` (n,) non-decreasing (cells of a cluster contiguous), B =
    len(``rows``). Only ONNX-exportable operations, with N and B taken from tensors (dynamic in
    an exported graph)."""
    ones = torch.ones_like(cell_cluster)
    counts = torch.zeros_like(rows, dtype=cell_cluster.dtype).scatter_add(0, cell_cluster, ones)
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.cumsum(ones, 0) - 1 - starts[cell_cluster]  # index of each cell in its cluster
    width = torch.arange(counts.max(), device=counts.device)
    valid = width.unsqueeze(0) < counts.unsqueeze(1)  # (B, N)
    index = cell_cluster * valid.shape[1] + pos
    flat = torch.zeros_like(valid.reshape(-1, 1), dtype=x.dtype).expand(-1, x.shape[1])
    flat = flat.scatter(0, index.unsqueeze(1).expand(-1, x.shape[1]), x)
    return flat.reshape(valid.shape[0], valid.shape[1], x.shape[1]), valid, counts


def keep_highest(padded: torch.Tensor, valid: torch.Tensor, energy: torch.Tensor, cap: int):
    """The cells of each cluster in order of decreasing ``energy`` (B, N), at most ``cap`` of
    them: ((B, min(N, cap), F), (B, min(N, cap)) valid). Padding sorts last."""
    key = torch.where(valid, energy, torch.full_like(energy, -math.inf))
    order = torch.argsort(key, dim=1, descending=True)[:, :cap]
    kept = padded.gather(1, order.unsqueeze(2).expand(-1, -1, padded.shape[2]))
    return kept, valid.gather(1, order)


class Attention(nn.Module):
    """Multi-head attention of queries ``q`` (B, Nq, D) on keys and values ``kv`` (B, Nk, D),
    with an additive bias (H x B, Nq, Nk), head first, that holds :data:`MASKED` (or less) on
    padded keys (the key-padding mask, made once per batch). Heads first in one batched
    product: the bias enters the scores in the product itself (``baddbmm``), the 1 / sqrt(d)
    is applied to the queries (B x Nq x D values, not B x H x Nq x Nk). Written out (no fused
    kernel: scaled_dot_product_attention with a float mask was slower on the CPU, and the
    export carries this unchanged); no dropout on the attention weights (a (B, H, N, N) random
    mask was an eighth of a CPU step), dropout on the block outputs instead."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = 1 / math.sqrt(dim // heads)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (H x B, N, D / H)
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, -1).permute(2, 0, 1, 3).reshape(self.heads * b, n, -1)

    def forward(self, q, kv, bias, extra=None):
        """``extra``: ((H x B, Nq, E), (H x B, Nk, E)) more query and key columns, whose
        product is added to the scores in the same batched product (a low-rank bias)."""
        b, nq = q.shape[0], q.shape[1]
        k, v = self.kv(kv).chunk(2, dim=-1)
        q, k = self._split(self.q(q) * self.scale), self._split(k)
        if extra is not None:
            q = torch.cat([q, extra[0].to(q.dtype)], dim=-1)
            k = torch.cat([k, extra[1].to(k.dtype)], dim=-1)
        scores = torch.baddbmm(bias, q, k.transpose(1, 2))
        weights = torch.softmax(scores.float(), dim=-1).to(v.dtype)
        out = torch.bmm(weights, self._split(v))  # (H x B, Nq, D / H)
        out = out.reshape(self.heads, b, nq, -1).permute(1, 2, 0, 3)
        return self.proj(out.reshape(b, nq, -1))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (attention, then a GELU feed-forward, both residual).
    With ``cls`` (B, 1, D) it is a class-attention block: the class token attends to itself
    and the cells, and only the class token is updated."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, bias, cls=None, extra=None):
        if cls is None:
            h = self.norm1(x)
            x = x + self.drop(self.attn(h, h, bias, extra))
        else:
            u = self.norm1(torch.cat([cls, x], dim=1))
            x = cls + self.drop(self.attn(u[:, :1], u, bias))
        return x + self.drop(self.ffn(self.norm2(x)))


@register
class Transformer(ClusterModel):
    """Particle Transformer on the cells (module docstring): ``embed`` wide tokens,
    ``num_heads`` heads, ``blocks`` self-attention blocks with the pair bias, ``class_blocks``
    class-attention blocks; ``ffn`` the feed-forward width in units of ``embed``;
    ``pair_hidden`` the width of the pair MLP; ``max_cells`` the cap on cells per cluster
    (highest energy kept); ``buckets`` the size groups of a batch in training and evaluation
    (1 = pad the batch once); ``local`` GraphConv layers on the kNN graph of all cells before
    the cap; ``pool`` the readout of all cells beside the class token (module docstring)."""

    name = "transformer"
    inputs = ("cloud",)
    #: the first defaults (:data:`CELLS_ONLY`) are built, trained and exported by the
    #: registry-driven tests beside the defaults
    supports = {variant: Body(alternatives={"cells_only": CELLS_ONLY})
                for variant in CLUSTER_VARIANTS} | {"joint": Body()}
    #: the local embedding, the readout of every cell and attention on the 16 leading cells
    #: (docs/models.md, "The cap's cells back, through a local embedding")
    defaults = {"embed": 32, "num_heads": 4, "blocks": 1, "class_blocks": 1, "ffn": 2,
                "pair_hidden": 8, "max_cells": 16, "buckets": 1, "dropout": 0.1, "local": 3,
                "pool": True}
    data_defaults = {"knn_k": 0}
    zero_ok = ("local",)
    #: neighbours per cell of the kNN graph that ``local`` > 0 reads (the GNN's default)
    LOCAL_KNN_K = 6
    train_defaults = {"epochs": 30, "batch_size": 256, "lr": 1e-3, "patience": 5}

    def build_body(self, spec: DataSpec, embed, num_heads, blocks, class_blocks, ffn, pair_hidden,
                   max_cells, buckets, dropout, local, pool) -> int:
        if embed % num_heads:
            raise ConfigError(f"model 'transformer': embed={embed} must be a multiple of "
                              f"num_heads={num_heads}")
        heads = num_heads
        n_layers = spec.n_cloud_features - len(CLOUD_FEATURES)
        if n_layers < 1:
            raise ConfigError("model 'transformer': the point clouds carry no layer one-hot "
                              f"({spec.n_cloud_features} features)")
        self.n_heads, self.n_layers = heads, n_layers
        self.embed = nn.Sequential(nn.Linear(spec.n_cloud_features, embed), nn.GELU(),
                                   nn.Linear(embed, embed))
        if local:
            from torch_geometric.nn import GraphConv

            self.local = nn.ModuleList(GraphConv(embed, embed, aggr="mean")
                                       for _ in range(int(local)))
        else:
            self.local = None
        # ln of the scales of (eta, phi, rperp, ln E) in the pair features (standardised units)
        self.pair_log_scale = nn.Parameter(torch.zeros(4))
        self.pair_mlp = nn.Sequential(nn.Linear(len(PAIR_FEATURES), pair_hidden), nn.ReLU(),
                                      nn.Linear(pair_hidden, heads))
        self.layer_pair = nn.Parameter(torch.zeros(n_layers, n_layers, heads))
        self.blocks = nn.ModuleList(Block(embed, heads, ffn, dropout) for _ in range(blocks))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.class_blocks = nn.ModuleList(Block(embed, heads, ffn, dropout)
                                          for _ in range(class_blocks))
        self.norm = nn.LayerNorm(embed)
        #: cells and clusters cut by ``max_cells`` in forward passes (not in an export)
        self.truncated = {"clusters": 0, "cells": 0, "seen": 0}
        if pool:  # the class token's state and the mean, max and sum of all cells' states
            self.pool_post = mlp((4 * embed, 2 * embed), dropout)
            return 2 * embed
        return embed

    # ------------------------------------------------------------------------------------
    def pair_terms(self, x: torch.Tensor, valid: torch.Tensor):
        """The attention bias from padded cells ``x`` (B, N, F) with mask ``valid`` (B, N) in two
        parts, head first: the pair MLP on :func:`pair_features` as (H, B, N, N) (two matrix
        products over all B x N x N pairs at once, feature first), and the layer-pair table
        with the key mask as a product of rank L + 1, (H, B, N, L + 1) query columns (query
        one-hot x table, 1) times (B, N, L + 1) key columns (key one-hot, :data:`MASKED` on a
        padded key, else 0), which the attention adds to its query-key product
        (:meth:`Attention.forward`) instead of making it pair by pair."""
        s = torch.exp(self.pair_log_scale)
        feats = pair_features(x[..., _DETA] * s[0], x[..., _DPHI] * s[1], x[..., _RPERP] * s[2],
                              x[..., _LOGE] * s[3])
        hidden, out = self.pair_mlp[0], self.pair_mlp[2]
        h = torch.relu(torch.addmm(hidden.bias.unsqueeze(1), hidden.weight,
                                   feats.reshape(feats.shape[0], -1)))  # (pair_hidden, B N N)
        b, n = valid.shape
        mlp = torch.addmm(out.bias.unsqueeze(1), out.weight, h).reshape(self.n_heads, b, n, n)
        onehot = x[..., len(CLOUD_FEATURES):]  # (B, N, L)
        table = self.layer_pair + self.layer_pair.transpose(0, 1)  # symmetric (L, L, H)
        query = torch.matmul(onehot.unsqueeze(0), table.permute(2, 0, 1).unsqueeze(1))
        query = torch.cat([query, torch.ones_like(query[..., :1])], dim=-1)  # (H, B, N, L + 1)
        keep = valid.unsqueeze(-1).to(onehot.dtype)
        key = torch.cat([onehot * keep, (1 - keep) * MASKED], dim=-1)  # (B, N, L + 1)
        return mlp, query, key

    def pair_bias(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(H, B, N, N) attention bias, head first, made whole from :meth:`pair_terms`: the pair
        MLP plus the layer-pair table, and :data:`MASKED` added where the key (the last axis)
        is a padded cell (for tests and inspection; :meth:`encode` never makes it whole)."""
        mlp, query, key = self.pair_terms(x, valid)
        return mlp + torch.matmul(query, key.transpose(1, 2).unsqueeze(0))

    def encode(self, x: torch.Tensor, valid: torch.Tensor, h=None) -> torch.Tensor:
        """(B, D) class-token state of padded cells ``x`` (B, N, F) with mask ``valid``;
        ``h`` (B, N, D): the tokens, when they are made before the padding (``local``; else
        the embedding of ``x``)."""
        mlp, query, key = self.pair_terms(x, valid)
        b, n = valid.shape
        bias = mlp.reshape(-1, n, n)  # (H x B, N, N)
        extra = (query.reshape(-1, n, query.shape[-1]),
                 key.unsqueeze(0).expand(self.n_heads, -1, -1, -1).reshape(-1, n, key.shape[-1]))
        if h is None:
            h = self.embed(x)
        for block in self.blocks:
            h = block(h, bias, extra=extra)
        cls = self.cls_token.expand(b, -1, -1).to(h.dtype)
        # the class token attends to itself and the cells: (H x B, 1, 1 + N), padded keys masked
        keys = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)
        cls_bias = torch.zeros_like(keys, dtype=bias.dtype).masked_fill(~keys, MASKED)
        cls_bias = cls_bias.unsqueeze(0).expand(self.n_heads, -1, -1).reshape(-1, 1, n + 1)
        for block in self.class_blocks:
            cls = block(h, cls_bias, cls=cls)
        return self.norm(cls[:, 0])

    def body_forward(self, batch) -> torch.Tensor:
        g = batch.cloud
        cells, states, n_features = g.x, None, g.x.shape[1]
        if self.local is not None:
            exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
            if not exporting and g.edge_index.shape[1] == 0 and len(g.x) > len(batch.rows):
                raise ConfigError(f"model 'transformer': local={self.hyper['local']} reads the "
                                  "kNN cell graph, but the batch has no edges (data option "
                                  f"knn_k = 0; the family's default with local > 0 is "
                                  f"{self.LOCAL_KNN_K})")
        if self.local is not None or self.hyper["pool"]:  # the tokens made before the cap
            states = self.embed(g.x)
            for conv in self.local or ():
                states = states + nn.functional.gelu(conv(states, g.edge_index))
            cells = torch.cat([g.x, states], dim=1)  # padded and capped together
        out = self._encode_cells(cells, n_features, g.batch, batch.rows)
        if self.hyper["pool"]:
            out = self.pool_post(torch.cat([out, cluster_mean(states, g.batch, batch.rows),
                                            cluster_max(states, g.batch, batch.rows),
                                            cluster_sum(states, g.batch, batch.rows) / 10.0],
                                           dim=1))
        return out

    def _encode_cells(self, cells, n_features, cell_cluster, rows) -> torch.Tensor:
        """(B, D) class-token states of flat ``cells``: their ``n_features`` point-cloud
        features, then (``local``) their tokens; padded, capped, bucketed by size."""
        padded, valid, counts = pad_cells(cells, cell_cluster, rows)
        cap = int(self.hyper["max_cells"])
        padded, valid = keep_highest(padded, valid, padded[..., _EFRAC], cap)
        tokens = padded[..., n_features:] if padded.shape[2] > n_features else None
        padded = padded[..., :n_features]
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return self.encode(padded, valid, tokens)
        self._count_truncation(counts, cap)
        n_buckets = min(int(self.hyper["buckets"]), len(counts))
        if n_buckets <= 1:
            return self.encode(padded, valid, tokens)
        kept = counts.clamp(max=cap)
        order = torch.argsort(kept)
        out = None
        for idx in torch.tensor_split(order, n_buckets):
            n = int(kept[idx].max())
            part = self.encode(padded[idx, :n], valid[idx, :n],
                               None if tokens is None else tokens[idx, :n])
            if out is None:
                out = part.new_zeros((len(counts), part.shape[1]))
            out[idx] = part
        return out

    def _count_truncation(self, counts: torch.Tensor, cap: int) -> None:
        over = counts > cap
        n_over = int(over.sum())
        self.truncated["seen"] += len(counts)
        if n_over:
            cut = int((counts[over] - cap).sum())
            if not self.truncated["clusters"]:
                read = self.reads_cut_cells(self.hyper)
                (logger.info if read else logger.warning)(
                    "transformer: %d of %d clusters in a batch have more than max_cells=%d "
                    "cells; their %d lowest-energy cells are %s (counted in model.truncated)",
                    n_over, len(counts), cap, cut, _cut_cells_are(read))
            self.truncated["clusters"] += n_over
            self.truncated["cells"] += cut

    @classmethod
    def reads_cut_cells(cls, hyper: dict) -> bool:
        """Whether the cells beyond ``max_cells`` still reach the output (through ``local``
        layers or the ``pool`` readout) for ``hyper`` over the defaults."""
        merged = {**cls.defaults, **hyper}
        return bool(merged["local"]) or bool(merged["pool"])

    @classmethod
    def data_options(cls, variant: str, hyper: dict | None = None) -> dict:
        """The kNN edges (``knn_k`` :data:`LOCAL_KNN_K`) where ``hyper`` asks for ``local``
        layers, none otherwise."""
        options = super().data_options(variant, hyper)
        local = (hyper or {}).get("local", cls.defaults["local"])  # checked when built
        if isinstance(local, int) and not isinstance(local, bool) and local > 0:
            options["knn_k"] = cls.LOCAL_KNN_K
        return options

    @classmethod
    def hyper_for_data(cls, hyper: dict, dataset, rows) -> tuple[dict, dict]:
        """The hyper-parameters unchanged; the model card gets the truncation by ``max_cells``
        counted over the training rows (clusters cut, cells left out, the largest cluster)."""
        check_hyper(cls.name, cls.defaults, {k: v for k, v in hyper.items() if k in cls.defaults},
                    cls.zero_ok)
        cap = int(hyper.get("max_cells", cls.defaults["max_cells"]))
        counts = np.diff(dataset.offsets)[np.asarray(rows, dtype=np.int64)]
        over = counts > cap
        note = {"max_cells": cap, "clusters": int(over.sum()), "of_clusters": int(len(counts)),
                "cells_left_out": int((counts[over] - cap).sum()),
                "of_cells": int(counts.sum()), "largest_cluster": int(counts.max(initial=0))}
        if note["clusters"]:
            read = cls.reads_cut_cells(hyper)
            (logger.info if read else logger.warning)(
                "transformer: %d of %d training clusters have more than max_cells=%d cells; %d "
                "of %d cells (the lowest-energy ones) are %s", note["clusters"],
                note["of_clusters"], cap, note["cells_left_out"], note["of_cells"],
                _cut_cells_are(read))
        return hyper, {"truncation": note}


def _cut_cells_are(read: bool) -> str:
    """What happens to the cells beyond ``max_cells``, for the log."""
    return ("not tokens of the attention (the local layers and the readout of every cell read "
            "them)" if read else "left out")
