"""The train loop on the seconds-long demo variant: one step, ten steps, a full run, the CLI."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from perturbjax import cli
from perturbjax.config import apply_overrides, load_config
from perturbjax.eval.compare import provenance
from perturbjax.tasks import make_task
from perturbjax.training.batching import train_batches
from perturbjax.training.loop import make_steps, predict, train_and_evaluate
from perturbjax.training.optim import make_optimizer

DEMO = os.path.join(os.path.dirname(__file__), "..", "experiments", "demo.py")


@pytest.fixture(scope="module")
def config():
    return load_config(f"{DEMO}:test")


@pytest.fixture(scope="module")
def task(config):
    return make_task(config)


def _steps(task, config):
    model = task.build_model(nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx, _ = make_optimizer(config.train)
    train_step, predict_step = make_steps(task, graphdef, rest, tx)
    return params, tx.init(params), train_step, predict_step


def test_one_step_is_finite_and_metrics_in_range(task, config):
    params, opt_state, train_step, predict_step = _steps(task, config)
    batch = next(train_batches(task, 0))
    params, opt_state, stats = train_step(params, opt_state, jax.random.key(0), task.inputs, batch)
    for name, value in stats.items():
        assert np.isfinite(value), name
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))
    metrics = task.metrics("validation", predict(predict_step, params, task, "validation", 0))
    for name, value in metrics.items():
        assert np.isfinite(value), name
        if name != "rmse":
            assert -1.0 <= value <= 1.0, name
    assert metrics["rmse"] > 0


def test_ten_steps_lower_the_loss(task):
    config = apply_overrides(load_config(f"{DEMO}:test"),
                             ["train.warmup_steps=1", "train.num_steps=10", "model.dropout=0.0"])
    params, opt_state, train_step, _ = _steps(task, config)
    batch = next(train_batches(task, 0))
    losses = []
    for i in range(10):
        params, opt_state, stats = train_step(params, opt_state, jax.random.key(i), task.inputs, batch)
        losses.append(float(stats["loss"]))
    assert losses[-1] < 0.8 * losses[0], losses


def test_full_run_writes_run_directory_and_compiles_once(tmp_path, config):
    summary = train_and_evaluate(config, str(tmp_path), experiment="demo", variant="test",
                                 progress=False)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "metrics.jsonl", "model.npz",
                                            "parts.json", "predictions.npz", "split.json", "summary.json"]
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    split = json.loads((tmp_path / "split.json").read_text())
    assert split["kind"] == "cold_drug" and len(split["test"]) == on_disk["split"]["test"]
    assert on_disk["test"] == summary["test"]
    assert set(on_disk["baselines"]) == {"mean", "ridge"}
    for name in ("validation", "test"):
        assert "pearson_centered" in on_disk[name] and "precision_up@100" in on_disk[name]
        assert "pearson_centered" in on_disk["baselines"]["ridge"][name]
    # The saved predictions score exactly as the summary says, rows in the split's order.
    task = make_task(config)
    with np.load(tmp_path / "predictions.npz") as saved:
        assert sorted(saved) == sorted(f"{who}/{part}" for who in ("index", "model", "baseline/mean",
                                                                    "baseline/ridge")
                                       for part in ("validation", "test"))
        for part in ("validation", "test"):
            assert list(saved[f"index/{part}"]) == split[part]
            assert task.metrics(part, saved[f"model/{part}"]) == on_disk[part]
            assert task.metrics(part, saved[f"baseline/ridge/{part}"]) == on_disk["baselines"]["ridge"][part]
    # The same shapes every step: one compilation of the train step for the whole run.
    assert on_disk["compilations"] == {"train_step": 1, "predict_step": 1}
    assert json.loads((tmp_path / "config.json").read_text())["train"]["num_steps"] == 30
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train] == [10, 20, 30]
    assert {"loss", "learning_rate", "grad_norm", "param_norm", "update_norm"} <= set(train[0])
    # Throughput of each logging interval (what W&B gets is these same records).
    for r in train:
        assert all(r[k] > 0 for k in ("step_time_s", "steps_per_s", "examples_per_s")), r
        assert np.isclose(r["examples_per_s"], r["steps_per_s"] * config.train.batch_size)
        assert np.isclose(r["step_time_s"] * r["steps_per_s"], 1.0)
    assert [r["step"] for r in records if r["split"] == "validation"] == [15, 30]
    # Model selection used validation only: the selected step is one that was evaluated.
    assert on_disk["selected_step"] in (15, 30)


def test_a_baseline_can_be_the_run_model(tmp_path):
    config = apply_overrides(load_config(f"{DEMO}:test"), ["model.name=target_ridge", "baselines=[]"])
    summary = train_and_evaluate(config, str(tmp_path), progress=False)
    assert summary["model"] == "target_ridge" and "alpha" in summary["chosen"]
    assert np.isfinite(summary["test"]["pearson_centered"])


def test_cli_trains_and_rejects_unknown_overrides(tmp_path, capsys, data_dir_unchanged):
    workdir = tmp_path / "run"
    cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(workdir), "--no-progress",
              "--config.train.num_steps=12", "--config.baselines", "mean"])
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["step"] == 12 and list(summary["baselines"]) == ["mean"]
    out = capsys.readouterr().out
    assert "test metrics" in out and "of a cold_drug split; model selected on validation" in out
    assert "  rmse: root mean squared error" in out and "(lower is better)" in out  # legend
    with pytest.raises(SystemExit, match="train.num_stepz"):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "x"),
                  "--config.train.num_stepz=3"])
    with pytest.raises(SystemExit, match="unrecognised argument"):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(tmp_path / "x"), "--steps=3"])
    assert not (tmp_path / "x").exists()  # nothing ran


def test_compare_reports_mean_and_95_interval_over_runs(tmp_path, capsys):
    for seed, value in ((0, 0.5), (1, 0.7)):
        run = tmp_path / "exp" / f"seed{seed}"
        run.mkdir(parents=True)
        metrics = {"pearson_centered": value, "rmse": 1.0}
        (run / "summary.json").write_text(json.dumps(
            {"model": "hetero_gat", "test": metrics, "validation": metrics,
             "baselines": {"mean": {"test": {"pearson_centered": 0.0, "rmse": 2.0}}}}))
    cli.main(["compare", str(tmp_path / "exp"), "--metrics", "pearson_centered,rmse"])
    out = capsys.readouterr().out
    # ± is the 95% t-interval's half-width: t(0.975, 1) * sd / sqrt(2) = 12.706 * 0.1.
    assert "| exp: hetero_gat | 2 | 0.600 ± 1.271 | 1.000 ± 0.000 |" in out
    assert "| exp: baseline mean | 2 | 0.000 ± 0.000 | 2.000 ± 0.000 |" in out
    assert "mean ± the half-width of its 95% t-interval" in out
    with pytest.raises(SystemExit, match="no summary.json") as info:  # one line, exit 2
        cli.main(["compare", str(tmp_path / "missing")])
    assert info.value.code == 2


def test_compare_pairs_runs_by_seed_and_fold(tmp_path, capsys):
    # Model beats the baseline by 0.1 or 0.2 on folds whose scores themselves spread widely.
    for fold, (model, base) in enumerate([(0.3, 0.2), (0.7, 0.5)]):
        run = tmp_path / "cv" / f"fold{fold}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(
            {"model": "kg_ridge", "seed": 0, "split": {"kind": "cold_drug", "fold": fold},
             "test": {"pearson_centered": model},
             "baselines": {"zero": {"test": {"pearson_centered": base}}}}))
    # Another group lists its folds in the other order: pairing is by fold, not position.
    for fold, value in ((1, 0.9), (0, 0.1)):
        run = tmp_path / "other" / f"z{1 - fold}"
        run.mkdir(parents=True)
        (run / "summary.json").write_text(json.dumps(
            {"model": "rgcn", "seed": 0, "split": {"kind": "cold_drug", "fold": fold},
             "test": {"pearson_centered": value}, "baselines": {}}))
    cli.main(["compare", str(tmp_path / "cv"), str(tmp_path / "other"),
              "--metrics", "pearson_centered", "--paired", "cv: baseline zero"])
    out = capsys.readouterr().out
    # The baseline only cv has is listed once, as "baseline zero"; cv's name for it still works.
    assert "| Δ pearson_centered vs baseline zero | p | p (Holm) |" in out
    # Differences 0.1 and 0.2: mean 0.15, half-width 12.706 * 0.0707 / sqrt(2).
    # Two pairs are too few for a test: "not testable", and the caption says why.
    assert ("| cv: kg_ridge | 2 | 0.500 ± 2.541 | +0.150 ± 0.635 | not testable | not testable |"
            in out)
    assert "Not testable: fewer than 3 runs pair with the reference's" in out
    assert "| baseline zero | 2 | 0.350 ± 1.906 | — | — | — |" in out
    assert "| other: rgcn | 2 | 0.500 ± 5.082 | +0.150 ± 3.177 |" in out  # 0.9-0.5, 0.1-0.2
    assert out.index("baseline zero |") < out.index("cv: kg_ridge")  # the reference first
    with pytest.raises(SystemExit, match="is not a row"):
        cli.main(["compare", str(tmp_path / "cv"), "--paired", "cv: baseline mean"])
    # A group with a fold the reference lacks pairs over the folds they share, and says so.
    run = tmp_path / "other" / "z9"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps(
        {"model": "rgcn", "seed": 0, "split": {"kind": "cold_drug", "fold": 7},
         "test": {"pearson_centered": 0.3}, "baselines": {}}))
    capsys.readouterr()
    cli.main(["compare", str(tmp_path / "cv"), str(tmp_path / "other"),
              "--metrics", "pearson_centered", "--paired", "cv: baseline zero"])
    assert "| other: rgcn | 3 | 0.433 ± 1.034 | +0.150 ± 3.177 (2 pairs) |" in capsys.readouterr().out
    (tmp_path / "cv" / "fold1" / "summary.json").write_text(json.dumps(
        {"model": "kg_ridge", "seed": 0, "split": {"kind": "cold_drug", "fold": 0},
         "test": {"pearson_centered": 0.7}, "baselines": {"zero": {"test": {"pearson_centered": 0.5}}}}))
    with pytest.raises(SystemExit, match="repeat a"):  # two runs of fold 0, seed 0
        cli.main(["compare", str(tmp_path / "cv"), str(tmp_path / "other"),
                  "--metrics", "pearson_centered", "--paired", "other: rgcn"])


def test_compare_writes_a_readme_section(tmp_path, capsys):
    for fold, value in ((0, 0.2), (1, 0.4)):
        run = tmp_path / "runs" / f"fold{fold}"
        run.mkdir(parents=True)
        metrics = {"pearson_centered": value}
        (run / "summary.json").write_text(json.dumps(
            {"model": "rgcn", "test": metrics, "baselines": {}, "wall_time_s": 10 + 20 * fold,
             "host": {"cpus": 2, "jax_backend": "cpu", "devices": ["cpu"], "jax": "0"}}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:x -->\nold table\n<!-- /results:x -->\noutro\n")
    args = [str(tmp_path / "runs"), "--metrics", "pearson_centered", "--write", f"{readme}:x"]
    cli.main(["compare", *args])
    text = readme.read_text()
    assert text.startswith("intro\n<!-- results:x -->\n| model |") and text.endswith("<!-- /results:x -->\noutro\n")
    assert "old table" not in text and "| runs: rgcn | 2 | 0.300 ± 1.271 |" in text
    assert "2 runs on 2 CPU cores (JAX on CPU). Mean wall time per run" in text and "runs 20 s." in text
    pod = {"cpus": 96, "jax_backend": "tpu", "devices": ["TPU v4"], "processes": 4}
    assert provenance({"pod": [{"host": pod, "wall_time_s": 60}]}, "c").startswith(
        "1 runs on 4 processes of 96 CPU cores and tpu (TPU v4).")
    assert f"Written by `perturbjax compare {tmp_path / 'runs'} --part test" in text
    with pytest.raises(SystemExit, match="no '<!-- results:y -->'"):
        cli.main(["compare", *args[:-1], f"{readme}:y"])


def test_an_ensemble_is_chosen_on_validation_and_scored_once(tmp_path, config):
    blended = apply_overrides(config, ["ensemble=[ridge]", "train.num_steps=10",
                                       "train.eval_every=10"])
    summary = train_and_evaluate(blended, str(tmp_path), progress=False)
    weights = summary["ensemble_weights"]
    assert list(weights) == ["model", "ridge"] and np.isclose(sum(weights.values()), 1.0)
    # The grid holds the model alone and the baseline alone: the blend is at least as good as
    # either on validation, where it was chosen.
    val = summary["validation"]["pearson_centered"]
    assert val >= summary["model_alone"]["validation"]["pearson_centered"] - 1e-9
    assert val >= summary["baselines"]["ridge"]["validation"]["pearson_centered"] - 1e-9
    task = make_task(blended)
    with np.load(tmp_path / "predictions.npz") as saved:
        for part in ("validation", "test"):
            # The saved "model" rows are the blend: they score as the summary says.
            assert task.metrics(part, saved[f"model/{part}"]) == summary[part]
            assert task.metrics(part, saved[f"model_alone/{part}"]) == summary["model_alone"][part]
            mix = (weights["model"] * saved[f"model_alone/{part}"].astype(np.float64)
                   + weights["ridge"] * saved[f"baseline/ridge/{part}"])
            np.testing.assert_allclose(saved[f"model/{part}"], mix, rtol=1e-5, atol=1e-6)
    bad = apply_overrides(config, ["ensemble=[mlp]"])
    with pytest.raises(ValueError, match=r"config key ensemble is \['mlp'\]; expected names from baselines"):
        train_and_evaluate(bad, str(tmp_path / "bad"), progress=False)
