"""PyTorch Geometric counterparts of perturbjax's HeteroGAT and RGCN stacks, for benchmarks/run.py.

Both models take the same inputs as the perturbjax side: node states `x` float32 [N, in] in the
flat numbering (node types in sorted order, each type a contiguous block) and return [N, out].

* `HeteroGATStack`: per layer, `HeteroConv({edge type: GATConv}, aggr="sum")` plus one
  `Linear(in, out)` root term applied to every node, which is perturbjax's `HeteroGAT`:
  GATConv(in, out // heads, heads, concat=True, add_self_loops=False, bias=False,
  negative_slope=0.2) with an int `in_channels` builds one `lin` that projects both the source and
  the target side (also for a (x_src, x_dst) pair), as perturbjax's `kernel[r]` does; node types
  that no edge type points to get a zero aggregate (HeteroConv leaves them out of its output).
* `RGCNStack`: per layer, `RGCNConv(in, out, num_relations, aggr="mean", root_weight=True,
  bias=True)` on the homogeneous (flattened) graph with `edge_type`; perturbjax's `RGCN`
  computes the same per-relation mean plus `root(h) + bias`.

Between layers both stacks apply the exact (erf) GELU, as run.py's perturbjax model does.
`load_perturbjax_params` copies a perturbjax parameter set (flat "layers/i/..." names, see
run.py's `flat_params`) into a stack so the two libraries compute the same function.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch_geometric.nn import GATConv, HeteroConv, RGCNConv


class HeteroGATStack(nn.Module):
    """`layers` x (HeteroConv of GATConv, summed over edge types, + shared root Linear).

    Args:
      node_types: node type names in the flat numbering's (sorted) order.
      edge_types: (source, relation, target) in relation-id order (perturbjax's sorted order).
      in_dim, hidden: input width and the width of every layer's output.
      heads: attention heads (hidden = heads * head width).
      layers: number of layers.
    """

    def __init__(self, node_types: Sequence[str], edge_types: Sequence[tuple[str, str, str]],
                 in_dim: int, hidden: int, heads: int, layers: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
        self.node_types = list(node_types)
        self.type_key = {t: f"t{i}" for i, t in enumerate(self.node_types)}
        self.edge_keys = [(self.type_key[s], f"r{i}", self.type_key[d])
                          for i, (s, _, d) in enumerate(edge_types)]
        self.hidden = hidden
        self.convs = nn.ModuleList()
        self.roots = nn.ModuleList()
        for layer in range(layers):
            width = in_dim if layer == 0 else hidden
            self.convs.append(HeteroConv({
                k: GATConv(width, hidden // heads, heads=heads, concat=True, negative_slope=0.2,
                           add_self_loops=False, bias=False)
                for k in self.edge_keys}, aggr="sum"))
            self.roots.append(nn.Linear(width, hidden))

    def edge_index_dict(self, senders_local: Sequence[np.ndarray],
                        receivers_local: Sequence[np.ndarray]) -> dict:
        """{edge key: LongTensor [2, E_r]} from per-relation within-type sender/receiver ids."""
        return {k: torch.from_numpy(np.stack([np.asarray(s, np.int64), np.asarray(r, np.int64)]))
                for k, s, r in zip(self.edge_keys, senders_local, receivers_local)}

    def forward(self, x: torch.Tensor, edge_index_dict: Mapping, type_bounds: Sequence[int]
                ) -> torch.Tensor:
        """x [N, in] with node type i at rows type_bounds[i]:type_bounds[i+1]."""
        h = x
        for layer, (conv, root) in enumerate(zip(self.convs, self.roots)):
            x_dict = {self.type_key[t]: h[type_bounds[i]:type_bounds[i + 1]]
                      for i, t in enumerate(self.node_types)}
            out = conv(x_dict, edge_index_dict)
            agg = torch.cat([
                out[self.type_key[t]] if self.type_key[t] in out
                else h.new_zeros(type_bounds[i + 1] - type_bounds[i], self.hidden)
                for i, t in enumerate(self.node_types)])
            h = agg + root(h)
            if layer < len(self.convs) - 1:
                h = F.gelu(h, approximate="none")
        return h

    @torch.no_grad()
    def load_perturbjax_params(self, flat: Mapping[str, np.ndarray]) -> None:
        for layer, (conv, root) in enumerate(zip(self.convs, self.roots)):
            p = f"layers/{layer}/"
            kernel, att_src, att_dst = flat[p + "kernel"], flat[p + "att_src"], flat[p + "att_dst"]
            for r, k in enumerate(self.edge_keys):
                gat = conv.convs[k]
                gat.lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel[r].T)))
                gat.att_src.copy_(torch.from_numpy(att_src[r][None]))
                gat.att_dst.copy_(torch.from_numpy(att_dst[r][None]))
            root.weight.copy_(torch.from_numpy(np.ascontiguousarray(flat[p + "root/kernel"].T)))
            root.bias.copy_(torch.from_numpy(flat[p + "root/bias"]))


class RGCNStack(nn.Module):
    """`layers` x RGCNConv(aggr="mean", root_weight=True, bias=True) on the flattened graph."""

    def __init__(self, num_relations: int, in_dim: int, hidden: int, layers: int):
        super().__init__()
        self.convs = nn.ModuleList([
            RGCNConv(in_dim if layer == 0 else hidden, hidden, num_relations, aggr="mean",
                     root_weight=True, bias=True)
            for layer in range(layers)])

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor, edge_type: torch.Tensor
                ) -> torch.Tensor:
        h = x
        for layer, conv in enumerate(self.convs):
            h = conv(h, edge_index, edge_type)
            if layer < len(self.convs) - 1:
                h = F.gelu(h, approximate="none")
        return h

    @torch.no_grad()
    def load_perturbjax_params(self, flat: Mapping[str, np.ndarray]) -> None:
        for layer, conv in enumerate(self.convs):
            p = f"layers/{layer}/"
            if p + "coeff" in flat:
                raise ValueError("basis-decomposed RGCN: map kernel -> weight, coeff -> comp")
            conv.weight.copy_(torch.from_numpy(flat[p + "kernel"]))  # both [R, in, out]
            conv.root.copy_(torch.from_numpy(flat[p + "root/kernel"]))  # both [in, out]
            conv.bias.copy_(torch.from_numpy(flat[p + "root/bias"]))
