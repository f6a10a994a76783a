"""One benchmark case's perturbjax training step, timed alone in this process (no PyG beside it),
optionally profiled: for finding where a step's time goes, not for the PyG comparison
(`benchmarks/run.py` is that).

    python benchmarks/step.py gat full real                  # the consensus graph (needs its data)
    python benchmarks/step.py gat sampled 46000,1000000,20   # a synthetic graph: nodes,edges,relations
    python benchmarks/step.py rgcn full real --steps 10 --profile /tmp/trace

It builds the model, inputs and batches exactly as `benchmarks/run.py`'s perturbjax child does
(`JaxRunner`), then prints the median and minimum of `--steps` step times and the CPU time per
step. `--profile DIR` also writes a perfetto trace of two more steps (`jax.profiler.trace`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as bench  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=("gat", "rgcn"))
    parser.add_argument("mode", choices=("full", "sampled"))
    parser.add_argument("graph", help="'real' (the consensus graph) or NODES,EDGES,RELATIONS")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--profile", metavar="DIR")
    parser.add_argument("--hlo", metavar="FILE",
                        help="write the compiled step's HLO (to name the trace's fusions)")
    args = parser.parse_args(argv)
    from perturbjax.runtime import tune_host_allocator

    tune_host_allocator()  # as the CLI and run.py's perturbjax child do
    work = tempfile.mkdtemp(prefix="perturbjax-step-")
    graph_dir = os.path.join(work, "graph")
    if args.graph == "real":
        graph = bench.real_graph()
    else:
        try:
            nodes, edges, relations = map(int, args.graph.split(","))
        except ValueError:
            parser.error(f"graph {args.graph!r}: expected 'real' or NODES,EDGES,RELATIONS")
        graph = bench.synthetic_graph(nodes, edges, relations, 0)
    bench._features_dropped(graph).save(graph_dir)
    spec = {"graph_dir": graph_dir, "model": args.model, "mode": args.mode, "in_dim": 64,
            "hidden": 64, "heads": 4, "layers": 2, "lr": 1e-3, "seed": 0, "warmup": 1,
            "workdir": work, "sampled": {"fanouts": [8, 4], "seeds": 512,
                                         "num_batches": args.steps + 6}}
    runner = bench.JaxRunner(spec)
    cpu = time.process_time()
    times = runner.run(args.steps)["times"]
    print(f"{args.model}/{args.mode}/{args.graph}: median {np.median(times):.4f} s/step, "
          f"min {min(times):.4f} s, CPU {(time.process_time() - cpu) / args.steps:.4f} s/step")
    if args.hlo:
        step_args = (runner.params, runner.opt_state, runner.rest, *runner._args())
        with open(args.hlo, "w") as f:
            f.write(runner.train_step.lower(*step_args).compile().as_text())
        print(f"compiled HLO in {args.hlo}")
    if args.profile:
        import jax

        with jax.profiler.trace(args.profile, create_perfetto_trace=True):
            runner.run(2)
        print(f"trace of 2 steps in {args.profile}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
