"""Tables of runs' test metrics, mean ± sd over the runs (seeds or folds) of each group.

Reads only `summary.json` files, so it works on run directories from anywhere, offline.
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

DEFAULT_METRICS = ("pearson_centered", "pearson", "spearman", "rmse", "precision_up@20",
                   "precision_down@20", "per_gene_pearson")


def load_summaries(directory: str) -> list[dict]:
    """Every `summary.json` under `directory` (itself included), sorted by path."""
    paths = sorted(glob.glob(os.path.join(directory, "**", "summary.json"), recursive=True))
    if not paths:
        raise FileNotFoundError(f"no summary.json under {directory}")
    summaries = []
    for path in paths:
        with open(path, "rb") as f:
            raw = f.read()
        try:
            summary = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a run summary: not valid JSON ({e})") from e
        _check_summary(path, summary)
        summaries.append(summary)
    return summaries


def _check_summary(path: str, summary) -> None:
    """Raises naming the file unless it holds what `perturbjax train` writes: the model's name,
    and metric dicts of numbers for the model and each baseline (per part scored)."""
    def metrics(where: str, value) -> None:
        if not isinstance(value, dict):
            raise ValueError(f"{path}: not a run summary: {where} is {type(value).__name__}, "
                             f"expected an object of metric values")
        # Numbers, and nested reports (a classifier's per_class table), which tables skip.
        bad = [k for k, v in value.items()
               if not (v is None or isinstance(v, (int, float, dict)))]
        if bad:
            raise ValueError(f"{path}: not a run summary: {where}.{bad[0]} is "
                             f"{value[bad[0]]!r}, expected a number")

    if not isinstance(summary, dict) or not isinstance(summary.get("model"), str):
        raise ValueError(f"{path}: not a run summary: expected an object with 'model', 'test' "
                         f"and 'baselines' (as perturbjax train writes)")
    parts = [p for p in ("test", "validation") if p in summary]
    if "test" not in parts:
        raise ValueError(f"{path}: not a run summary: no 'test' metrics")
    for part in parts:
        metrics(part, summary[part])
    baselines = summary.get("baselines", {})
    if not isinstance(baselines, dict):
        raise ValueError(f"{path}: not a run summary: 'baselines' is not an object")
    for name, b in baselines.items():
        if not isinstance(b, dict):
            raise ValueError(f"{path}: not a run summary: baselines.{name} is not an object")
        for part in [p for p in parts if p in b]:
            metrics(f"baselines.{name}.{part}", b[part])


def _rows(label: str, summaries: list[dict], part: str) -> dict[str, list[dict]]:
    """Metric dicts per row name: the run's model, then each baseline."""
    rows = {f"{label}: {summaries[0]['model']}": [s[part] for s in summaries]}
    for name in summaries[0].get("baselines", {}):
        rows[f"{label}: baseline {name}"] = [s["baselines"][name][part] for s in summaries]
    return rows


def provenance(groups: dict[str, list[dict]], command: str) -> str:
    """One line under a table: runs, hardware, wall time per run, and the command that wrote it."""
    summaries = [s for group in groups.values() for s in group]
    hosts = sorted({_host(s.get("host")) for s in summaries})
    times = ", ".join(
        f"{label} {np.nanmean([s.get('wall_time_s', np.nan) for s in group]):.0f} s"
        for label, group in groups.items())
    return (f"{len(summaries)} runs on {'; '.join(hosts)}. Mean wall time per run (training, "
            f"evaluation and baselines): {times}. Written by `{command}`.")


def _host(host: dict | None) -> str:
    if not host:
        return "unrecorded hardware"
    if host["jax_backend"] == "cpu":
        text = f"{host['cpus']} CPU cores (JAX on CPU)"
    else:
        text = f"{host['cpus']} CPU cores and {host['jax_backend']} ({', '.join(host['devices'])})"
    # A multi-host run: `cpus` are one process's; summaries before multi-host lack the key.
    processes = host.get("processes", 1)
    return text if processes == 1 else f"{processes} processes of {text}"


def write_section(path: str, section: str, text: str) -> None:
    """Replaces what lies between `<!-- results:SECTION -->` and `<!-- /results:SECTION -->`.

    Raises:
      ValueError: the file lacks either marker, so nothing would be written where expected.
    """
    start, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    with open(path) as f:
        content = f.read()
    if start not in content or end not in content:
        raise ValueError(f"{path}: no '{start}' ... '{end}' markers to write between")
    before, rest = content.split(start, 1)
    _, after = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{before}{start}\n{text}\n{end}{after}")


def _run_key(summary: dict) -> tuple:
    """What pairs runs of two groups: the same seed and the same fold of the same split."""
    split = summary.get("split", {})
    return summary.get("seed"), split.get("kind"), split.get("fold")


def comparison_table(groups: dict[str, list[dict]], metrics=None,
                     part: str = "test", paired: str | None = None) -> str:
    """Markdown table: one row per model or baseline of each group, mean ± sd over its runs.

    `metrics` defaults to the runs' own `report_metrics` (their task's table columns; the
    perturbation metrics for runs written before summaries recorded them).

    With `paired` (a row's name, e.g. "kg_ridge: baseline tanimoto_ridge"), a last column gives
    every row's difference from that row in the first metric, mean ± sd over runs paired by seed
    and fold: the fold-to-fold spread of a difference is far smaller than that of either score.

    Raises:
      ValueError: `paired` names no row, or a row's runs do not pair one-to-one with its runs.
    """
    if not metrics:
        first = next(iter(groups.values()))[0]
        metrics = tuple(first.get("report_metrics") or DEFAULT_METRICS)
    rows = {}  # name -> (run keys, metric dicts)
    for label, summaries in groups.items():
        keys = [_run_key(s) for s in summaries]
        rows.update({name: (keys, values) for name, values in _rows(label, summaries, part).items()})
    if paired is not None and paired not in rows:
        raise ValueError(f"--paired {paired!r} is not a row; rows are {sorted(rows)}")
    header = list(metrics) + ([f"Δ {metrics[0]} vs {paired}"] if paired else [])
    lines = ["| model | runs | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for name, (keys, values) in rows.items():
        cells = [_mean_sd(np.array([v[m] for v in values], float)) for m in metrics]
        if paired:
            cells.append("—" if name == paired else _mean_sd(_paired_difference(
                name, keys, values, paired, *rows[paired], metrics[0])))
        lines.append(f"| {name} | {len(values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean_sd(x: np.ndarray) -> str:
    return f"{x.mean():.3f} ± {x.std(ddof=1):.3f}" if len(x) > 1 else f"{x[0]:.3f}"


def _paired_difference(name, keys, values, ref_name, ref_keys, ref_values, metric) -> np.ndarray:
    if len(set(keys)) != len(keys) or sorted(keys) != sorted(ref_keys):
        raise ValueError(f"runs of {name!r} (seed, split, fold: {sorted(keys)}) do not pair with "
                         f"those of {ref_name!r} ({sorted(ref_keys)})")
    ref = {k: v[metric] for k, v in zip(ref_keys, ref_values)}
    return np.array([v[metric] - ref[k] for k, v in zip(keys, values)], float)
