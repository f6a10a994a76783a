"""perturbjax vs PyTorch Geometric: training-step time, memory, compilation, roofline, side by side.

    python benchmarks/run.py --quick                          # small cases, minutes on 2 cores
    python benchmarks/run.py --json benchmarks/results.json   # real graph + Hetionet..PrimeKG sizes
    python benchmarks/run.py --sampled --json out.json        # also the sampled-subgraph mode
    python benchmarks/report.py out.json --write docs/results/performance.md:performance

What is timed. One training step of a 2-layer model (width --hidden 64, exact GELU between the
layers, none after) on input states x float32 [N, 64] and a target [N, 64], both fixed random
(the same arrays in both libraries): forward, mean squared error, backward and an Adam update
(lr 1e-3; optax.adam for perturbjax, torch.optim.Adam for PyG). Models:
  * "gat": perturbjax.models.layers.HeteroGAT (4 heads) vs PyG HeteroConv({edge type:
    GATConv(add_self_loops=False, bias=False)}, aggr="sum") + one Linear root term on all nodes
    (benchmarks/pyg_models.py says why this is the same function);
  * "rgcn": perturbjax RGCN vs PyG RGCNConv(aggr="mean") on the flattened graph with edge_type.
perturbjax's step is one jax.jit(train_step, donate_argnums=(0, 1)) with the graph topology an
argument, timed to jax.block_until_ready; PyG's is the usual zero_grad / forward / backward /
step loop. Graphs: (a) the consensus task's graph (experiments/hetionet_lincs_consensus.py, built
by perturbjax.tasks.make_task from $PERTURBJAX_DATA_DIR, or ../shared/data when that is unset
and exists; skipped with a note when the files are missing), (b) synthetic heterogeneous graphs from Hetionet to PrimeKG
size (10 node types with PrimeKG's proportions, log-normal degree skew, relations joining random
type pairs). Modes: "full" (every step on the whole graph) and, with --sampled, "sampled" (each
step on a fresh 2-hop subgraph from perturbjax.graph.sampling.NeighbourSampler, fan-outs 8 and 4
per relation around --sampled-seeds seeds spread over the node types by size; the same
subgraphs in both libraries; loss over the seeds; sampling is excluded from the step time and
reported separately).

How. The parent process measures copy bandwidth, builds each graph once in a child process and
saves it to a temporary directory (deleted at the end; nothing is cached in the repository).
Each case then runs in two child processes, one per library, each importing only its library:
the perturbjax child first (it writes its initial parameters and its outputs on them), then the
PyG child, which loads those parameters (so both train the same function from the same
weights) and checks its outputs against perturbjax's (reported as `check`: max abs and max-norm
relative difference, ok when relative <= 1e-3; in sampled mode on the seeds of one subgraph).
After each child's warm-up (perturbjax: the first, compiling call and --warmup more steps; PyG:
one step and --warmup more; --quick: none beyond the first), the parent alternates
timed blocks of --steps steps between the two children, --reps blocks each, flipping the order
every round, so only one library runs at a time and drift on the machine hits both alike
(--sequential instead times perturbjax to the end and ends its process before PyG starts, for
cases whose two processes do not fit in memory together). Step times are medians over all timed
steps; the load average before and after each case is recorded, since other jobs on the
machine skew the times (in a development run on 2 busy cores, torch's OpenMP loops ran up to
100x slower, XLA's thread pool far less). Both children use the same threads: XLA's CPU client
uses one thread per schedulable core (its default, not configurable from Python), so the PyG
child calls torch.set_num_threads(that count); --threads N restricts both processes' CPU
affinity to N cores first. In sampled mode the perturbjax child samples every batch up front
(perturbjax's NeighbourSampler, seeded per batch) and writes them to files that both children
read one per step; padding (perturbjax) and the regrouping into PyG's per-type blocks happen
before the timer starts.

Per case, recorded in the JSON (`cases[i]`):
  * perturbjax / pyg: median_s (and q1/q3/min, all step times, losses), peak_rss_gib = the
    process's peak RSS, VmHWM of /proc/self/status (graph, inputs and the library included, in
    sampled mode the sampler in the perturbjax child: a whole-process peak; not ru_maxrss, which
    Linux carries over from the parent's peak through subprocess's vfork + exec, and which is
    kept as ru_maxrss_gib for reference), base_rss_gib = RSS after imports, graph and
    inputs, before any model; initial_loss (the same weights and data: equal up to float
    rounding); threads;
  * check: PyG's outputs on perturbjax's initial weights against perturbjax's;
  * subgraph (sampled mode): seeds, fan-outs, mean/max real nodes and edges, the padded budget,
    sampling and padding seconds per batch;
  * pyg_ratio = PyG median / perturbjax median (> 1: perturbjax faster);
  * perturbjax compile_s (trace + lowering + XLA compile of the train step on its first call,
    from jax.monitoring durations), first_call_s, train_step_compilations (the jitted step's
    cache size after the run; must be 1) and compilations_while_timing (any XLA compile during
    the timed steps; must be 0);
  * roofline: a lower bound on the bytes one step must move (below) over the measured copy
    bandwidth; achieved_gbps = bytes / perturbjax step time; roofline_ratio = perturbjax step
    time / (bytes / bandwidth) (1 would be bandwidth-bound; pyg_roofline_ratio likewise).
Bytes lower bound, float32, d = width (64), per layer: forward reads the node states and writes
the outputs (2 * 4Nd) and per edge reads sender and receiver index (8 B) and its weight (the
attention coefficient per head, 4H B, for the GAT; the 1/c_ir norm, 4 B, for R-GCN); backward
reads the output gradient and the node states and writes the input gradient (3 * 4Nd) and again
reads per edge the indices and the weight; parameters: read forward and backward, gradient
written, Adam reads parameter, gradient and two moments and writes three (10 * 4P). For the
sampled mode N and E are the mean real (unpadded) subgraph sizes. Bandwidth: the best of 5
np.copyto of --bandwidth-mib MiB float64 (read + write bytes over time), on one thread and on
as many threads as the libraries use (slices copied in parallel; numpy releases the GIL); the
roofline uses the larger.
Message passing alone (full mode; `propagate`, the step's sparse products, timed in the perturbjax
child before PyG's starts): forward reads the S relation-source rows and writes the N receiver
rows (4Sd + 4Nd) and reads per edge its column index and edge-order entry (8 B) and its weights
(4K B: K = heads for the GAT, 1 for R-GCN); backward reads the output gradient and writes the
value gradient (4Nd + 4Sd), reads the edges again, and for the GAT (whose attention is
differentiated) also reads the values and writes the weights' gradient (4Sd + 4EK). Its
propagate_roofline_ratio = (forward + backward time) / ((forward + backward bytes) / bandwidth).
propagate_fetch_ratio is the same against a floor for kernels that fetch a row per edge and keep
none in cache (what a graph's random edges give): the gathered rows are read once per edge (4Ed
in place of the forward's 4Sd source rows and the backward's 4Nd output-gradient rows).

Output: machine (CPU model, cores, memory), versions, thread counts, then one line per case and
a markdown ratio table; --json OUT writes everything (--json alone: benchmarks/results.json). Exit status 1 when a case failed or a
correctness check did not pass (the other cases are still measured and written).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import queue
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from report import cases_table  # noqa: E402

# name -> (nodes, edges, relations)
SYNTHETIC = {
    "synthetic_46k_1m": (46_000, 1_000_000, 20),  # Hetionet size
    "synthetic_130k_4m": (130_000, 4_000_000, 30),
    "synthetic_primekg_8m": (129_375, 8_100_498, 30),  # PrimeKG size
}
QUICK_SYNTHETIC = {"synthetic_20k_200k": (20_000, 200_000, 12)}
REAL_CONFIG = "experiments/hetionet_lincs_consensus.py"
# PrimeKG's node type proportions (perturbjax.data.primekg.NODE_TYPES counts).
NODE_TYPE_SHARES = {"biological_process": 28_642, "gene_protein": 27_671, "disease": 17_080,
                    "effect_phenotype": 15_311, "anatomy": 14_035, "molecular_function": 11_169,
                    "drug": 7_957, "cellular_component": 4_176, "pathway": 2_516, "exposure": 818}
CHECK_RTOL = 1e-3
DEFAULT_JSON = os.path.join(REPO, "benchmarks", "results.json")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")


# ================================================================================================
# Machine, versions, bandwidth (parent)
# ================================================================================================
def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    memory = int(line.split()[1]) / 2**20
    except OSError:
        pass
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(),
            "schedulable_cpus": len(os.sched_getaffinity(0)), "memory_gib": memory,
            "platform": platform.platform()}


def versions() -> dict:
    out = {"python": platform.python_version()}
    for dist in ("jax", "jaxlib", "flax", "optax", "numpy", "torch", "torch_geometric", "pyg_lib",
                 "torch_scatter", "torch_sparse"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    return out


def copy_bandwidth(mib: int, threads: int, repeats: int = 5) -> dict:
    """Best read+write bytes/s of np.copyto over `mib` MiB, on one thread and on `threads`."""
    n = mib * 2**20 // 8
    src = np.ones(n)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # page in both arrays

    def single() -> float:
        start = time.perf_counter()
        np.copyto(dst, src)
        return time.perf_counter() - start

    bounds = np.linspace(0, n, threads + 1).astype(np.int64)

    def parallel() -> float:
        workers = [threading.Thread(target=np.copyto, args=(dst[a:b], src[a:b]))
                   for a, b in zip(bounds[:-1], bounds[1:])]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.perf_counter() - start

    moved = 2 * src.nbytes
    one = moved / min(single() for _ in range(repeats)) / 1e9
    many = moved / min(parallel() for _ in range(repeats)) / 1e9
    return {"mib": mib, "single_thread_gbps": round(one, 2), "threads": threads,
            "threads_gbps": round(many, 2), "roofline_gbps": round(max(one, many), 2)}


def step_bytes(model: str, nodes: float, edges: float, width: int, heads: int, layers: int,
               params: int) -> float:
    """The documented lower bound on bytes one training step moves (module docstring)."""
    node = 4.0 * nodes * width
    edge = edges * (8.0 + 4.0 * (heads if model == "gat" else 1))
    return layers * (5 * node + 2 * edge) + 10 * 4.0 * params


def propagate_bytes(sources: int, nodes: int, edges: int, width: int, columns: int,
                    weight_grad: bool) -> dict:
    """The documented lower bound on bytes `propagate` moves (module docstring), float32."""
    src, dst, edge = 4.0 * sources * width, 4.0 * nodes * width, edges * (8.0 + 4.0 * columns)
    per_edge = 4.0 * edges * width  # one row fetched for every edge
    grad = src + 4.0 * edges * columns if weight_grad else 0.0
    return {"forward_bytes": src + dst + edge, "backward_bytes": dst + src + edge + grad,
            "forward_fetch_bytes": per_edge + dst + edge,
            "backward_fetch_bytes": per_edge + src + edge + grad}


# ================================================================================================
# Graphs (built in a child process, saved with HeteroGraph.save)
# ================================================================================================
def _apportion(weights, total: int, minimum: int = 1) -> np.ndarray:
    weights = np.asarray(weights, np.float64)
    counts = np.maximum(np.floor(weights / weights.sum() * total).astype(np.int64), minimum)
    counts[np.argmax(counts)] += total - counts.sum()
    return counts


def synthetic_graph(nodes: int, edges: int, relations: int, seed: int = 0):
    """A random heterogeneous graph: 10 node types in PrimeKG's proportions, `relations` edge
    types joining random (source, target) type pairs (chosen by type size), edge counts per
    relation log-normal, endpoints drawn with log-normal node weights (skewed degrees)."""
    from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet

    rng = np.random.default_rng(seed)
    types = list(NODE_TYPE_SHARES)
    sizes = dict(zip(types, _apportion(list(NODE_TYPE_SHARES.values()), nodes)))
    share = np.array([sizes[t] for t in types], np.float64)
    share /= share.sum()
    weights = {t: rng.lognormal(0.0, 1.0, sizes[t]) for t in types}
    counts = _apportion(rng.lognormal(0.0, 1.0, relations), edges)
    edge_sets = {}
    for r in range(relations):
        src, dst = (types[i] for i in rng.choice(len(types), 2, p=share))
        draw = lambda t, k: rng.choice(sizes[t], k, p=weights[t] / weights[t].sum())  # noqa: E731
        edge_sets[EdgeType(src, f"rel{r:02d}", dst)] = EdgeSet(draw(src, counts[r]),
                                                              draw(dst, counts[r]))
    node_sets = {t: NodeSet(np.arange(sizes[t]).astype(str)) for t in types}
    return HeteroGraph(node_sets, edge_sets)


def real_graph():
    from perturbjax.config import load_config
    from perturbjax.tasks import make_task

    return make_task(load_config(os.path.join(REPO, REAL_CONFIG))).graph


def build_graph_main(spec: dict) -> dict:
    """Child: builds one graph and saves it; returns its sizes (or a skip note)."""
    start = time.perf_counter()
    if spec["kind"] == "real":
        from perturbjax.data.registry import DataFileError

        try:
            graph = real_graph()
        except (DataFileError, FileNotFoundError) as e:
            return {"skipped": f"real graph skipped: {e}"}
    else:
        graph = synthetic_graph(spec["nodes"], spec["edges"], spec["relations"], spec["seed"])
    built = time.perf_counter() - start
    graph = _features_dropped(graph)  # the benchmark feeds random states, not the features
    graph.save(spec["dir"])
    return {"nodes": graph.num_nodes, "edges": graph.num_edges, "relations": len(graph.edges),
            "node_types": len(graph.nodes), "build_s": round(built, 2)}


def _features_dropped(graph):
    from perturbjax.graph.hetero import HeteroGraph, NodeSet

    return HeteroGraph({t: NodeSet(ns.names) for t, ns in graph.nodes.items()}, graph.edges)


# ================================================================================================
# Child processes: one library each, driven over stdin/stdout (one JSON object per line)
# ================================================================================================
def _protocol_stream():
    """The real stdout becomes the protocol channel; anything else printed goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def _send(stream, obj: dict) -> None:
    stream.write(json.dumps(obj) + "\n")
    stream.flush()


def _status_gib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20  # kB
    return float("nan")


def _rss_gib() -> float:
    return _status_gib("VmRSS")


def _memory() -> dict:
    """This process's peak RSS. VmHWM is the high-water mark of the process's own address space;
    ru_maxrss also holds the parent's peak (Linux folds the old address space's high-water mark
    into it at exec, and subprocess execs from a vfork that shares the parent's), so it is only
    recorded for reference."""
    return {"peak_rss_gib": round(_status_gib("VmHWM"), 3),
            "ru_maxrss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def _inputs(spec: dict, num_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(spec["seed"])
    x = rng.standard_normal((num_nodes, spec["in_dim"]), dtype=np.float32)
    target = rng.standard_normal((num_nodes, spec["hidden"]), dtype=np.float32)
    return x, target


def _seed_counts(graph, total: int) -> dict:
    """Seeds per node type, proportional to type size (a type may get none)."""
    types = graph.node_types
    sizes = np.array([graph.nodes[t].count for t in types], np.float64)
    counts = np.floor(sizes / sizes.sum() * total).astype(np.int64)
    counts[np.argmax(sizes)] += total - counts.sum()
    return {t: int(min(c, graph.nodes[t].count)) for t, c in zip(types, counts) if c > 0}


def _batch_seeds(graph, seed_counts: dict, seed: int, batch: int) -> tuple[np.ndarray, object]:
    rng = np.random.default_rng([seed, batch])
    offsets = graph.node_offsets()
    seeds = np.concatenate([offsets[t] + rng.choice(graph.nodes[t].count, k, replace=False)
                            for t, k in seed_counts.items()])
    return seeds, rng


def _load_batch(path: str) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _quantiles(times: list[float]) -> dict:
    t = np.asarray(times)
    return {"median_s": float(np.median(t)), "q1_s": float(np.quantile(t, 0.25)),
            "q3_s": float(np.quantile(t, 0.75)), "min_s": float(t.min()), "steps": len(t),
            "times_s": [round(float(v), 6) for v in t]}


class JaxRunner:
    """The perturbjax side of one case (imports jax only here, after the affinity is set)."""

    def __init__(self, spec: dict):
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        from perturbjax.graph.hetero import HeteroGraph
        from perturbjax.models.layers import RGCN, HeteroGAT

        self.jax, self.jnp = jax, jnp
        self.spec = spec
        self.compile_events: list[tuple[str, float]] = []
        jax.monitoring.register_event_duration_secs_listener(
            lambda name, secs, **kw: self.compile_events.append((name, secs))
            if name in COMPILE_EVENTS else None)

        graph = HeteroGraph.load(spec["graph_dir"])
        self.x, self.target = _inputs(spec, graph.num_nodes)
        self.info = {"base_rss_gib": round(_rss_gib(), 3),
                     "threads": len(os.sched_getaffinity(0)), "jax_backend": jax.default_backend(),
                     "jax_devices": jax.local_device_count(),
                     "xla_flags": os.environ.get("XLA_FLAGS", "")}

        num_relations = len(graph.edges)
        in_dim, hidden, layers = spec["in_dim"], spec["hidden"], spec["layers"]
        rngs = nnx.Rngs(spec["seed"])
        make = {"gat": lambda i, o: HeteroGAT(i, o, num_relations, num_heads=spec["heads"],
                                                rngs=rngs),
                "rgcn": lambda i, o: RGCN(i, o, num_relations, rngs=rngs)}[spec["model"]]

        class Net(nnx.Module):
            def __init__(self):
                self.layers = nnx.List([make(in_dim if k == 0 else hidden, hidden)
                                        for k in range(layers)])

            def __call__(self, h, topo):
                for k, layer in enumerate(self.layers):
                    h = layer(h, topo)
                    if k < len(self.layers) - 1:
                        h = jax.nn.gelu(h, approximate=False)
                return h

        # The contract's nnx.split(model, nnx.Param) leaves out non-Param state (HeteroGAT's
        # dropout RNG); `...` collects it, passed to the step unchanged.
        self.graphdef, self.params, self.rest = nnx.split(Net(), nnx.Param, ...)
        self.tx = optax.adam(spec["lr"])
        self.opt_state = self.tx.init(self.params)
        flat = self.flat_params()
        self.info["params"] = int(sum(v.size for v in flat.values()))

        to_topo, self.info["graph_input"] = self._graph_input(graph)
        graphdef = self.graphdef

        def apply(params, rest, x, graph_in):
            return nnx.merge(graphdef, params, rest)(x, to_topo(graph_in))

        def loss_fn(params, rest, x, target, weight, graph_in):
            err = (apply(params, rest, x, graph_in) - target) ** 2
            if weight is None:
                return jnp.mean(err)
            w = weight.astype(jnp.float32)
            return jnp.sum(w[:, None] * err) / (jnp.maximum(w.sum(), 1.0) * err.shape[1])

        tx = self.tx

        def train_step(params, opt_state, rest, x, target, weight, graph_in):
            loss, grads = jax.value_and_grad(loss_fn)(params, rest, x, target, weight, graph_in)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        forward = jax.jit(apply)

        # Inputs: the whole graph once, or the pre-sampled batches (written to files).
        self.batch_files: list[str] = []
        self.next_batch = 0
        if spec["mode"] == "full":
            self.full_args = (jax.device_put(self.x), jax.device_put(self.target), None,
                              self.graph_arrays)
            self.x = self.target = None  # the device copies are the inputs now
            out = np.asarray(forward(self.params, self.rest, self.full_args[0], self.graph_arrays))
            check = {"out": out}
        else:
            self._sample_batches(graph, spec)
            args, seed_rows, seed_ids = self._batch_args(0)  # batch 0: the check batch
            out = np.asarray(forward(self.params, self.rest, args[0], args[3]))[seed_rows]
            check = {"out": out[np.argsort(seed_ids)]}
            self.next_batch = 1
        del graph
        params_file = os.path.join(spec["workdir"], "params.npz")
        np.savez(params_file, **flat)
        check_file = os.path.join(spec["workdir"], "check.npz")
        np.savez(check_file, **check)
        self.info.update(params_file=params_file, check_file=check_file,
                         batch_files=self.batch_files)

        # First call: compiles. Then warm-up.
        args = self._args()
        self.compile_events.clear()
        start = time.perf_counter()
        loss = self._step(args)
        self.info["first_call_s"] = time.perf_counter() - start
        self.info["compile_s"] = sum(s for _, s in self.compile_events)
        phases: dict[str, float] = {}
        for n, secs in self.compile_events:
            phases[n.rsplit("/", 1)[-1]] = phases.get(n.rsplit("/", 1)[-1], 0.0) + secs
        self.info["compile_phases_s"] = phases
        self.info["initial_loss"] = loss
        for _ in range(spec["warmup"]):
            self._step(self._args())
        if spec["mode"] == "full":  # timed now, before PyG's process starts
            self.info["propagate"] = self._time_propagate(spec)
        self.compile_events.clear()

    def _time_propagate(self, spec: dict, reps: int = 7) -> dict:
        """The message-passing step alone: `propagate` over relation-source rows as the model
        calls it (GAT: values `[S, H, d/H]`, weights `[E, H]`, backward to both; R-GCN:
        `[S, d]`, `[E]`, backward to the values), forward and backward (a vjp) timed apart;
        medians of `reps` calls after two."""
        from perturbjax.graph.propagate import propagate

        jax, jnp = self.jax, self.jnp
        topo = self.graph_arrays
        s, n, e = topo.layout.num_sources, topo.layout.num_nodes, topo.layout.num_edges
        d, gat = spec["hidden"], spec["model"] == "gat"
        k = spec["heads"] if gat else 1
        shape = (k, d // k) if gat else (d,)
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((s,) + shape), jnp.float32)
        w = jnp.asarray(rng.random((e, k) if gat else (e,)), jnp.float32)
        g = jnp.asarray(rng.standard_normal((n,) + shape), jnp.float32)

        def forward(w, x, t):
            return propagate(t, x, w, source="relation")

        def backward(w, x, g, t):
            if gat:
                return jax.vjp(lambda w_, x_: forward(w_, x_, t), w, x)[1](g)
            return jax.vjp(lambda x_: forward(w, x_, t), x)[1](g)

        out = {}
        for name, fn, args in (("forward", jax.jit(forward), (w, x, topo)),
                               ("backward", jax.jit(backward), (w, x, g, topo))):
            times = []
            for _ in range(reps + 2):
                start = time.perf_counter()
                jax.block_until_ready(fn(*args))
                times.append(time.perf_counter() - start)
            out[f"{name}_s"] = float(np.median(times[2:]))
        out.update(propagate_bytes(s, n, e, d, k, gat))
        return out

    # ---- graph input ---------------------------------------------------------------------
    def _graph_input(self, graph):
        """(graph argument -> Topology inside the step, description); full mode: the topology,
        built once on the host and passed to every step as an argument (never a constant)."""
        from perturbjax.graph.topology import Topology

        if self.spec["mode"] == "full":
            start = time.perf_counter()
            topo = Topology.build(graph, sparse=True)
            self.info["topology_build_s"] = time.perf_counter() - start
            self.graph_arrays = self.jax.tree.map(self.jnp.asarray, topo)
            return (lambda t: t), "Topology.build(graph, sparse=True), a step argument"
        self.graph_arrays = None
        self._layout_holder = []  # filled by _sample_batches (the sampler's layout)

        self._layout_holder = []  # filled by _sample_batches (the sampler's layout)
        return (lambda t: t), ("Topology.from_graphs_tuple(sampler.padded(sub), sampler.layout, "
                               "sparse=True) on the host per batch (as the task builds it), a "
                               "step argument")

    def _sample_batches(self, graph, spec: dict) -> None:
        from perturbjax.graph.schema import GraphSchema
        from perturbjax.graph.sampling import NeighbourSampler
        from perturbjax.graph.topology import Topology

        s = spec["sampled"]
        relations = sorted({k.relation for k in graph.edges})
        seed_counts = _seed_counts(graph, s["seeds"])
        start = time.perf_counter()
        sampler = NeighbourSampler(graph, GraphSchema.of(graph),
                                   fanouts=[{r: f for r in relations} for f in s["fanouts"]],
                                   max_seeds=seed_counts)
        setup_s = time.perf_counter() - start
        self._layout_holder.append(sampler.layout)
        self.sampler = sampler
        sample_s, pad_s, nodes, edges = [], [], [], []
        for b in range(s["num_batches"]):
            seeds, rng = _batch_seeds(graph, seed_counts, spec["seed"], b)
            start = time.perf_counter()
            sub = sampler.sample(seeds, rng)
            sample_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            Topology.from_graphs_tuple(sampler.padded(sub), sampler.layout, sparse=True)
            pad_s.append(time.perf_counter() - start)
            nodes.append(int((sub.nodes >= 0).sum()))  # the layout's padding slots hold -1
            edges.append(len(sub.senders))
            path = os.path.join(spec["workdir"], f"batch{b:04d}.npz")
            np.savez(path, nodes=sub.nodes, seeds=sub.seeds, senders=sub.senders,
                     receivers=sub.receivers, edge_type=sub.edge_type, seed_ids=seeds)
            self.batch_files.append(path)
        self.info["subgraph"] = {
            "seeds": int(sum(seed_counts.values())), "seed_counts": seed_counts,
            "fanouts": list(s["fanouts"]), "batches": s["num_batches"],
            "nodes_mean": float(np.mean(nodes)), "edges_mean": float(np.mean(edges)),
            "nodes_max": int(max(nodes)), "edges_max": int(max(edges)),
            "budget": {"n_node": sampler.budget.n_node, "n_edge": sampler.budget.n_edge},
            "sampler_setup_s": setup_s, "sample_s_median": float(np.median(sample_s)),
            "pad_s_median": float(np.median(pad_s))}

    def _batch_args(self, b: int):
        """Device arrays of batch b: (x, target, seed weight, topology); seed rows, ids."""
        from perturbjax.graph.sampling import Subgraph
        from perturbjax.graph.topology import Topology

        z = _load_batch(self.batch_files[b])
        sub = Subgraph(z["nodes"], z["seeds"], z["senders"], z["receivers"], z["edge_type"])
        gt = _without_features(self.sampler.padded(sub))
        ids, mask = np.asarray(gt.nodes["id"]), np.asarray(gt.nodes["mask"])
        weight = mask & np.isin(ids, z["seed_ids"])
        x = np.where(mask[:, None], self.x[ids], 0.0).astype(np.float32)
        target = self.target[ids]
        topo = Topology.from_graphs_tuple(gt, self._layout_holder[0], sparse=True)
        args = self.jax.device_put((x, target, weight, topo))
        self.jax.block_until_ready(args)
        rows = np.flatnonzero(weight)
        return args, rows, ids[rows]

    def _args(self):
        if self.spec["mode"] == "full":
            return self.full_args
        args, _, _ = self._batch_args(self.next_batch)
        self.next_batch += 1
        return args

    def _step(self, args) -> float:
        self.params, self.opt_state, loss = self.train_step(self.params, self.opt_state,
                                                            self.rest, *args)
        self.jax.block_until_ready((self.params, self.opt_state, loss))
        return float(loss)

    def flat_params(self) -> dict:
        from flax import nnx

        return {"/".join(map(str, path)): np.asarray(v.get_value())
                for path, v in nnx.to_flat_state(self.params)}

    # ---- protocol ------------------------------------------------------------------------
    def run(self, steps: int) -> dict:
        times, losses = [], []
        for _ in range(steps):
            args = self._args()
            start = time.perf_counter()
            self.params, self.opt_state, loss = self.train_step(self.params, self.opt_state,
                                                                self.rest, *args)
            self.jax.block_until_ready((self.params, self.opt_state, loss))
            times.append(time.perf_counter() - start)
            losses.append(float(loss))
        return {"times": times, "losses": losses}

    def finish(self) -> dict:
        return {**_memory(),
                "train_step_compilations": int(self.train_step._cache_size()),
                "compilations_while_timing": sum(1 for n, _ in self.compile_events
                                                 if n.endswith("backend_compile_duration"))}


def _without_features(gt):
    """The padded graph without node features: the benchmark's inputs are the random states."""
    return gt._replace(nodes={k: v for k, v in gt.nodes.items() if k != "features"})


class PygRunner:
    """The PyG side of one case (imports torch only here, after the affinity is set)."""

    def __init__(self, spec: dict):
        import torch

        from perturbjax.graph.hetero import HeteroGraph
        from pyg_models import HeteroGATStack, RGCNStack

        self.torch = torch
        self.spec = spec
        threads = len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)
        torch.manual_seed(spec["seed"])
        graph = HeteroGraph.load(spec["graph_dir"])
        self.x, self.target = _inputs(spec, graph.num_nodes)
        self.info = {"base_rss_gib": round(_rss_gib(), 3), "threads": torch.get_num_threads(),
                     "interop_threads": torch.get_num_interop_threads(),
                     "torch_parallel_info": torch.__config__.parallel_info().splitlines()[:6]}
        types, relation_keys = graph.node_types, graph.edge_types
        offsets = graph.node_offsets()
        self.bounds = [offsets[t] for t in types] + [graph.num_nodes]
        self.type_index = {t: i for i, t in enumerate(types)}
        self.sources = np.array([self.type_index[k.source] for k in relation_keys])
        self.targets = np.array([self.type_index[k.target] for k in relation_keys])
        if spec["model"] == "gat":
            self.model = HeteroGATStack(types, [tuple(k) for k in relation_keys], spec["in_dim"],
                                        spec["hidden"], spec["heads"], spec["layers"])
        else:
            self.model = RGCNStack(len(relation_keys), spec["in_dim"], spec["hidden"],
                                   spec["layers"])
        self.info["params"] = int(sum(p.numel() for p in self.model.parameters()))
        if spec.get("params_file"):
            self.model.load_perturbjax_params(dict(np.load(spec["params_file"])))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=spec["lr"])

        if spec["mode"] == "full":
            senders = [graph.edges[k].senders for k in relation_keys]
            receivers = [graph.edges[k].receivers for k in relation_keys]
            self.full_args = self._graph_args(self.x, self.target, senders, receivers,
                                              self.bounds, None)
        self.batch_files = spec.get("batch_files") or []
        self.next_batch = 0
        del graph

        if spec.get("check_file"):
            self.info["check"] = self._check()
        self.next_batch = 1 if spec["mode"] == "sampled" else 0
        self.info["initial_loss"] = self._step(self._args())
        for _ in range(spec["warmup"]):
            self._step(self._args())

    def _graph_args(self, x, target, senders, receivers, bounds, seed_rows):
        """Model inputs from per-relation within-type sender/receiver ids; node type i holds
        rows bounds[i]:bounds[i + 1] of x."""
        torch = self.torch
        args = {"x": torch.from_numpy(np.ascontiguousarray(x)),
                "target": torch.from_numpy(np.ascontiguousarray(target)),
                "seed_rows": None if seed_rows is None else torch.from_numpy(seed_rows)}
        if self.spec["model"] == "gat":
            args["graph"] = (self.model.edge_index_dict(senders, receivers), list(bounds))
        else:
            lo = np.asarray(bounds)
            flat_s = np.concatenate([s + lo[self.sources[r]] for r, s in enumerate(senders)])
            flat_r = np.concatenate([d + lo[self.targets[r]] for r, d in enumerate(receivers)])
            edge_type = np.concatenate([np.full(len(s), r) for r, s in enumerate(senders)])
            args["graph"] = (torch.from_numpy(np.stack([flat_s, flat_r]).astype(np.int64)),
                             torch.from_numpy(edge_type.astype(np.int64)))
        return args

    def _batch_args(self, b: int):
        """Batch b without its padding slots, nodes grouped into type blocks (PyG's per-type
        x_dict), edges relabelled to match."""
        z = _load_batch(self.batch_files[b])
        slots = np.flatnonzero(z["nodes"] >= 0)  # sampler slots holding a real node
        nodes = z["nodes"][slots]
        node_type = np.searchsorted(np.asarray(self.bounds[1:]), nodes, side="right")
        order = np.argsort(node_type, kind="stable")
        local = np.full(len(z["nodes"]), -1, np.int64)  # slot -> row of the PyG batch
        local[slots[order]] = np.arange(len(nodes))
        counts = np.bincount(node_type, minlength=len(self.bounds) - 1)
        bounds = [0] + np.cumsum(counts).tolist()
        lo = np.asarray(bounds)
        s, d, et = local[z["senders"]], local[z["receivers"]], z["edge_type"]
        if len(s) and min(s.min(), d.min()) < 0:
            raise ValueError(f"batch {b}: an edge joins a padding slot")
        senders = [s[et == r] - lo[self.sources[r]] for r in range(len(self.sources))]
        receivers = [d[et == r] - lo[self.targets[r]] for r in range(len(self.targets))]
        seed_rows = np.unique(local[z["seeds"]])
        full_ids = nodes[order]
        args = self._graph_args(self.x[full_ids], self.target[full_ids], senders, receivers,
                                bounds, seed_rows)
        return args, full_ids[seed_rows]

    def _args(self):
        if self.spec["mode"] == "full":
            return self.full_args
        args, _ = self._batch_args(self.next_batch)
        self.next_batch += 1
        return args

    def _forward(self, args):
        return self.model(args["x"], *args["graph"])

    def _check(self) -> dict:
        torch = self.torch
        ref = np.load(self.spec["check_file"])["out"]
        if self.spec["mode"] == "full":
            args = self.full_args
            with torch.no_grad():
                out = self._forward(args).numpy()
        else:
            args, seed_ids = self._batch_args(0)
            with torch.no_grad():
                out = self._forward(args)[args["seed_rows"]].numpy()
            out = out[np.argsort(seed_ids)]
        diff = float(np.abs(out - ref).max()) if out.size else 0.0
        scale = float(np.abs(ref).max()) if ref.size else 1.0
        rel = diff / max(scale, 1e-30)
        return {"max_abs_diff": diff, "rel_diff": rel, "max_abs_output": scale,
                "rtol": CHECK_RTOL, "ok": bool(rel <= CHECK_RTOL), "rows": int(len(ref)),
                "on": "initial weights, all nodes" if self.spec["mode"] == "full"
                else "initial weights, seed nodes of one sampled subgraph"}

    def _loss(self, out, args):
        if args["seed_rows"] is not None:
            out, target = out[args["seed_rows"]], args["target"][args["seed_rows"]]
        else:
            target = args["target"]
        return ((out - target) ** 2).mean()

    def _step(self, args) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self._forward(args), args)
        loss.backward()
        self.optimizer.step()
        return float(loss.item())

    def run(self, steps: int) -> dict:
        times, losses = [], []
        for _ in range(steps):
            args = self._args()
            start = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            loss = self._loss(self._forward(args), args)
            loss.backward()
            self.optimizer.step()
            times.append(time.perf_counter() - start)
            losses.append(float(loss.item()))
        return {"times": times, "losses": losses}

    def finish(self) -> dict:
        return _memory()


def child_main(spec_path: str) -> int:
    proto = _protocol_stream()
    try:
        with open(spec_path) as f:
            spec = json.load(f)
        if spec.get("cpus"):
            os.sched_setaffinity(0, spec["cpus"])
        tuned = False
        if spec["lib"] == "jax" or spec.get("pyg_tuned_allocator"):
            from perturbjax.runtime import tune_host_allocator

            tuned = tune_host_allocator()  # what the CLI does; PyG's child keeps glibc's defaults
        if spec["lib"] == "build":
            _send(proto, {"event": "done", **build_graph_main(spec)})
            return 0
        runner = (JaxRunner if spec["lib"] == "jax" else PygRunner)(spec)
        _send(proto, {"event": "ready", **runner.info, "host_allocator_tuned": tuned})
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] == "run":
                _send(proto, {"event": "ran", **runner.run(cmd["steps"])})
            elif cmd["cmd"] == "finish":
                _send(proto, {"event": "done", **runner.finish()})
                return 0
        return 0
    except BaseException:  # noqa: BLE001 - everything goes back to the parent
        _send(proto, {"event": "error", "error": traceback.format_exc()})
        return 1


# ================================================================================================
# Parent: drives the children
# ================================================================================================
class ChildError(RuntimeError):
    pass


class Child:
    """A child process speaking the line protocol; its stderr goes to a log file."""

    def __init__(self, spec: dict, workdir: str, name: str, timeout: float):
        self.name, self.timeout = name, timeout
        spec_path = os.path.join(workdir, f"{name}.spec.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        self.log_path = os.path.join(workdir, f"{name}.stderr.log")
        self.log = open(self.log_path, "w")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, HERE, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child",
                                      spec_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True, env=env, cwd=REPO)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _stderr_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def recv(self) -> dict:
        try:
            line = self.lines.get(timeout=self.timeout)
        except queue.Empty:
            self.kill()
            raise ChildError(f"{self.name}: no answer within {self.timeout:.0f} s (killed)")
        if line is None:
            rc = self.proc.wait()
            raise ChildError(f"{self.name} exited (rc {rc}) without answering; stderr tail:\n"
                             f"{self._stderr_tail()}")
        msg = json.loads(line)
        if msg.get("event") == "error":
            self.proc.wait()
            raise ChildError(f"{self.name} failed:\n{msg['error']}")
        return msg

    def send(self, obj: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise ChildError(f"{self.name}: cannot send ({e}); stderr tail:\n"
                             f"{self._stderr_tail()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        self.log.close()


def build_graph(spec: dict, workdir: str, args) -> dict:
    child = Child({**spec, "lib": "build", "cpus": args.cpus}, workdir, f"build_{spec['name']}",
                  args.timeout)
    try:
        return child.recv()
    finally:
        child.close()


def run_case(graph: dict, model: str, mode: str, args, workdir: str) -> dict:
    """Both libraries on one (graph, model, mode): interleaved timing, memory, checks."""
    name = f"{graph['name']}/{mode}/{model}"
    case = {"name": name, "graph": graph["name"], "nodes": graph["nodes"],
            "edges": graph["edges"], "relations": graph["relations"], "mode": mode,
            "model": model, "perturbjax": {}, "pyg": {}}
    casedir = tempfile.mkdtemp(prefix=f"{graph['name']}_{mode}_{model}_", dir=workdir)
    steps_needed = 1 + args.warmup + args.reps * args.steps
    spec = {"graph_dir": graph["dir"], "model": model, "mode": mode, "in_dim": args.hidden,
            "hidden": args.hidden, "heads": args.heads, "layers": args.layers, "lr": 1e-3,
            "seed": args.seed, "warmup": args.warmup, "cpus": args.cpus, "workdir": casedir,
            "pyg_tuned_allocator": args.pyg_tuned_allocator,
            "sampled": {"fanouts": args.fanouts, "seeds": args.sampled_seeds,
                        "num_batches": 1 + steps_needed}}
    children: dict[str, Child] = {}
    ready: dict[str, dict] = {}
    case["load_average_before"] = os.getloadavg()  # other jobs on the machine skew the times

    def start(lib: str, extra: dict) -> None:
        key = "perturbjax" if lib == "jax" else "pyg"
        try:
            child = Child({**spec, **extra, "lib": lib}, casedir, lib, args.timeout)
            children[key] = child
            ready[key] = child.recv()
        except ChildError as e:
            case[key]["error"] = str(e)
            if key in children:
                children.pop(key).close()

    times: dict[str, list] = {"perturbjax": [], "pyg": []}
    losses: dict[str, list] = {"perturbjax": [], "pyg": []}

    def timed(keys: list[str]) -> None:
        """--reps blocks of --steps steps per library, the order flipped every round."""
        for rep in range(args.reps):
            for key in (keys if rep % 2 == 0 else keys[::-1]):
                if key not in children:
                    continue
                try:
                    children[key].send({"cmd": "run", "steps": args.steps})
                    msg = children[key].recv()
                    times[key] += msg["times"]
                    losses[key] += msg["losses"]
                except ChildError as e:
                    case[key]["error"] = str(e)
                    children.pop(key).close()

    def finish(key: str) -> None:
        if key not in children:
            return
        child = children.pop(key)
        try:
            child.send({"cmd": "finish"})
            case[key].update(child.recv())
            case[key].pop("event", None)
        except ChildError as e:
            case[key]["error"] = str(e)
        finally:
            child.close()

    try:
        start("jax", {})
        if args.sequential:  # one library resident at a time: all of perturbjax, then PyG
            timed(["perturbjax"])
            finish("perturbjax")
        pj = ready.get("perturbjax", {})
        if mode == "sampled" and "perturbjax" not in ready:
            case["pyg"]["error"] = "not run: the sampled batches come from the perturbjax child"
        else:
            start("pyg", {"params_file": pj.get("params_file"), "check_file": pj.get("check_file"),
                          "batch_files": pj.get("batch_files")})
        timed(["pyg"] if args.sequential else ["perturbjax", "pyg"])
        finish("perturbjax")
        finish("pyg")
        for key, info in ready.items():
            for k in ("event", "params_file", "check_file", "batch_files"):
                info.pop(k, None)
            if key == "pyg" and "check" in info:
                case["check"] = info.pop("check")
            if "subgraph" in info:
                case["subgraph"] = info.pop("subgraph")
            case[key] = {**info, **case[key]}
            if times.get(key) and "error" not in case[key]:
                case[key].update(_quantiles(times[key]))
                case[key]["losses"] = [round(v, 6) for v in losses[key]]
    finally:
        case["load_average_after"] = os.getloadavg()
        for child in children.values():
            child.close()
        shutil.rmtree(casedir, ignore_errors=True)

    pj, pyg = case["perturbjax"], case["pyg"]
    if "check" not in case:
        case["check"] = {"note": "not checked: " + ("perturbjax child failed" if "error" in pj
                                                    else "PyG child failed")}
    if "max_abs_diff" in case["check"] and "initial_loss" in pj and "initial_loss" in pyg:
        # Same weights and data: the first step's losses agree too (training tracks after).
        case["check"]["initial_loss_rel_diff"] = (abs(pyg["initial_loss"] - pj["initial_loss"])
                                                  / max(abs(pj["initial_loss"]), 1e-30))
    if pj.get("median_s") and pyg.get("median_s"):
        case["pyg_ratio"] = pyg["median_s"] / pj["median_s"]
    if pj.get("median_s") and pj.get("params"):
        sub = case.get("subgraph")
        n, e = (sub["nodes_mean"], sub["edges_mean"]) if sub else (case["nodes"], case["edges"])
        moved = step_bytes(model, n, e, args.hidden, args.heads, args.layers, pj["params"])
        bound = moved / (args.bandwidth["roofline_gbps"] * 1e9)
        case["roofline"] = {"bytes_per_step": moved, "lower_bound_s": bound,
                            "achieved_gbps": moved / pj["median_s"] / 1e9,
                            "bandwidth_gbps": args.bandwidth["roofline_gbps"]}
        case["roofline_ratio"] = pj["median_s"] / bound
    mp = pj.get("propagate")
    if mp:
        gbps = args.bandwidth["roofline_gbps"] * 1e9
        mp["lower_bound_s"] = (mp["forward_bytes"] + mp["backward_bytes"]) / gbps
        case["propagate_roofline_ratio"] = ((mp["forward_s"] + mp["backward_s"])
                                            / mp["lower_bound_s"])
        if "forward_fetch_bytes" in mp:
            mp["fetch_bound_s"] = (mp["forward_fetch_bytes"] + mp["backward_fetch_bytes"]) / gbps
            case["propagate_fetch_ratio"] = ((mp["forward_s"] + mp["backward_s"])
                                             / mp["fetch_bound_s"])
        if pyg.get("median_s"):
            case["pyg_roofline_ratio"] = pyg["median_s"] / bound
    return case


def case_line(case: dict) -> str:
    pj, pyg = case["perturbjax"], case["pyg"]

    def lib(d: dict) -> str:
        if "error" in d:
            return "error (" + d["error"].strip().splitlines()[-1][:160] + ")"
        if "median_s" not in d:
            return "no timing"
        return f"{d['median_s']:.4f} s/step, peak {d.get('peak_rss_gib', float('nan')):.2f} GiB"

    parts = [f"[{case['name']}] {case['nodes']:,} nodes {case['edges']:,} edges "
             f"{case['relations']} relations", f"perturbjax {lib(pj)}", f"PyG {lib(pyg)}"]
    if "pyg_ratio" in case:
        parts.append(f"ratio {case['pyg_ratio']:.2f}")
    if "compile_s" in pj:
        parts.append(f"compile {pj['compile_s']:.2f} s, compilations "
                     f"{pj.get('train_step_compilations')} (+{pj.get('compilations_while_timing')}"
                     " while timing)")
    if "roofline_ratio" in case:
        parts.append(f"roofline ratio {case['roofline_ratio']:.0f} "
                     f"({case['roofline']['achieved_gbps']:.2f} GB/s achieved)")
    if "propagate_roofline_ratio" in case:
        mp = case["perturbjax"]["propagate"]
        parts.append(f"propagate {1e3 * mp['forward_s']:.1f} + {1e3 * mp['backward_s']:.1f} ms "
                     f"(roofline ratio {case['propagate_roofline_ratio']:.1f}"
                     + (f", {case['propagate_fetch_ratio']:.1f} against a row per edge)"
                        if "propagate_fetch_ratio" in case else ")"))
    if "pyg" in case and "threads" in pyg and "threads" in pj:
        parts.append(f"threads jax {pj['threads']} torch {pyg['threads']}")
    parts.append(f"load average {case['load_average_before'][0]:.1f} -> "
                 f"{case['load_average_after'][0]:.1f}" if "load_average_after" in case else "")
    check = case.get("check", {})
    if "max_abs_diff" in check:
        parts.append(f"check max|diff| {check['max_abs_diff']:.2e} rel {check['rel_diff']:.2e} "
                     f"{'ok' if check['ok'] else 'FAILED'}")
    return "; ".join(p for p in parts if p)


def _synthetic_arg(text: str) -> tuple[str, tuple[int, int, int]]:
    try:
        name, _, sizes = text.partition("=")
        nodes, edges, relations = (int(v) for v in sizes.split(","))
        return name, (nodes, edges, relations)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--synthetic takes NAME=NODES,EDGES,RELATIONS, got {text!r}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description="Training-step time, memory, compilation and roofline of perturbjax's hetero "
                    "GAT and R-GCN vs PyTorch Geometric, interleaved in one run.",
        epilog="Each case runs in one process per library (timed blocks alternate between them); "
               "see the module docstring for what is measured and how.")
    parser.add_argument("--quick", action="store_true",
                        help="small cases only: the real graph (if its data is present) and "
                             f"{', '.join(QUICK_SYNTHETIC)}; fewer repetitions")
    parser.add_argument("--json", metavar="OUT", nargs="?", const=DEFAULT_JSON,
                        help="write all results to OUT (benchmarks/results.json when OUT is "
                             "left out); "
                             "without --json the results are only printed")
    parser.add_argument("--models", default="gat,rgcn", help="comma-separated: gat, rgcn")
    parser.add_argument("--sampled", action="store_true",
                        help="also run every graph in sampled-subgraph mode")
    parser.add_argument("--modes",
                        help="comma-separated modes (full, sampled); overrides --sampled")
    parser.add_argument("--synthetic", action="append", type=_synthetic_arg,
                        metavar="NAME=NODES,EDGES,RELATIONS",
                        help="synthetic graphs to run instead of the default sizes (repeatable)")
    parser.add_argument("--no-real", action="store_true", help="skip the real consensus graph")
    parser.add_argument("--hidden", type=int, default=64, help="width of input and every layer")
    parser.add_argument("--heads", type=int, default=4, help="GAT heads")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--reps", type=int,
                        help="interleaved timed blocks per library (5; quick 3)")
    parser.add_argument("--steps", type=int, help="steps per timed block (2; quick 1)")
    parser.add_argument("--warmup", type=int,
                        help="untimed steps after the first (compiling) one (2; quick 0)")
    parser.add_argument("--threads", type=int,
                        help="restrict both libraries to this many cores "
                             "(default: all schedulable)")
    parser.add_argument("--fanouts", default="8,4", help="sampled mode: fan-out per hop")
    parser.add_argument("--sampled-seeds", type=int, default=512,
                        help="sampled mode: seed nodes per subgraph, spread over types by size")
    parser.add_argument("--bandwidth-mib", type=int, default=512, help="copy size for bandwidth")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="seconds to wait for any one answer of a child process")
    parser.add_argument("--sequential", action="store_true",
                        help="time perturbjax fully, end its process, then PyG (not interleaved): "
                             "for cases whose two processes do not fit in memory together")
    parser.add_argument("--pyg-tuned-allocator", action="store_true",
                        help="give PyG's process perturbjax's glibc allocator settings too "
                             "(perturbjax.runtime; by default PyG runs as it ships)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.reps = args.reps or (3 if args.quick else 5)
    args.steps = args.steps or (1 if args.quick else 2)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    args.fanouts = [int(v) for v in args.fanouts.split(",")]
    if args.sampled_seeds < 1:
        parser.error("--sampled-seeds must be at least 1")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(args.models) - {"gat", "rgcn"}:
        parser.error(f"--models: unknown {sorted(set(args.models) - {'gat', 'rgcn'})}")
    args.modes = ([m.strip() for m in args.modes.split(",")] if args.modes
                  else ["full", "sampled"] if args.sampled else ["full"])
    if set(args.modes) - {"full", "sampled"}:
        parser.error(f"--modes: unknown {sorted(set(args.modes) - {'full', 'sampled'})}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args.child)
    shared = os.path.join(os.path.dirname(REPO), "shared", "data")
    if not os.environ.get("PERTURBJAX_DATA_DIR") and os.path.isdir(shared):
        os.environ["PERTURBJAX_DATA_DIR"] = shared  # else the registry's own default
    cpus = sorted(os.sched_getaffinity(0))
    args.cpus = cpus[:args.threads] if args.threads else cpus
    threads = len(args.cpus)
    command = "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
    results = {"command": command.strip(), "date": datetime.date.today().isoformat(),
               "machine": machine_info(), "versions": versions(),
               "threads": {"jax": threads, "torch": threads, "cpus": args.cpus},
               "settings": {"hidden": args.hidden, "heads": args.heads, "layers": args.layers,
                            "reps": args.reps, "steps": args.steps, "warmup": args.warmup,
                            "modes": args.modes, "models": args.models, "lr": 1e-3,
                            "fanouts": args.fanouts, "sampled_seeds": args.sampled_seeds,
                            "seed": args.seed, "check_rtol": CHECK_RTOL,
                            "interleaved": not args.sequential},
               "notes": [], "graphs": [], "cases": []}
    m, v = results["machine"], results["versions"]
    print(f"machine: {m['cpu_model']}, {m['cpu_count']} cores ({m['schedulable_cpus']} "
          f"schedulable), {m['memory_gib']:.1f} GiB")
    print("versions: " + ", ".join(f"{k} {val}" for k, val in v.items()))
    print(f"threads: XLA CPU {threads} (one per schedulable core, its default), "
          f"torch.set_num_threads({threads}); cores {args.cpus}")
    if not v.get("torch") or not v.get("torch_geometric"):
        print("PyG side needs `pip install -e .[bench]` (torch, torch_geometric)", file=sys.stderr)
    args.bandwidth = results["bandwidth"] = copy_bandwidth(args.bandwidth_mib, threads)
    bw = args.bandwidth
    print(f"copy bandwidth: {bw['single_thread_gbps']} GB/s (1 thread), {bw['threads_gbps']} GB/s "
          f"({threads} threads)", flush=True)

    graphs = []
    if not args.no_real:
        graphs.append({"name": "consensus", "kind": "real"})
    synthetic = dict(args.synthetic) if args.synthetic else (
        QUICK_SYNTHETIC if args.quick else SYNTHETIC)
    graphs += [{"name": name, "kind": "synthetic", "nodes": n, "edges": e, "relations": r,
                "seed": args.seed} for name, (n, e, r) in synthetic.items()]

    failed = False
    workdir = tempfile.mkdtemp(prefix="perturbjax-bench-")
    try:
        for graph in graphs:
            graph["dir"] = os.path.join(workdir, graph["name"])
            try:
                built = build_graph(graph, workdir, args)
            except ChildError as e:
                results["graphs"].append({**graph, "error": str(e)})
                print(f"[{graph['name']}] graph build failed: {e}", flush=True)
                failed = True
                continue
            if "skipped" in built:
                results["notes"].append(built["skipped"])
                print(built["skipped"], flush=True)
                continue
            built.pop("event", None)
            graph.update(built)
            results["graphs"].append({k: v for k, v in graph.items() if k != "dir"})
            print(f"[{graph['name']}] built in {built['build_s']} s: {graph['nodes']:,} nodes, "
                  f"{graph['edges']:,} edges, {graph['relations']} relations", flush=True)
            for mode in args.modes:
                for model in args.models:
                    try:
                        case = run_case(graph, model, mode, args, workdir)
                    except Exception:  # noqa: BLE001 - one broken case must not stop the rest
                        case = {"name": f"{graph['name']}/{mode}/{model}", "graph": graph["name"],
                                "nodes": graph["nodes"], "edges": graph["edges"],
                                "relations": graph["relations"], "mode": mode, "model": model,
                                "perturbjax": {"error": traceback.format_exc()}, "pyg": {}}
                    results["cases"].append(case)
                    if "interop_threads" in case["pyg"]:
                        results["threads"].setdefault("torch_interop",
                                                      case["pyg"]["interop_threads"])
                    failed |= ("error" in case["perturbjax"] or "error" in case["pyg"]
                               or case.get("check", {}).get("ok") is False
                               or case["perturbjax"].get("train_step_compilations", 1) != 1
                               or case["perturbjax"].get("compilations_while_timing", 0) != 0)
                    print(case_line(case), flush=True)
            shutil.rmtree(graph["dir"], ignore_errors=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(cases_table(results))
    print("\nratio = PyG s/step / perturbjax s/step (> 1: perturbjax faster); peak = peak RSS "
          "(VmHWM) of each library's own process; roofline ratio = perturbjax step / (lower-bound "
          f"bytes / {bw['roofline_gbps']} GB/s); propagate roofline ratio: the same for "
          "`propagate` alone (forward + backward); row-per-edge floor: its bytes with the "
          "gathered rows read once per edge")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
