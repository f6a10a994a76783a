"""Graph ablations (drop, keep, degree-preserving shuffle, feature randomisation), the demo's
ablation sweep, and `perturbjax compare`'s statistics, files and plot."""

import csv
import json
import math
import os

import numpy as np
import pytest
from scipy import stats

from perturbjax import cli
from perturbjax.config import load_config, load_sweep
from perturbjax.data.demo import DemoConfig, make_demo
from perturbjax.eval.compare import compare, group_runs, load_runs
from perturbjax.graph.ablation import apply_ablation
from perturbjax.graph.hetero import EdgeSet, EdgeType, HeteroGraph, NodeSet
from perturbjax.launch import expand
from tests.test_cli_errors import one_line_error

EXPERIMENT = os.path.join(os.path.dirname(__file__), "..", "experiments", "ablate_edge_types.py")
GROUPS = {"targets": ["inhibits", "activates"], "network": ["interacts"]}


@pytest.fixture(scope="module")
def graph():
    return make_demo(DemoConfig(n_drugs=60, n_genes=200, n_druggable=100, n_readout=50)).graph


def _degrees(es: EdgeSet, n: int) -> tuple:
    return (np.bincount(es.senders, minlength=n).tolist(),
            np.bincount(es.receivers, minlength=n).tolist())


def test_drop_and_keep_take_each_relation_with_its_reverse(graph):
    dropped, report, _ = apply_ablation(graph, "drop:targets", GROUPS, seed=0)
    gone = {str(k) for k in graph.edges} - {str(k) for k in dropped.edges}
    assert gone == {"drug--inhibits-->gene", "gene--rev_inhibits-->drug",
                    "drug--activates-->gene", "gene--rev_activates-->drug"}
    assert set(report["edge_types"]) == gone and report["kind"] == "drop"
    # A reverse name selects its forward too; '+' joins selections.
    dropped, _, _ = apply_ablation(graph, "drop:rev_participates+network", GROUPS, seed=0)
    assert {k.relation for k in graph.edges} - {k.relation for k in dropped.edges} == {
        "participates", "rev_participates", "interacts"}
    kept, _, _ = apply_ablation(graph, "keep:network", GROUPS, seed=0)
    assert [str(k) for k in kept.edges] == ["gene--interacts-->gene"]
    assert kept.nodes is not None and kept.num_nodes == graph.num_nodes
    unchanged, report, _ = apply_ablation(graph, "none", GROUPS, seed=0)
    assert unchanged is graph and report["kind"] == "none"


def test_shuffle_keeps_every_degree_and_rewires(graph):
    n = max(ns.count for ns in graph.nodes.values())
    out, report, _ = apply_ablation(graph, "shuffle:inhibits+interacts", GROUPS, seed=3)
    for key in graph.edges:
        before, after = graph.edges[key], out.edges[key]
        assert _degrees(before, n) == _degrees(after, n), key
        moved = not (np.array_equal(before.senders, after.senders)
                     and np.array_equal(before.receivers, after.receivers))
        assert moved == (key.relation in ("inhibits", "rev_inhibits", "interacts")), key
    # The reverse is the mirror of the shuffled forward (no true partner survives through it).
    fwd = out.edges[EdgeType("drug", "inhibits", "gene")]
    rev = out.edges[EdgeType("gene", "rev_inhibits", "drug")]
    assert sorted(zip(fwd.senders.tolist(), fwd.receivers.tolist())) == sorted(
        zip(rev.receivers.tolist(), rev.senders.tolist()))
    # The symmetric gene network stays symmetric; undirected degrees are those of the original.
    net = out.edges[EdgeType("gene", "interacts", "gene")]
    pairs = set(zip(net.senders.tolist(), net.receivers.tolist()))
    assert all((b, a) in pairs for a, b in pairs)
    old = graph.edges[EdgeType("gene", "interacts", "gene")]
    assert len(pairs & set(zip(old.senders.tolist(), old.receivers.tolist()))) < 0.2 * len(pairs)
    assert report["repeated_edges"] >= 0 and report["self_loops"] >= 0
    again, _, _ = apply_ablation(graph, "shuffle:inhibits+interacts", GROUPS, seed=3)
    assert np.array_equal(again.edges[EdgeType("drug", "inhibits", "gene")].senders, fwd.senders)
    other, _, _ = apply_ablation(graph, "shuffle:inhibits+interacts", GROUPS, seed=4)
    assert not np.array_equal(other.edges[EdgeType("drug", "inhibits", "gene")].senders,
                              fwd.senders)


def test_randomize_permutes_a_types_feature_rows(graph):
    out, report, order = apply_ablation(graph, "randomize:gene", GROUPS, seed=0)
    a, b = graph.nodes["gene"].features["embedding"], out.nodes["gene"].features["embedding"]
    assert not np.array_equal(a, b)
    # The same rows, each on another node: the distribution is kept, the identity is not.
    assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist()))
    assert (np.all(a == b, axis=1)).mean() < 0.1
    assert np.array_equal(b, a[order["gene"]])  # node i got node order[i]'s features
    assert np.array_equal(out.nodes["pathway"].features["embedding"],
                          graph.nodes["pathway"].features["embedding"])
    assert all(np.array_equal(out.edges[k].senders, es.senders) for k, es in graph.edges.items())
    assert report["features"] == ["embedding"] and report["nodes"] == 200


@pytest.mark.parametrize("spec, message", [
    ("drop:nothing", "'nothing', which is not a group"),
    ("explode:targets", "KIND one of"),
    ("keep:", "expected keep:NAME"),
    ("none:targets", "'none' takes no selection"),
    ("randomize:gene+pathway", "one node type"),
    ("randomize:planet", "not a node type"),
])
def test_bad_ablations_name_what_is_wrong(graph, spec, message):
    with pytest.raises(ValueError, match=message):
        apply_ablation(graph, spec, GROUPS, seed=0)


def test_randomizing_a_featureless_type_or_keeping_everything_is_an_error():
    nodes = {"a": NodeSet(np.array(["x", "y"])), "b": NodeSet(np.array(["z"]), {
        "f": np.ones((1, 2), np.float32)})}
    g = HeteroGraph(nodes, {EdgeType("a", "r", "b"): EdgeSet(np.array([0, 1]), np.array([0, 0]))})
    with pytest.raises(ValueError, match="carry no input features"):
        apply_ablation(g, "randomize:a", {}, seed=0)
    with pytest.raises(ValueError, match="keeps every edge type"):
        apply_ablation(g, "keep:r", {}, seed=0)
    with pytest.raises(ValueError, match="graph.edge_groups.g lists"):
        apply_ablation(g, "drop:g", {"g": ["missing"]}, seed=0)


def test_a_bad_ablation_in_a_run_is_one_line(tmp_path, capsys):
    line = one_line_error(capsys, ["train", "--config", f"{EXPERIMENT}:test", "--workdir",
                                   str(tmp_path / "w"), "--config.graph.ablation=dorp:targets"])
    assert "graph.ablation" in line and "dorp:targets" in line
    line = one_line_error(capsys, ["train", "--config", f"{EXPERIMENT}:test", "--workdir",
                                   str(tmp_path / "w2"), "--config.graph.ablation=drop:bindz"])
    assert "'bindz'" in line


def test_every_ablation_of_the_demo_sweep_applies(graph):
    full = load_sweep(EXPERIMENT)
    small = load_sweep(f"{EXPERIMENT}:test")
    assert len(small) < len(full) and len(full) % 3 == 0  # 3 seeds, 2 in the test sweep
    config = load_config(EXPERIMENT)
    names = sorted({e[0].split("=", 1)[1] for e in full})
    assert {n.split(":")[0] for n in names} == {"none", "drop", "keep", "shuffle", "randomize"}
    for name in names:
        apply_ablation(graph, name, config.graph.edge_groups.to_dict(), seed=0)
    runs = expand(f"{EXPERIMENT}:test", "ROOT", sweep=True)
    assert runs[0].name == "graph.ablation=none,seed=0"
    assert "graph.ablation=drop:drug_gene,seed=1" in {r.name for r in runs}


def _write_run(root, name, *, ablation, seed, value, baseline=0.1, config_extra=None):
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "graph": {"ablation": ablation}, "model": {"name": "hetero_gat"},
              "baselines": ["mean"] if ablation == "none" else [], **(config_extra or {})}
    (run / "config.json").write_text(json.dumps(config))
    summary = {"model": "hetero_gat", "seed": seed, "split": {"kind": "cold_drug", "fold": None},
               "test": {"pearson_centered": value, "rmse": 1.0 - value},
               "baselines": ({"mean": {"test": {"pearson_centered": baseline, "rmse": 0.9}}}
                             if ablation == "none" else {})}
    (run / "summary.json").write_text(json.dumps(summary))


def test_compare_groups_by_ablation_with_intervals_and_paired_tests(tmp_path, capsys):
    root = tmp_path / "sweep"
    full = [0.50, 0.62, 0.55, 0.70]
    hurt = [0.30, 0.45, 0.31, 0.52]   # pairs: -0.20, -0.17, -0.24, -0.18
    noise = [0.52, 0.60, 0.57, 0.69]  # pairs: +0.02, -0.02, +0.02, -0.01
    for seed in range(4):
        _write_run(root, f"none,s{seed}", ablation="none", seed=seed, value=full[seed])
        _write_run(root, f"drop,s{seed}", ablation="drop:targets", seed=seed, value=hurt[seed])
        _write_run(root, f"shuf,s{seed}", ablation="shuffle:network", seed=seed,
                   value=noise[seed])
    groups, reference = group_runs(load_runs([str(root)]))
    assert sorted(groups) == ["drop:targets", "none", "shuffle:network"] and reference == "none"
    c = compare(groups, ["pearson_centered", "rmse"], reference="none: hetero_gat")
    # The reference, then by effect: the baseline (-0.49), the harmful drop, the harmless shuffle.
    assert [r.name for r in c.rows] == ["none: hetero_gat", "baseline mean",
                                        "drop:targets: hetero_gat", "shuffle:network: hetero_gat"]
    st = c.stats["drop:targets: hetero_gat", "pearson_centered"]
    d = np.array(hurt) - np.array(full)
    half = stats.t.ppf(0.975, 3) * d.std(ddof=1) / 2
    assert st["diff_mean"] == pytest.approx(d.mean())
    assert st["diff_ci95_high"] - st["diff_mean"] == pytest.approx(half)
    assert st["p_value"] == pytest.approx(stats.ttest_rel(hurt, full).pvalue)
    x = np.array(hurt)
    assert st["ci95_low"] == pytest.approx(x.mean() - stats.t.ppf(0.975, 3) * x.std(ddof=1) / 2)
    # Holm over the three non-reference rows.
    ps = sorted((c.stats[r.name, "pearson_centered"]["p_value"], r.name) for r in c.rows[1:])
    assert c.stats[ps[0][1], "pearson_centered"]["p_holm"] == pytest.approx(min(1, 3 * ps[0][0]))
    assert c.stats[ps[-1][1], "pearson_centered"]["p_holm"] >= c.stats[ps[1][1],
                                                                       "pearson_centered"]["p_holm"]
    assert c.stats["shuffle:network: hetero_gat", "pearson_centered"]["p_value"] > 0.5
    # rmse is lower-is-better: the harmful ablation sorts first there too (first metric rules).
    cli.main(["compare", str(root), "--metrics", "pearson_centered,rmse"])
    out = capsys.readouterr().out
    assert "| drop:targets: hetero_gat | 4 | " in out
    assert "Δ pearson_centered vs none: hetero_gat" in out
    assert out.index("drop:targets") < out.index("shuffle:network")
    assert "paired t-test (two-sided)" in out and "Holm" in out
    for name in ("comparison.csv", "comparison.md", "comparison_forest.png"):
        assert (root / name).stat().st_size > 0, name
    assert (root / "comparison_forest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(root / "comparison.csv") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 4 * 2
    rec = next(r for r in records if r["row"] == "drop:targets: hetero_gat"
               and r["metric"] == "pearson_centered")
    assert float(rec["p_value"]) == pytest.approx(st["p_value"])
    assert rec["test"] == "paired t-test (two-sided)" and rec["reference"] == "none: hetero_gat"
    assert {"ci95_low", "ci95_high", "diff_ci95_low", "diff_ci95_high", "p_holm"} <= set(rec)
    # --out elsewhere; a group's name as the reference.
    cli.main(["compare", str(root), "--paired", "drop:targets", "--out", str(tmp_path / "o"),
              "--metrics", "pearson_centered"])
    assert "vs drop:targets: hetero_gat" in capsys.readouterr().out
    assert (tmp_path / "o" / "comparison.md").exists()


def test_compare_one_run_per_group_has_no_interval(tmp_path, capsys):
    root = tmp_path / "single"
    _write_run(root, "a", ablation="none", seed=0, value=0.5)
    _write_run(root, "b", ablation="drop:targets", seed=0, value=0.4)
    groups, reference = group_runs(load_runs([str(root)]))
    c = compare(groups, ["pearson_centered"], reference=f"{reference}: hetero_gat")
    st = c.stats["drop:targets: hetero_gat", "pearson_centered"]
    assert st["diff_mean"] == pytest.approx(-0.1) and math.isnan(st["p_value"])
    assert math.isnan(st["ci95_low"])
    cli.main(["compare", str(root), "--metrics", "pearson_centered"])
    out = capsys.readouterr().out
    assert "| drop:targets: hetero_gat | 1 | 0.400 | -0.100 | not testable | not testable |" in out
    assert "Not testable: fewer than 3 runs pair" in out and not st["testable"]


def test_compare_ignores_config_keys_that_older_runs_lack(tmp_path):
    # A sweep that spans a code change adding model.decoder: its runs still pair up.
    root = tmp_path / "sweep"
    newer = {"model": {"name": "hetero_gat", "decoder": "bilinear"}}
    _write_run(root, "a", ablation="none", seed=0, value=0.5)
    _write_run(root, "b", ablation="none", seed=1, value=0.6, config_extra=newer)
    _write_run(root, "c", ablation="drop:targets", seed=0, value=0.4, config_extra=newer)
    groups, reference = group_runs(load_runs([str(root)]))
    assert sorted(groups) == ["drop:targets", "none"] and reference == "none"
    assert len(groups["none"]) == 2


def test_compare_labels_groups_by_root_when_each_root_is_one_group(tmp_path, capsys):
    for root, value in (("gat", 0.5), ("ridge", 0.6)):
        for seed in range(2):
            _write_run(tmp_path / root, f"s{seed}", ablation="none", seed=seed,
                       value=value + seed / 10, config_extra={"model": {"name": root}})
    groups, reference = group_runs(load_runs([str(tmp_path / "gat"), str(tmp_path / "ridge")]))
    assert sorted(groups) == ["gat", "ridge"] and reference is None
    # The baseline scores the same in both groups: one row.
    c = compare(groups, ["pearson_centered"])
    assert [r.name for r in c.rows] == ["gat: hetero_gat", "ridge: hetero_gat", "baseline mean"]


def test_the_demo_ablation_sweep_runs_and_compares(tmp_path, capsys):
    """Four runs of the sweep (two ablations x two seeds), trained in this process as the
    launcher's subprocesses would train them, then compared."""
    root = tmp_path / "root"
    runs = [r for r in expand(f"{EXPERIMENT}:test", str(root), sweep=True)
            if r.name.split(",")[0] in ("graph.ablation=none", "graph.ablation=shuffle:drug_gene")]
    assert len(runs) == 4
    for run in runs:
        cli.main(["train", "--config", f"{EXPERIMENT}:test", "--workdir", run.workdir,
                  "--no-progress", "--config.train.num_steps=6", "--config.baselines=['mean']",
                  *[f"--config.{o}" for o in run.overrides]])
    summary = json.loads((root / "graph.ablation=shuffle:drug_gene,seed=1" / "summary.json")
                         .read_text())
    assert summary["ablation"]["kind"] == "shuffle" and summary["baselines"] == {}
    assert len(summary["config_hash"]) == 16
    assert summary["graph"]["edges"]["drug--inhibits-->gene"] > 0
    capsys.readouterr()
    cli.main(["compare", str(root)])
    out = capsys.readouterr().out
    assert "| none: hetero_gat | 2 |" in out and "| shuffle:drug_gene: hetero_gat | 2 |" in out
    assert "| baseline mean | 2 |" in out
    assert (root / "comparison_forest.png").exists()


def test_compare_reads_a_wandb_group(tmp_path, capsys, monkeypatch):
    """Runs as `perturbjax train` logs them to W&B (config, final metrics, baselines), through
    a stand-in for `wandb.Api`."""
    import sys
    import types

    def run(seed, ablation, value, finished=True):
        summary = {"final_test_baseline/mean/pearson_centered": 0.1} if ablation == "none" else {}
        if finished:
            summary |= {"final_test/pearson_centered": value, "final_validation/pearson_centered": 0}
        config = {"seed": seed, "model": {"name": "hetero_gat"}, "graph": {"ablation": ablation},
                  "data": {"split": "cold_drug", "fold": 0, "num_folds": 0}}
        return types.SimpleNamespace(summary=summary, config=config, id=f"{ablation}{seed}",
                                     path=["me", "proj", f"{ablation}{seed}"])

    listed = []

    class Api:
        def runs(self, path, filters):
            listed.append((path, filters))
            return [run(0, "none", 0.5), run(1, "none", 0.6), run(0, "drop:targets", 0.3),
                    run(1, "drop:targets", 0.35), run(2, "drop:targets", 0.0, finished=False)]

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Api))
    monkeypatch.chdir(tmp_path)
    cli.main(["compare", "--wandb", "me/proj/ablate_demo", "--metrics", "pearson_centered"])
    out = capsys.readouterr().out
    assert listed == [("me/proj", {"group": "ablate_demo"})]
    assert "| drop:targets: hetero_gat | 2 | 0.325 ± 0.318 | -0.225 ± 0.318 |" in out
    assert "| baseline mean | 2 | 0.100 ± 0.000 |" in out
    assert (tmp_path / "comparison-ablate_demo" / "comparison.csv").exists()
    assert "ENTITY/PROJECT/GROUP" in one_line_error(capsys, ["compare", "--wandb", "proj/g"])

    class Offline:
        def runs(self, path, filters):
            raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(Api=Offline))
    assert "cannot list the group's runs (ConnectionError: no network)" in one_line_error(
        capsys, ["compare", "--wandb", "me/proj/g"])


def test_compare_pools_a_baseline_over_runs_that_have_it(tmp_path):
    # One group's runs were made with the baseline on seed 0 only (a rerun without
    # baselines): one row over both seeds, no error.
    for root, value in (("gat", 0.5), ("ridge", 0.6)):
        for seed in range(2):
            _write_run(tmp_path / root, f"s{seed}", ablation="none", seed=seed,
                       value=value + seed / 10, baseline=0.1 + seed / 10,
                       config_extra={"model": {"name": root}})
    rerun = tmp_path / "ridge" / "s1" / "summary.json"
    summary = json.loads(rerun.read_text())
    summary["baselines"] = {}
    rerun.write_text(json.dumps(summary))
    groups, _ = group_runs(load_runs([str(tmp_path / "gat"), str(tmp_path / "ridge")]))
    c = compare(groups, ["pearson_centered"])
    mean = [r for r in c.rows if r.baseline]
    assert [r.name for r in mean] == ["baseline mean"] and len(mean[0].values) == 2
    # A baseline that scores differently where two groups share a run: one row per group.
    summary["baselines"] = {"mean": {"test": {"pearson_centered": 0.9, "rmse": 0.9}}}
    rerun.write_text(json.dumps(summary))
    groups, _ = group_runs(load_runs([str(tmp_path / "gat"), str(tmp_path / "ridge")]))
    names = [r.name for r in compare(groups, ["pearson_centered"]).rows if r.baseline]
    assert names == ["gat: baseline mean", "ridge: baseline mean"]
