"""Benchmark: the neighbour sampler at PrimeKG scale, and what a sampled training run measured.

    python benchmarks/sampling.py                                   # sampler only
    python benchmarks/sampling.py --run runs/primekg_scale/hetero_gat --write docs/results/primekg_scale.md:primekg_scale

Builds the task of `--config` (default experiments/primekg_scale.py: the PrimeKG-size synthetic
graph, 129,375 nodes and 8.1M edges, written on first use) and times `--batches` training
batches as the train loop gets them: k-hop sampling around the batch's drugs, cell lines and
readout genes, then padding to the frozen budget. With `--run`, also reads that run's
summary.json and metrics.jsonl (the median step time and conditions/s of the logged intervals
after the first, which includes compilation; peak memory; the metrics). Prints one JSON line;
`--write FILE:SECTION` also writes a table between the section's markers in FILE.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from perturbjax.config import load_config
from perturbjax.eval.compare import write_section
from perturbjax.tasks import make_task
from perturbjax.training.batching import train_batches
from perturbjax.training.logging import peak_rss_gib


def measure_sampler(config_arg: str, batches: int) -> dict:
    config = load_config(config_arg)
    started = time.perf_counter()
    task = make_task(config)
    build = time.perf_counter() - started
    stream = train_batches(task, config.seed)
    next(stream)  # the first batch pays for lazily allocated buffers
    nodes, edges = [], []
    started = time.perf_counter()
    for _ in range(batches):
        graph = next(stream)["graph"]
        nodes.append(int(graph.nodes["mask"].sum()))
        edges.append(int(graph.edges["mask"].sum()))
    seconds = time.perf_counter() - started
    s = config.graph.sampling
    return {
        "config": config_arg, "graph": {"nodes": task.graph.num_nodes,
                                        "edges": task.graph.num_edges,
                                        "edge_types": len(task.graph.edges)},
        "fanouts": list(s.fanouts), "relation_fanouts": list(s.relation_fanouts),
        "batch_size": config.train.batch_size, "readout_genes": len(task.data.readout),
        "task_build_s": round(build, 1), "batches": batches,
        "subgraphs_per_s": round(batches / seconds, 2),
        "subgraph_nodes_mean": round(float(np.mean(nodes))), "subgraph_edges_mean": round(float(np.mean(edges))),
        "subgraph_edges_max": max(edges),
        "budget": task.budget.to_json(), "trimmed": dict(task.sampler.trimmed),
        "sampler_peak_rss_gib": round(peak_rss_gib(), 2),
        "cpus": os.cpu_count(),
    }


def read_run(run: str) -> dict:
    with open(os.path.join(run, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        train = [r for r in map(json.loads, f) if r["split"] == "train"][1:]  # 1st: compilation
    median = lambda key: round(float(np.median([r[key] for r in train])), 3)  # noqa: E731
    return {"run": run, "model": summary["model"], "steps": summary["step"],
            "step_time_s": median("step_time_s"), "examples_per_s": median("examples_per_s"),
            "peak_rss_gib": summary.get("peak_rss_gib"), "wall_time_s": summary["wall_time_s"],
            "test_pearson_centered": summary["test"]["pearson_centered"],
            "baselines": {k: v["test"]["pearson_centered"] for k, v in summary["baselines"].items()},
            "compilations": summary["compilations"], "host": summary["host"]}


def table(bench: dict, run: dict | None, command: str) -> str:
    g, b = bench["graph"], bench["budget"]
    lines = [
        "| measure | value |", "|---|---|",
        f"| graph | {g['nodes']:,} nodes, {g['edges']:,} edges, {g['edge_types']} edge types |",
        f"| fan-outs per hop and edge type | {bench['fanouts']} |",
        f"| seeds per batch | {bench['batch_size']} drugs + {bench['batch_size']} cell lines + "
        f"{bench['readout_genes']} readout genes |",
        f"| subgraph (mean real / padded budget) | {bench['subgraph_nodes_mean']:,} / "
        f"{b['n_node']:,} nodes, {bench['subgraph_edges_mean']:,} / {b['n_edge']:,} edges |",
        f"| sampler throughput | {bench['subgraphs_per_s']} subgraphs/s (sample + pad, "
        f"{bench['batches']} batches) |",
    ]
    if run:
        lines += [
            f"| training step ({run['model']}, median over logged intervals) | "
            f"{run['step_time_s']} s/step, {run['examples_per_s']} conditions/s |",
            f"| peak memory of the training process | {run['peak_rss_gib']} GiB |",
            f"| run | {run['steps']} steps in {run['wall_time_s']:.0f} s, compilations "
            f"{run['compilations']}; test pearson_centered {run['test_pearson_centered']:.3f} "
            f"(baselines: {', '.join(f'{k} {v:.3f}' for k, v in run['baselines'].items())}) |",
        ]
    return "\n".join(lines) + f"\n\n{bench['cpus']} CPU cores. Written by `{command}`."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/primekg_scale.py")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--run", help="a finished training run directory to read")
    parser.add_argument("--write", help="FILE:SECTION to write a markdown table into")
    args = parser.parse_args()
    try:  # a bad config, data file or run directory: one line, as the CLI reports them
        bench = measure_sampler(args.config, args.batches)
        run = read_run(args.run) if args.run else None
    except (ValueError, KeyError, OSError, ImportError) as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(json.dumps({**bench, "training": run}))
    if args.write:
        path, _, section = args.write.rpartition(":")
        command = " ".join(["python benchmarks/sampling.py", f"--config {args.config}",
                            f"--batches {args.batches}"] + ([f"--run {args.run}"] if args.run else [])
                           + [f"--write {args.write}"])
        write_section(path, section, table(bench, run, command))


if __name__ == "__main__":
    main()
