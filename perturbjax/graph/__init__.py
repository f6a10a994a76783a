"""Graphs and the message-passing seam.

A layer moves node values along edges only through `propagate` (weighted sums of messages over
a `Topology`), `edge_softmax` (attention normalised per receiver or per relation and receiver)
and the relation projections (`project_sources`, `project_targets`); the topology's backend
(sparse products for whole graphs, segment ops for padded batches) and its padding masks stay
behind it. docs/adding_a_layer.md writes a layer on it.

The names below are imported on first use, so host-side code that reads only
`perturbjax.graph.hetero` does not start JAX. `perturbjax.graph.propagate` is the function (its
module is imported as `from perturbjax.graph.propagate import ...`).
"""

import importlib
import sys
import types

_EXPORTS = {
    "EdgeSet": "hetero", "EdgeType": "hetero", "HeteroGraph": "hetero", "NodeSet": "hetero",
    "GraphSchema": "schema",
    "Layout": "topology", "Topology": "topology",
    "propagate": "propagate", "edge_softmax": "propagate", "project_sources": "propagate",
    "project_targets": "propagate", "relation_mean_weights": "propagate",
    "symmetric_norm_weights": "propagate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'perturbjax.graph' has no attribute {name!r}")
    return getattr(importlib.import_module(f"perturbjax.graph.{_EXPORTS[name]}"), name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keeps `propagate` the function: importing the submodule of the same name binds the module
    as the package's attribute, which this data descriptor takes in and ignores."""

    @property
    def propagate(self):
        return importlib.import_module("perturbjax.graph.propagate").propagate

    @propagate.setter
    def propagate(self, module):
        pass


sys.modules[__name__].__class__ = _Package
