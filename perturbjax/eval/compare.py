"""Comparisons of runs: per group and metric, the mean with a 95% confidence interval over the
runs (seeds or folds), and paired differences to a reference with a paired test.

    perturbjax compare ROOT [ROOT ...]   # prints the table, writes comparison.{csv,md,png}

Runs are the `summary.json` files under the roots (`config.json` beside each says how it was
configured), and the finished runs of W&B groups (`load_wandb_runs`, online). Groups: runs whose configs differ only in the replicate keys (`seed`,
`data.fold`) and in settings that leave the model's scores alone (`baselines`, `wandb.*`) form
one group, named by the keys that differ between groups (an ablation sweep's
groups are named by `graph.ablation`), or by their root when every root holds one group (runs
without a `config.json` are grouped by root). Runs of two groups pair when they share seed,
split and fold.

Statistics (with n runs, differences d_i = run i's value minus its paired reference's):
  * mean ± the half-width of the two-sided 95% Student-t interval, `t(0.975, n-1) sd / sqrt(n)`;
  * the paired difference's mean and its 95% t-interval, and the two-sided paired t-test
    (`scipy.stats.ttest_rel`) p-value, with Holm's step-down adjustment over the rows of the
    table (every row tested against the reference), for each metric.
With n = 1 no interval exists (NaN in the CSV, "–" in the table). A row with fewer than
`MIN_PAIRS` (3) runs paired with the reference's is not tested: with 2 pairs a t-test has one
degree of freedom, and its p-value is as likely to mislead as inform ("not testable" in the
table, `testable` False and NaN p-values in the CSV; Holm's adjustment counts the tested rows).
Rows are sorted by the effect on the first metric, the most harmful first. A baseline that
scores the same in every group (baselines do not see a graph ablation) is listed once.

Reads only files, so it works on run directories from anywhere, offline.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import glob
import json
import math
import os

import numpy as np

from perturbjax.eval.metrics import higher_is_better

DEFAULT_METRICS = ("pearson_centered", "pearson", "spearman", "rmse", "precision_up@20",
                   "precision_down@20", "per_gene_pearson")
REPLICATE_KEYS = ("seed", "data.fold")  # what varies between the runs of one group
# Settings that do not change the model's scores: left out when grouping runs.
IGNORED_KEYS = ("baselines",)
IGNORED_PREFIXES = ("wandb.",)
TEST_NAME = "paired t-test (two-sided)"
MIN_PAIRS = 3  # fewer paired runs: "not testable" (see the module docstring)
NOT_TESTABLE = "not testable"


@dataclasses.dataclass
class Run:
    """One run directory: its summary and (when the directory has one) its flattened config."""

    root: str
    directory: str
    summary: dict
    config: dict | None


def load_runs(roots) -> list[Run]:
    """Every run (a `summary.json`) under each root, sorted by path within a root.

    Raises:
      FileNotFoundError: a root holds no summary.json.
      ValueError: a summary or config that is not what `perturbjax train` writes (the file is
        named).
    """
    runs = []
    for root in roots:
        paths = sorted(glob.glob(os.path.join(root, "**", "summary.json"), recursive=True))
        if not paths:
            raise FileNotFoundError(f"no summary.json under {root}")
        for path in paths:
            summary = _read_json(path, "a run summary")
            _check_summary(path, summary)
            directory = os.path.dirname(path)
            config_path = os.path.join(directory, "config.json")
            config = None
            if os.path.exists(config_path):
                raw = _read_json(config_path, "a run config")
                if not isinstance(raw, dict):
                    raise ValueError(f"{config_path}: not a run config: expected an object")
                config = _flatten(raw)
            runs.append(Run(root, directory, summary, config))
    return runs


def load_wandb_runs(spec: str) -> list[Run]:
    """The finished runs of a W&B group, `ENTITY/PROJECT/GROUP`, as `Run`s: their config, and
    a summary rebuilt from what `perturbjax train` logs at the end (`final_test/METRIC`,
    `final_validation/METRIC`, `final_test_baseline/NAME/METRIC`). Runs without final metrics
    (unfinished, crashed) are left out.

    Raises:
      ValueError: a malformed spec, or W&B could not list the group (offline, no API key, no
        such project); the message says which.
    """
    path, _, group = spec.rpartition("/")
    if path.count("/") != 1 or not group:
        raise ValueError(f"--wandb {spec!r}: expected ENTITY/PROJECT/GROUP")
    try:
        import wandb

        found = list(wandb.Api().runs(path, filters={"group": group}))
    except Exception as e:  # network, authentication and API errors alike
        raise ValueError(f"--wandb {spec}: cannot list the group's runs ({type(e).__name__}: "
                         f"{e})") from e
    runs = []
    for r in found:
        values, config = dict(r.summary), dict(r.config)
        parts = {}
        for key, value in values.items():
            head, _, metric = str(key).partition("/")
            if head in ("final_test", "final_validation") and isinstance(value, (int, float)):
                parts.setdefault(head[len("final_"):], {})[metric] = value
        if "test" not in parts:
            continue
        baselines = {}
        for key, value in values.items():
            head, _, rest = str(key).partition("_baseline/")
            name, _, metric = rest.partition("/")
            if head in ("final_test", "final_validation") and metric:
                baselines.setdefault(name, {}).setdefault(head[len("final_"):], {})[metric] = value
        data = config.get("data", {})
        summary = {"model": config.get("model", {}).get("name", "?"), "seed": config.get("seed"),
                   "split": {"kind": data.get("split"),
                             "fold": data.get("fold") if data.get("num_folds") else None},
                   **parts, "baselines": baselines}
        runs.append(Run(f"wandb:{spec}", "/".join(map(str, getattr(r, "path", [r.id]))),
                        summary, _flatten(config)))
    if not runs:
        raise ValueError(f"--wandb {spec}: no finished runs in the group")
    return runs


def load_summaries(directory: str) -> list[dict]:
    """Every `summary.json` under `directory` (itself included), sorted by path."""
    return [run.summary for run in load_runs([directory])]


def _read_json(path: str, what: str):
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not {what}: not valid JSON ({e})") from e


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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


def group_runs(runs: list[Run]) -> tuple[dict[str, list[dict]], str | None]:
    """Groups of run summaries by configuration (see the module docstring), and the label of
    the ablation reference group (`graph.ablation` "none") when the groups are ablations."""
    keyed: dict[str, list[Run]] = {}
    # A key some runs lack was added to the code after they ran: it separates nothing.
    key_sets = [set(r.config) for r in runs if r.config is not None]
    shared = set.intersection(*key_sets) if key_sets else set()
    for run in runs:
        if run.config is None:
            key = json.dumps(["root", run.root])
        else:
            key = json.dumps(sorted((k, v) for k, v in run.config.items()
                                    if k in shared and _grouping(k)), default=str)
        keyed.setdefault(key, []).append(run)
    groups = list(keyed.values())
    roots = {}
    for group in groups:
        roots.setdefault(group[0].root, []).append(group)
    by_root = all(len(g) == 1 for g in roots.values()) and all(
        len({r.root for r in group}) == 1 for group in groups)
    configs = [g[0].config for g in groups]
    varying = []
    if not by_root:
        keys = sorted(k for k in shared if _grouping(k))
        varying = [k for k in keys
                   if len({json.dumps(c.get(k) if c else None, default=str) for c in configs}) > 1]
    labels, reference = {}, None
    for group, config in zip(groups, configs):
        if by_root or config is None:
            label = os.path.basename(os.path.normpath(group[0].root))
        else:
            label = ", ".join(str(config.get(k)) if k == "graph.ablation" else
                              f"{k}={config.get(k)}" for k in varying) or "all runs"
        if label in labels:
            label = f"{label} ({os.path.relpath(group[0].directory)})"
        labels[label] = [r.summary for r in group]
        if "graph.ablation" in varying and config and config.get("graph.ablation") == "none":
            reference = label if reference is None else reference
    return labels, reference


def _grouping(key: str) -> bool:
    """Whether a config key separates groups (replicate and bookkeeping keys do not)."""
    return (key not in REPLICATE_KEYS and key not in IGNORED_KEYS
            and not key.startswith(IGNORED_PREFIXES))


@dataclasses.dataclass
class Row:
    """One line of a comparison: a group's model, or a baseline."""

    name: str
    group: str
    model: str
    baseline: bool
    keys: list
    values: list[dict]


def _rows(groups: dict[str, list[dict]], part: str) -> list[Row]:
    """The model row of every group, then each baseline: once, over every run that has it,
    when it scores the same wherever two groups share a run (it did not see what differs
    between groups), else once per group. Runs made without a baseline just lack it."""
    rows = [Row(f"{label}: {s[0]['model']}", label, s[0]["model"], False,
                [_run_key(x) for x in s], [x[part] for x in s]) for label, s in groups.items()]
    names = []
    for summaries in groups.values():
        for x in summaries:
            names += [n for n in x.get("baselines", {}) if n not in names]
    for name in names:
        per_group = []
        for label, s in groups.items():
            have = [x for x in s if name in x.get("baselines", {})]
            if have:
                per_group.append(Row(f"{label}: baseline {name}", label, name, True,
                                     [_run_key(x) for x in have],
                                     [x["baselines"][name][part] for x in have]))
        union: dict = {}
        same = len(groups) > 1
        for r in per_group:
            for key, value in zip(r.keys, r.values):
                same &= json.dumps(union.setdefault(key, value)) == json.dumps(value)
        if same:
            rows.append(Row(f"baseline {name}", "", name, True, list(union), list(union.values())))
        else:
            rows.extend(per_group)
    return rows


def _run_key(summary: dict) -> tuple:
    """What pairs runs of two groups: the same seed and the same fold of the same split."""
    split = summary.get("split", {})
    return summary.get("seed"), split.get("kind"), split.get("fold")


@dataclasses.dataclass
class Comparison:
    """Statistics of every row and metric; `reference` names the row differences are to."""

    metrics: tuple[str, ...]
    part: str
    reference: str | None
    rows: list[Row]
    stats: dict  # (row name, metric) -> dict of numbers

    def records(self) -> list[dict]:
        """One flat record per (row, metric): the CSV's lines."""
        out = []
        for row in self.rows:
            for m in self.metrics:
                out.append({"row": row.name, "group": row.group, "model": row.model,
                            "baseline": row.baseline, "metric": m, "part": self.part,
                            **self.stats[row.name, m],
                            "reference": self.reference or "",
                            "test": TEST_NAME if self.reference else ""})
        return out


def compare(groups: dict[str, list[dict]], metrics=None, part: str = "test",
            reference: str | None = None) -> Comparison:
    """Per row and metric: n, mean, sd, 95% CI; with a reference row, the paired difference,
    its 95% CI, the paired t-test's p-value and its Holm adjustment over the rows.

    `metrics` defaults to the runs' own `report_metrics` (their task's table columns; the
    perturbation metrics for runs written before summaries recorded them).

    Raises:
      ValueError: `reference` names no row, a metric is missing from a run, or a row's runs do
        not pair one-to-one with the reference's.
    """
    if not metrics:
        first = next(iter(groups.values()))[0]
        metrics = tuple(first.get("report_metrics") or DEFAULT_METRICS)
    metrics = tuple(metrics)
    rows = _rows(groups, part)
    by_name = {r.name: r for r in rows}
    if reference is not None and reference not in by_name and ": baseline " in reference:
        # A group's baseline that is listed once (the same in every group) keeps its old name.
        once = "baseline " + reference.split(": baseline ", 1)[1]
        reference = once if once in by_name else reference
    if reference is not None and reference not in by_name:
        close = difflib.get_close_matches(reference, list(by_name), n=3)
        raise ValueError(f"--paired {reference!r} is not a row"
                         + (f"; close: {close}" if close else "")
                         + f"; rows are {sorted(by_name)}")
    stats = {}
    for row in rows:
        for m in metrics:
            missing = [i for i, v in enumerate(row.values) if m not in v]
            if missing:
                raise ValueError(f"row {row.name!r}: metric {m!r} is missing from a run's "
                                 f"{part} metrics; they have {sorted(row.values[missing[0]])}")
            x = np.array([np.nan if v[m] is None else v[m] for v in row.values], float)
            mean, half = _interval(x)
            stats[row.name, m] = {"n": len(x), "mean": mean, "sd": _sd(x),
                                  "ci95_low": mean - half, "ci95_high": mean + half}
            if reference is None:
                continue
            ref = by_name[reference]
            if row.name == reference:
                stats[row.name, m].update(diff_mean=0.0, diff_ci95_low=math.nan,
                                          diff_ci95_high=math.nan, p_value=math.nan,
                                          pairs=len(row.values), testable=False)
                continue
            d = _paired_difference(row, ref, m)
            dm, dh = _interval(d)
            testable = len(d) >= MIN_PAIRS
            stats[row.name, m].update(diff_mean=dm, diff_ci95_low=dm - dh,
                                      diff_ci95_high=dm + dh,
                                      p_value=_paired_p(d) if testable else math.nan,
                                      pairs=len(d), testable=testable)
    if reference is not None:
        for m in metrics:
            others = [r.name for r in rows if r.name != reference]
            for name, p in zip(others, _holm([stats[n, m]["p_value"] for n in others])):
                stats[name, m]["p_holm"] = p
            stats[reference, m]["p_holm"] = math.nan

        def effect(row):
            d = stats[row.name, metrics[0]]["diff_mean"]
            sign = 1.0 if _higher_is_better(metrics[0]) else -1.0
            return (row.name != reference, sign * d if np.isfinite(d) else math.inf)
        rows = sorted(rows, key=effect)
    return Comparison(metrics, part, reference, rows, stats)


def metric_unit(metric: str) -> str:
    """What a metric's values are measured in, for axis labels."""
    if "pearson" in metric or "spearman" in metric:
        return "correlation (unitless, -1 to 1)"
    if metric.startswith(("precision", "accuracy", "balanced_accuracy", "macro_f1")):
        return "fraction (0 to 1)"
    if metric in ("rmse", "mse", "mae"):
        return "signature units (LINCS: moderated z-score)" + ("²" if metric == "mse" else "")
    return "the metric's units"


def _higher_is_better(metric: str) -> bool:
    try:
        return higher_is_better(metric)
    except KeyError:
        return True


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def _interval(x: np.ndarray) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95% t-interval (NaN for one value)."""
    from scipy import stats

    mean = float(np.mean(x))
    if len(x) < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x)))


def _paired_p(d: np.ndarray) -> float:
    """Two-sided paired t-test p-value of differences d (a one-sample t-test of d against 0)."""
    from scipy import stats

    if len(d) < 2 or not np.all(np.isfinite(d)):
        return math.nan
    if np.std(d, ddof=1) == 0:  # every pair differs by the same amount: no spread to test
        return 1.0 if np.all(d == 0) else 0.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p, float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok])]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[i]))
        out[i] = running
    return out.tolist()


def _paired_difference(row: Row, ref: Row, metric: str) -> np.ndarray:
    """Differences over the runs the two rows share (same seed, split and fold): a sweep still
    running, or a run that failed, leaves a row with fewer pairs, which the table says."""
    for r in (row, ref):
        if len(set(r.keys)) != len(r.keys):
            raise ValueError(f"runs of {r.name!r} repeat a (seed, split, fold): "
                             f"{sorted(r.keys, key=str)}; every run of a group needs its own")
    base = {k: v[metric] for k, v in zip(ref.keys, ref.values)}
    d = [v[metric] - base[k] for k, v in zip(row.keys, row.values) if k in base]
    if not d:
        raise ValueError(f"runs of {row.name!r} (seed, split, fold: {sorted(row.keys, key=str)}) "
                         f"do not pair with those of {ref.name!r} ({sorted(ref.keys, key=str)})")
    return np.array(d, float)


# ---- output --------------------------------------------------------------------------------
def _num(x: float, signed: bool = False) -> str:
    if x is None or not np.isfinite(x):
        return "–"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _p(x: float) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:.2g}" if x >= 1e-3 else f"{x:.1e}"


def markdown(comparison: Comparison) -> str:
    """The comparison as a Markdown table with its legend."""
    c, m0 = comparison, comparison.metrics[0]
    header = list(c.metrics)
    if c.reference:
        header += [f"Δ {m0} vs {c.reference}", "p", "p (Holm)"]
    lines = ["| model | runs | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for row in c.rows:
        cells = []
        for m in c.metrics:
            st = c.stats[row.name, m]
            half = (st["ci95_high"] - st["mean"])
            cells.append(_num(st["mean"]) + (f" ± {half:.3f}" if np.isfinite(half) else ""))
        if c.reference:
            st = c.stats[row.name, m0]
            if row.name == c.reference:
                cells += ["—", "—", "—"]
            else:
                half = st["diff_ci95_high"] - st["diff_mean"]
                short = f" ({st['pairs']} pairs)" if st["pairs"] < st["n"] else ""
                tested = st.get("testable", True)
                cells += [_num(st["diff_mean"], signed=True)
                          + (f" ± {half:.3f}" if np.isfinite(half) else "") + short,
                          _p(st["p_value"]) if tested else NOT_TESTABLE,
                          _p(st["p_holm"]) if tested else NOT_TESTABLE]
        n = c.stats[row.name, m0]["n"]
        lines.append(f"| {row.name} | {n} | " + " | ".join(cells) + " |")
    legend = (f"{c.part.capitalize()} metrics: mean ± the half-width of its 95% t-interval over "
              f"the runs (seeds or folds).")
    if c.reference:
        others = [r for r in c.rows if r.name != c.reference]
        tested = sum(c.stats[r.name, m0].get("testable", True) for r in others)
        legend += (f" Δ: the paired difference (runs of the same seed and fold) to "
                   f"`{c.reference}` in {m0}, ± its 95% t-interval; p: {TEST_NAME} of that "
                   f"difference; p (Holm): adjusted over the {tested} tested rows. Rows are "
                   f"sorted by Δ, the most harmful first.")
        if tested < len(others):
            legend += (f" {NOT_TESTABLE.capitalize()}: fewer than {MIN_PAIRS} runs pair with "
                       f"the reference's, too few for a test (train more seeds or folds).")
    return "\n".join(lines) + "\n\n" + legend


def write_csv(comparison: Comparison, path: str) -> None:
    records = comparison.records()
    fields = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(records)


def forest_plot(comparison: Comparison, path: str, max_metrics: int = 3) -> None:
    """Paired differences to the reference with their 95% intervals, one panel per metric (the
    first `max_metrics`), rows in the table's order; baselines in grey."""
    from matplotlib.figure import Figure  # no pyplot: a notebook's backend stays as it is

    c = comparison
    rows = [r for r in c.rows if r.name != c.reference]
    metrics = c.metrics[:max_metrics]
    fig = Figure(figsize=(4.2 * len(metrics) + 2.5, 0.32 * len(rows) + 1.6))
    axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)
    y = np.arange(len(rows))[::-1]
    for ax, m in zip(axes[0], metrics):
        for yi, row in zip(y, rows):
            st = c.stats[row.name, m]
            lo, hi = st["diff_ci95_low"], st["diff_ci95_high"]
            colour = "0.55" if row.baseline else "C0"
            if np.isfinite(lo):
                ax.plot([lo, hi], [yi, yi], color=colour, lw=1.6)
            ax.plot(st["diff_mean"], yi, "o", color=colour, ms=4.5)
        ax.axvline(0.0, color="k", lw=0.8, ls="--")
        better = "higher" if _higher_is_better(m) else "lower"
        ax.set_xlabel(f"Δ {m}, {metric_unit(m)}\n(run − its paired reference run; {better} is "
                      f"better)", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y)
    axes[0][0].set_yticklabels([r.name for r in rows], fontsize=8)
    fig.suptitle(f"Paired difference to {c.reference} ({c.part}; mean, 95% CI)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_outputs(comparison: Comparison, directory: str) -> list[str]:
    """comparison.csv, comparison.md and (with a reference) comparison_forest.png in
    `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, "comparison.csv"), os.path.join(directory, "comparison.md")]
    write_csv(comparison, paths[0])
    with open(paths[1], "w") as f:
        f.write(markdown(comparison) + "\n")
    if comparison.reference and len(comparison.rows) > 1:
        paths.append(os.path.join(directory, "comparison_forest.png"))
        forest_plot(comparison, paths[-1])
    return paths


def compare_roots(roots, *, wandb=(), metrics=None, part: str = "test",
                  paired: str | None = None) -> tuple[Comparison, dict[str, list[dict]]]:
    """Loads and groups the runs under `roots` (and W&B groups), and compares them: what
    `perturbjax compare` and `perturbjax.compare` do. `paired` is a row or a group's name (its
    model's row); default: the ablation sweep's "none" group, if any. Returns the comparison
    and the groups.

    Raises:
      FileNotFoundError: a root holds no summary.json.
      ValueError: a malformed run file, W&B group or reference (named).
    """
    if not roots and not wandb:
        raise ValueError("give a ROOT of run directories or --wandb ENTITY/PROJECT/GROUP")
    runs = load_runs(roots) if roots else []
    for spec in wandb:
        runs += load_wandb_runs(spec)
    groups, reference = group_runs(runs)
    if paired in groups:  # a group's label stands for its model's row
        paired = f"{paired}: {groups[paired][0]['model']}"
    elif paired is None and reference is not None:
        paired = f"{reference}: {groups[reference][0]['model']}"
    return compare(groups, metrics=[m for m in metrics or () if m] or None, part=part,
                   reference=paired), groups


def comparison_table(groups: dict[str, list[dict]], metrics=None, part: str = "test",
                     paired: str | None = None) -> str:
    """The Markdown table of `compare(groups, metrics, part, paired)`."""
    return markdown(compare(groups, metrics, part, paired))


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


