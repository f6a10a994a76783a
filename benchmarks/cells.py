"""Cell-graph batching: B samples on one shared topology against B disjoint padded copies.

    python benchmarks/cells.py                       # 20k nodes, 500k edges, B = 32 (minutes)
    python benchmarks/cells.py --omnicell            # also OmniCellTOSG's size at B = 8
    python benchmarks/cells.py --omnicell --write docs/results/tosg.md:tosg_batching

Each case runs in its own process (so its peak memory is its own) and times a training step
(forward, backward, Adam) of the same 2-layer GCN classifier (`perturbjax.models.cells`) on the
same synthetic graph and values, median over steps after a warm-up:

  * shared: node values `[N, B]` on one topology with its sparse index, built once; every edge
    is touched once per batch, `B * d`-wide (what `perturbjax.tasks.cells` does);
  * disjoint, segment ops: the B samples as B copies of the graph laid end to end and padded
    (`tasks.cells.disjoint_copies`), messages gathered and summed with segment ops, as a padded
    `jraph.GraphsTuple` batch runs (`perturbjax.graph.propagate`'s segment backend);
  * disjoint, sparse: the same copies with a sparse index of the B-times larger graph.

`--omnicell` adds the shared path on a graph of OmniCellTOSG's size (533,458 nodes, 33M edges,
random; synthetic values), B = 8, with its peak memory against the 24 GiB budget.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

OMNICELL = {"nodes": 533_458, "edges": 33_000_000}


def _case(spec: dict) -> dict:
    """One case, in this process: build, compile, time; peak RSS from /proc."""
    from perturbjax.runtime import tune_host_allocator

    tune_host_allocator()
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet
    from perturbjax.graph.topology import Topology
    from perturbjax.models.cells import CellGraphClassifier
    from perturbjax.tasks.cells import disjoint_copies

    n, e, b = spec["nodes"], spec["edges"], spec["batch"]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    graph = HeteroGraph({"node": NodeSet(np.arange(n).astype(str))},
                        {EdgeType("node", "interacts", "node"):
                         EdgeSet(rng.integers(0, n, e), rng.integers(0, n, e))})
    values = rng.standard_normal((n, b)).astype(np.float32)
    labels = jnp.asarray(rng.integers(0, 4, b))
    if spec["path"] == "shared":
        topo = Topology.build(graph, sparse=True)
        node_graph, num_graphs, x = None, 1, values
    else:
        topo, node_graph = disjoint_copies(graph, b, pad_nodes=8, pad_edges=8,
                                           sparse=spec["path"] == "disjoint_sparse")
        node_graph, num_graphs = jnp.asarray(node_graph), b
        x = np.concatenate([values.T.reshape(-1), np.zeros(8, np.float32)])[:, None]
    topo = topo.to_device()
    build_s = time.perf_counter() - start
    model = CellGraphClassifier(4, text_dim=0, num_nodes=n, layer=spec["layer"],
                                hidden=spec["hidden"], num_layers=2, readout="mean",
                                rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, topo):
        def loss(p):
            logits = nnx.merge(graphdef, p)(x, None, topo, node_graph=node_graph,
                                            num_graphs=num_graphs)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    x = jnp.asarray(x)
    start = time.perf_counter()
    params, opt_state, loss = jax.block_until_ready(step(params, opt_state, x, topo))
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        params, opt_state, loss = jax.block_until_ready(step(params, opt_state, x, topo))
        times.append(time.perf_counter() - start)
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 2**20
    return {**spec, "step_s": float(np.median(times)), "min_step_s": float(min(times)),
            "first_call_s": compile_s, "build_s": build_s, "peak_gib": peak,
            "loss": float(loss)}


def _run(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--case", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1][:300]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    lines = ["| graph | path | B | s/step | peak GiB | time vs shared | memory vs shared |",
             "|---|---|---:|---:|---:|---:|---:|"]
    shared = {r["graph"]: r for r in results if r["path"] == "shared" and "error" not in r}
    for r in results:
        graph = f"{r['graph']} ({r['nodes']:,} nodes, {r['edges']:,} edges)"
        if "error" in r:
            lines.append(f"| {graph} | {r['path']} | {r['batch']} | failed: {r['error']} | | | |")
            continue
        ref = shared.get(r["graph"])
        ratio = f"{r['step_s'] / ref['step_s']:.1f}x slower" if ref and r is not ref else "–"
        mem = f"{r['peak_gib'] / ref['peak_gib']:.1f}x" if ref and r is not ref else "–"
        lines.append(f"| {graph} | {r['path']} | {r['batch']} | {r['step_s']:.3f} | "
                     f"{r['peak_gib']:.2f} | {ratio} | {mem} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=20_000)
    parser.add_argument("--edges", type=int, default=500_000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--layer", default="gcn")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--omnicell", action="store_true",
                        help="also the shared path at OmniCellTOSG's size, B = 8")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--write", metavar="FILE:SECTION", help="write the table into FILE")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(_case(json.loads(args.case))))
        return 0
    base = {"graph": "synthetic", "nodes": args.nodes, "edges": args.edges, "batch": args.batch,
            "hidden": args.hidden, "layer": args.layer, "steps": args.steps}
    results = [_run({**base, "path": p}) for p in ("shared", "disjoint_segment",
                                                   "disjoint_sparse")]
    if args.omnicell:
        results.append(_run({**base, **OMNICELL, "graph": "OmniCellTOSG-size", "batch": 8,
                             "steps": 2, "path": "shared"}))
    text = table(results)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if args.write:
        from perturbjax.eval.compare import write_section

        path, _, section = args.write.rpartition(":")
        command = "python benchmarks/cells.py " + " ".join(a for a in (argv or sys.argv[1:]))
        write_section(path, section, text + f"\n\nMeasured by `{command}` on {os.cpu_count()} "
                      f"CPU cores: {args.layer.upper()}, 2 layers, width {args.hidden}, "
                      f"median of {args.steps} training steps (forward, backward, Adam) after "
                      f"the first (2 at OmniCellTOSG's size); peak memory is each case's "
                      f"process peak RSS.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
