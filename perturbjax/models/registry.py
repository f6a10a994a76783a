"""Every model a perturbation run can name (`config.model.name`), in one table.

Two tables, the second built from the first:

* `LAYERS`: the heterogeneous message-passing layers, ``name -> Layer``: a constructor
  ``build(schema, dim, *, rngs, **options) -> nnx.Module`` (a layer mapping ``[N, ..., dim]``
  node values to ``[N, ..., dim]`` over a `Topology`) and the `model.*` config fields it reads
  (its ``options``), with their defaults. Each names a `PerturbationModel` whose encoder stacks
  that layer. Adding a layer means adding its entry here (see docs/adding_a_layer.md).
* `MODELS`: every name `model.name` accepts, ``name -> Model``: its family, its constructor and
  the config fields it reads. Families: ``"encoder"`` (a `PerturbationModel`, one per layer),
  ``"support"`` (trained, reads the training drugs' signatures: relational_sgc), ``"host"``
  (closed-form graph models fitted on the host: kg_ridge) and ``"baseline"`` (fitted on the
  host, reading drug targets and features only).

The task's `model` config section is the union of the fields (`model_fields`), so a field and
its default are written once, here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

from flax import nnx

from perturbjax.graph.schema import GraphSchema
from perturbjax.models.baselines import BASELINES, make_baseline
from perturbjax.models.graph_ridge import GraphRidge
from perturbjax.models.layers import HGT, RGCN, HeteroGAT
from perturbjax.models.perturbation import DECODERS, PerturbationModel
from perturbjax.models.relational_sgc import RelationalSGC
from perturbjax.training.settings import at_least


def _number_in(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, (int, float)) and low <= v < high


def _one_of(values: tuple) -> Callable[[Any], bool]:
    return lambda v: v in values


@dataclasses.dataclass(frozen=True)
class Field:
    """A `model.*` config field: its default, the test a value must pass and what it expects.

    Attributes:
      default: the value `base_config` gives it.
      check: True for values a run can use.
      expected: what `check` accepts, for the error message.
      doc: what it means.
    """

    default: Any
    check: Callable[[Any], bool] = lambda v: True
    expected: str = "any value"
    doc: str = ""


def _positive(default: int, doc: str) -> Field:
    return Field(default, at_least(1), "an integer >= 1", doc)


def _non_negative(default: int, doc: str) -> Field:
    return Field(default, at_least(0), "an integer >= 0", doc)


@dataclasses.dataclass(frozen=True)
class Layer:
    """A heterogeneous message-passing layer.

    Attributes:
      build: ``build(schema, dim, *, rngs, **options)`` -> a module ``(h [N, ..., dim],
        topology) -> [N, ..., dim]``; ``options`` are the config fields in `fields`.
      fields: ``model.<name>`` fields the layer reads, with their defaults.
    """

    build: Callable[..., nnx.Module]
    fields: Mapping[str, Field] = dataclasses.field(default_factory=dict)


HEADS = _positive(4, "attention heads (hetero_gat, hgt)")

LAYERS: dict[str, Layer] = {
    "hetero_gat": Layer(
        lambda schema, dim, *, rngs, heads: HeteroGAT(
            dim, dim, len(schema.edge_types), num_heads=heads, rngs=rngs),
        {"heads": HEADS}),
    "rgcn": Layer(
        lambda schema, dim, *, rngs, bases: RGCN(
            dim, dim, len(schema.edge_types), num_bases=bases or None, rngs=rngs),
        {"bases": _non_negative(0, "R-GCN basis count; 0 = one weight matrix per relation")}),
    "hgt": Layer(
        lambda schema, dim, *, rngs, heads: HGT(
            dim, dim, len(schema.node_types), len(schema.edge_types), num_heads=heads,
            rngs=rngs),
        {"heads": HEADS}),
}


def lookup(table: Mapping[str, Any], name: str, what: str) -> Any:
    """``table[name]``, or a one-line ValueError listing the registered names."""
    if name not in table:
        raise ValueError(f"unknown {what} {name!r}; expected one of {tuple(table)}")
    return table[name]


def layer_factory(name: str, config: Mapping[str, Any] | None = None
                  ) -> Callable[[GraphSchema, int, nnx.Rngs], nnx.Module]:
    """``make(schema, dim, rngs)`` building layer `name`.

    Args:
      name: a key of `LAYERS`.
      config: where the layer's fields are read (the `model` config section, or any mapping);
        a field it lacks takes its default, keys that are not the layer's fields are ignored.

    Raises:
      ValueError: `name` is not in `LAYERS` (listing the registered layers).
    """
    layer = lookup(LAYERS, name, "layer")
    config = config or {}
    options = {k: config[k] if k in config else f.default for k, f in layer.fields.items()}
    return lambda schema, dim, rngs: layer.build(schema, dim, rngs=rngs, **options)


# ---- every model a run can name ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class ModelInputs:
    """What a trained model is built from besides its config: the task's graph and data.

    Attributes:
      schema: the (ablated) graph's schema.
      num_readout: G, the readout genes.
      num_nodes: nodes of the full graph (the range of node ids learned vectors index).
      drug_type, gene_type: the drug and gene node types.
      num_covariates: width of a condition's covariates (dose, time).
      several_conditions_per_drug: whether a training drug has several conditions.
    """

    schema: GraphSchema
    num_readout: int
    num_nodes: int
    drug_type: str
    gene_type: str
    num_covariates: int
    several_conditions_per_drug: bool


# The fields of `PerturbationModel` (every encoder) and of relational_sgc, in one place.
FIELDS: dict[str, Field] = {
    "hidden": _positive(64, "node embedding width"),
    "num_layers": _positive(2, "message-passing layers (relational_sgc: hops)"),
    "dropout": Field(0.1, _number_in(0, 1), "in [0, 1)"),
    "channels": _positive(8, "width of the drug signal propagated through the graph"),
    "propagation_steps": _non_negative(
        3, "hops the drug signal travels (drug -> target -> partners -> ...); 0 = off"),
    "readout_embedding": Field(False, doc="a free vector per readout gene"),
    "embedded_node_types": Field(
        [], doc="node types given a learned input vector per node (featureless types whose "
                "nodes are in every split, e.g. genes); never the held-out type (drugs in a "
                "cold-drug split)"),
    "decoder": Field(
        "bilinear", _one_of(DECODERS), f"one of {DECODERS}",
        "'bilinear' (drug x gene and cell x gene terms) or 'kernel_ridge': kernel ridge on the "
        "training drugs' signatures in a learned kernel of the drug embeddings (one condition "
        "per drug, full-graph mode; models/kernel_ridge.py)"),
    "kernel_dim": _positive(64, "width of the kernel-ridge decoder's drug keys"),
    "warm_start": Field(
        "", _one_of(("", "kg_ridge")), "'' or 'kg_ridge'",
        "relational_sgc's initial kernel: 'kg_ridge' (the one kg_ridge picks on validation) or "
        "'' (all weights equal, 3 hops)"),
    "standardise_over": Field(
        "support", _one_of(("support", "all_drugs")), "'support' or 'all_drugs'",
        "relational_sgc's node-value statistics: over the 'support' (training drugs, as "
        "kg_ridge) or 'all_drugs' (also the held-out drugs' graph neighbourhoods; never their "
        "signatures)"),
    "target_readout": Field(
        False, doc="relational_sgc: a second readout, kernel ridge on the drugs' direct targets "
                    "(models/relational_sgc.py)"),
}
ENCODER_FIELDS = ("hidden", "num_layers", "dropout", "channels", "propagation_steps",
                  "readout_embedding", "embedded_node_types", "decoder", "kernel_dim")
SUPPORT_FIELDS = ("num_layers", "target_readout", "warm_start", "standardise_over")


@dataclasses.dataclass(frozen=True)
class Model:
    """A model `model.name` can name.

    Attributes:
      family: "encoder", "support", "host" or "baseline" (see the module docstring).
      build: "encoder"/"support": ``build(inputs: ModelInputs, model_config, rngs)``;
        "host": ``build()``; "baseline": ``build(seed)``.
      fields: the `FIELDS` it reads, with a layer's own fields for an encoder.
    """

    family: str
    build: Callable[..., Any]
    fields: Mapping[str, Field] = dataclasses.field(default_factory=dict)

    @property
    def trained(self) -> bool:
        """Trained by the loop (else fitted on the host in closed form)."""
        return self.family in ("encoder", "support")


def _build_encoder(name: str, inputs: ModelInputs, m, rngs: nnx.Rngs) -> PerturbationModel:
    return PerturbationModel(inputs.schema, inputs.num_readout, layer=layer_factory(name, m),
                             hidden=m.hidden, num_layers=m.num_layers, dropout=m.dropout,
                             channels=m.channels, steps=m.propagation_steps,
                             readout_embedding=m.readout_embedding,
                             embedded_types=tuple(m.embedded_node_types),
                             decoder=m.decoder, kernel_dim=m.kernel_dim,
                             # node ids (positions in the full graph) index the table
                             num_nodes=inputs.num_nodes, rngs=rngs)


def _build_relational_sgc(inputs: ModelInputs, m, rngs: nnx.Rngs) -> RelationalSGC:
    targets = (inputs.drug_type, inputs.gene_type) if m.target_readout else None
    return RelationalSGC(inputs.schema, hops=m.num_layers, rngs=rngs, targets=targets,
                         conditions=inputs.several_conditions_per_drug,
                         num_covariates=inputs.num_covariates)


def _fields(*names: str) -> dict[str, Field]:
    return {k: FIELDS[k] for k in names}


def _encoder(name: str, layer: Layer) -> Model:
    return Model("encoder", functools.partial(_build_encoder, name),
                 _fields(*ENCODER_FIELDS) | dict(layer.fields))


MODELS: dict[str, Model] = {
    **{name: _encoder(name, layer) for name, layer in LAYERS.items()},
    "relational_sgc": Model("support", _build_relational_sgc, _fields(*SUPPORT_FIELDS)),
    GraphRidge.name: Model("host", GraphRidge),
    **{name: Model("baseline", functools.partial(make_baseline, name))
       for name in sorted(BASELINES)},
}


def register_layer(name: str, layer: Layer) -> None:
    """Adds a layer defined outside this module to `LAYERS`, and its encoder model to `MODELS`
    (the package's own layers are entries of `LAYERS` above). Registering the same layer again
    is a no-op, so a module that registers may be imported twice.

    Raises:
      ValueError: `name` already names a different model.
    """
    if name in MODELS and LAYERS.get(name) != layer:
        raise ValueError(f"model name {name!r} is taken; registered: {tuple(MODELS)}")
    LAYERS[name] = layer
    MODELS[name] = _encoder(name, layer)


def model_names(*families: str) -> tuple[str, ...]:
    """The registered names of `families` (all when none), in table order."""
    return tuple(k for k, m in MODELS.items() if not families or m.family in families)


def model_fields() -> dict[str, Field]:
    """Every `model.*` field some model reads (the union; a shared field has one definition).

    Raises:
      ValueError: two models define one field with different defaults.
    """
    out: dict[str, Field] = {}
    for name, model in MODELS.items():
        for key, f in model.fields.items():
            if key in out and out[key].default != f.default:
                raise ValueError(f"model {name!r} gives model.{key} the default {f.default!r}; "
                                 f"another model gives it {out[key].default!r}")
            out.setdefault(key, f)
    return out
