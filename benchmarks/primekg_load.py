"""Benchmark: load a full-size PrimeKG kg.csv (8.1M rows) and report wall time and peak memory.

    python benchmarks/primekg_load.py                  # synthetic file at PrimeKG's scale
    python benchmarks/primekg_load.py --path kg.csv    # the real file

Without `--path`, a synthetic file of PrimeKG's size and format (129,375 nodes, 8,100,498 rows,
the 10 node types and 30 relations) is written once into `--cache-dir` and reused. It is written
in a child process, so the peak RSS reported (ru_maxrss of this process) is the loader's alone.
Prints one JSON line; exits 1 when the load exceeds `--max-seconds` or `--max-rss-gib`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time

import pyarrow

from perturbjax.data.primekg import load_primekg
from perturbjax.data.primekg_synthetic import synthetic_primekg
from perturbjax.training.logging import peak_rss_gib

N_NODES, N_EDGES = 129_375, 8_100_498


def _generate(path: str, n_nodes: int, n_edges: int, seed: int) -> None:
    partial = path + ".partial"  # renamed when complete, so an interrupted run is not reused
    synthetic_primekg(partial, n_nodes=n_nodes, n_edges=n_edges, seed=seed)
    os.replace(partial, path)


def synthetic_file(cache_dir: str, n_nodes: int, n_edges: int, seed: int) -> tuple[str, float]:
    """Path of the cached synthetic file (written in a child process if absent), seconds taken."""
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"primekg_synthetic_{n_nodes}_{n_edges}_seed{seed}.csv")
    if os.path.exists(path):
        return path, 0.0
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(
        target=_generate, args=(path, n_nodes, n_edges, seed))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"writing the synthetic file failed (exit code {child.exitcode})")
    return path, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--path", help="a real kg.csv; default: the cached synthetic file")
    parser.add_argument("--cache-dir",
                        default=os.path.join(tempfile.gettempdir(), "perturbjax-bench"))
    parser.add_argument("--nodes", type=int, default=N_NODES)
    parser.add_argument("--edges", type=int, default=N_EDGES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--max-rss-gib", type=float, default=8.0)
    args = parser.parse_args(argv)

    generated_seconds = 0.0
    path = args.path
    if path is None:
        path, generated_seconds = synthetic_file(args.cache_dir, args.nodes, args.edges, args.seed)
    rss_before = peak_rss_gib()
    started = time.perf_counter()
    graph, _, report = load_primekg(path)
    seconds = time.perf_counter() - started
    peak = peak_rss_gib()
    result = {
        "file": path, "synthetic": args.path is None,
        "file_gib": round(os.path.getsize(path) / 2**30, 3),
        "rows": report.notes["rows in file"], "edges": graph.num_edges, "nodes": graph.num_nodes,
        "node_types": len(graph.nodes), "edge_types": len(graph.edges),
        "dropped": dict(report.dropped), "seconds": round(seconds, 2),
        "peak_rss_gib": round(peak, 3), "rss_before_load_gib": round(rss_before, 3),
        "generate_seconds": round(generated_seconds, 1), "cpus": os.cpu_count(),
        "python": platform.python_version(), "pyarrow": pyarrow.__version__,
    }
    print(json.dumps(result))
    ok = seconds <= args.max_seconds and peak <= args.max_rss_gib
    if not ok:
        print(f"over the limits: {seconds:.1f} s (max {args.max_seconds}), {peak:.2f} GiB "
              f"(max {args.max_rss_gib})", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
