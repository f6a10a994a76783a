"""Markdown from a benchmarks/run.py JSON file: the ratio table, and the docs performance section.

    python benchmarks/report.py benchmarks/results.json                          # print the section
    python benchmarks/report.py benchmarks/results.json --write docs/results/performance.md:performance

`--write FILE:SECTION` replaces what lies between `<!-- results:SECTION -->` and
`<!-- /results:SECTION -->` in FILE (perturbjax.eval.compare.write_section; both markers must
exist). The section holds the command that measured the JSON, the machine, the versions, the
thread counts and one table row per case.
"""

from __future__ import annotations

import argparse
import json

MODEL_NAMES = {"gat": "hetero GAT", "rgcn": "R-GCN"}


def _fmt_s(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def _fmt(value, spec: str = ".2f") -> str:
    return "–" if value is None else format(value, spec)


def _lib(case: dict, lib: str) -> dict:
    return case.get(lib) or {}


def cases_table(results: dict) -> str:
    """One markdown row per case: sizes, mode, model, s/step of each library, ratio, memory, ..."""
    lines = [
        "| graph | nodes | edges | relations | mode | model | PyG s/step | perturbjax s/step "
        "| ratio (PyG / perturbjax) | PyG peak GiB | perturbjax peak GiB | compile s "
        "| roofline ratio | propagate roofline ratio | propagate / row-per-edge floor |",
        "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in results.get("cases", []):
        pj, pyg = _lib(case, "perturbjax"), _lib(case, "pyg")
        mode = case["mode"]
        sub = case.get("subgraph")
        if mode == "sampled" and sub:
            budget = sub.get("budget")
            padded = (f"; padded to {budget['n_node']:,} and {budget['n_edge']:,}"
                      if budget else "")
            mode = (f"sampled ({sub['seeds']} seeds, fan-out {'/'.join(map(str, sub['fanouts']))}; "
                    f"mean {sub['nodes_mean']:,.0f} nodes, {sub['edges_mean']:,.0f} edges"
                    f"{padded})")
        pj_s = pj.get("median_s")
        pyg_s = pyg.get("median_s")
        lines.append(
            f"| {case['graph']} | {case['nodes']:,} | {case['edges']:,} | {case['relations']} "
            f"| {mode} | {MODEL_NAMES.get(case['model'], case['model'])} "
            f"| {_fmt_s(pyg_s) if 'error' not in pyg else 'error'} "
            f"| {_fmt_s(pj_s) if 'error' not in pj else 'error'} "
            f"| {_fmt(case.get('pyg_ratio'))} | {_fmt(pyg.get('peak_rss_gib'))} "
            f"| {_fmt(pj.get('peak_rss_gib'))} | {_fmt(pj.get('compile_s'), '.1f')} "
            f"| {_fmt(case.get('roofline_ratio'), '.0f')} "
            f"| {_fmt(case.get('propagate_roofline_ratio'), '.1f')} "
            f"| {_fmt(case.get('propagate_fetch_ratio'), '.1f')} |")
    return "\n".join(lines)


def _check_lines(results: dict) -> list[str]:
    out = []
    for case in results.get("cases", []):
        check = case.get("check")
        if check and "max_abs_diff" in check:
            out.append(f"{case['name']}: max |PyG − perturbjax| {check['max_abs_diff']:.2e} "
                       f"(relative {check['rel_diff']:.2e}, {'ok' if check['ok'] else 'FAILED'})")
        elif check:
            out.append(f"{case['name']}: {check.get('note') or check.get('error')}")
    return out


def _load(results: dict) -> str:
    keys = ("load_average_before", "load_average_after")
    loads = [c[k][0] for c in results.get("cases", []) for k in keys if c.get(k)]
    return f"{min(loads):.1f} to {max(loads):.1f} (1-minute)" if loads else "not recorded"


def section(results: dict) -> str:
    """The docs performance section: command, machine, versions, threads, table, notes."""
    m, v, t, bw = results["machine"], results["versions"], results["threads"], results["bandwidth"]
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    absent = [k for k, val in v.items() if not val]
    lines = [
        f"Measured by `{results['command']}` ({results.get('date', '')}).",
        "",
        f"Machine: {m['cpu_model']}, {m['schedulable_cpus']} schedulable CPU cores "
        f"({m['cpu_count']} in the machine), {m['memory_gib']:.0f} GiB RAM. "
        f"Threads: XLA CPU {t['jax']} (its default, one per schedulable core), "
        f"torch.set_num_threads({t['torch']}) (inter-op {t.get('torch_interop', '?')}). "
        f"Copy bandwidth (np.copyto of {bw['mib']} MiB, read + write bytes): "
        f"{bw['single_thread_gbps']:.1f} GB/s on one thread, {bw['threads_gbps']:.1f} GB/s on "
        f"{bw['threads']}; the roofline uses {bw['roofline_gbps']:.1f} GB/s.",
        "",
        f"Versions: {versions}"
        + (f" (not installed: {', '.join(absent)})" if absent else "") + ".",
        "",
        cases_table(results),
        "",
        "Training step = forward + backward + Adam (optax / torch.optim), 2 layers at width "
        f"{results['settings']['hidden']} ({results['settings']['heads']} heads for the GAT), "
        "mean squared error against a fixed random target; median over "
        f"{results['settings']['reps']} "
        f"{'interleaved ' if results['settings'].get('interleaved', True) else ''}blocks of "
        f"{results['settings']['steps']} steps per library after warm-up. "
        f"Load average during the cases: {_load(results)}. Ratio > 1: perturbjax is faster. "
        "Peak memory: peak RSS (VmHWM) of the library's own process (graph, inputs and library "
        "included). Compile: trace + lower + XLA compile of perturbjax's train step on its first "
        "call (it compiles once per run). Roofline ratio: perturbjax's step time over the time "
        "the step's lower-bound bytes take at copy bandwidth (see benchmarks/run.py). Propagate "
        "roofline ratio (full graphs): the same for the message passing alone, `propagate`'s "
        "forward and backward (its sparse products), timed by themselves; its floor reads "
        "each source row once. Row-per-edge floor: the same bytes with the gathered rows read "
        "once per edge, what kernels that keep no row in cache must move (benchmarks/run.py).",
    ]
    checks = _check_lines(results)
    if checks:
        lines += ["", "Same weights, same outputs: " + "; ".join(checks) + "."]
    notes = results.get("notes") or []
    if notes:
        lines += [""] + [f"* {n}" for n in notes]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", help="a results file written by benchmarks/run.py --json")
    parser.add_argument("--write", help="FILE:SECTION to write the section into")
    args = parser.parse_args()
    try:
        with open(args.json) as f:
            results = json.load(f)
    except (OSError, ValueError) as e:  # missing, unreadable or not JSON
        parser.exit(2, f"report.py: error: {args.json}: not a benchmarks/run.py results file "
                       f"({e})\n")
    if not isinstance(results, dict) or not isinstance(results.get("cases"), list):
        parser.exit(2, f"report.py: error: {args.json}: expected benchmarks/run.py's JSON, an "
                       f"object with a 'cases' list\n")
    try:
        text = section(results)
    except (KeyError, TypeError) as e:
        parser.exit(2, f"report.py: error: {args.json}: it lacks the field {e} (written by another "
                       f"version of benchmarks/run.py?)\n")
    if args.write:
        from perturbjax.eval.compare import write_section

        path, _, name = args.write.rpartition(":")
        if not path:
            parser.error("--write takes FILE:SECTION, e.g. docs/results/performance.md:performance")
        try:
            write_section(path, name, text)
        except (OSError, ValueError) as e:  # no such file, or no markers in it
            parser.exit(2, f"report.py: error: {e}\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
