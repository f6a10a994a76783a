"""A user's mistake ends a command with one line naming what was wrong, and exit status 2."""

import json
import logging

import pytest

from perturbjax.cli import main
from perturbjax.config import load_config
from perturbjax.tasks import make_task
from perturbjax.training.batching import eval_batches, train_batches

DEMO = "experiments/demo.py:test"


def one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perturbjax: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("override, key", [
    ("train.batch_size=-4", "train.batch_size"),  # looped forever
    ("train.batch_size=0", "train.batch_size"),  # ZeroDivisionError
    ("train.num_steps=0", "train.num_steps"),
    ("train.learning_rate=-0.1", "train.learning_rate"),
    ("data.validation_fraction=1.5", "data.validation_fraction"),
    ("model.name=gatt", "model.name"),
    ("data.source=hetionet", "data.source"),
    ("graph.sampling.budget=tight", "graph.sampling.budget"),  # ignored in full mode before
])
def test_bad_config_values_are_one_line_before_anything_is_written(tmp_path, capsys, override,
                                                                   key):
    workdir = tmp_path / "run"
    line = one_line_error(capsys, ["train", "--config", DEMO, "--workdir", str(workdir),
                                   f"--config.{override}", "--no-progress"])
    assert key in line and "expected" in line
    assert not workdir.exists()


def test_debug_shows_the_traceback_instead(tmp_path):
    with pytest.raises(ValueError, match="train.batch_size"):
        main(["--debug", "train", "--config", DEMO, "--workdir", str(tmp_path / "run"),
              "--config.train.batch_size=0"])
    with pytest.raises(ValueError, match="train.batch_size"):  # the flag may come anywhere
        main(["train", "--config", DEMO, "--workdir", str(tmp_path / "run"),
              "--config.train.batch_size=0", "--debug"])


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    workdir = tmp_path / "run"
    workdir.write_text("not a directory")
    line = one_line_error(capsys, ["train", "--config", DEMO, "--workdir", str(workdir)])
    assert str(workdir) in line


def test_compare_without_runs_is_one_line(tmp_path, capsys):
    assert str(tmp_path) in one_line_error(capsys, ["compare", str(tmp_path)])


def test_malformed_kg_csv_in_data_summary_names_the_file(tmp_path, capsys):
    kg = tmp_path / "kg.csv"
    kg.write_text("this,is,not\na,primekg,file\n")
    assert str(kg) in one_line_error(capsys, ["data", "summary", "--format", "primekg",
                                              "--path", str(kg)])
    missing = tmp_path / "missing.csv"
    assert str(missing) in one_line_error(capsys, ["data", "summary", "--format", "primekg",
                                                   "--path", str(missing)])


def test_a_batch_larger_than_the_training_part_is_clamped_for_training_and_evaluation(caplog):
    config = load_config(DEMO)
    config.train.batch_size = 100_000
    with caplog.at_level(logging.WARNING, logger="perturbjax.tasks.perturbation"):
        task = make_task(config)
    train = len(task.split.train)
    assert task.batch_size == train
    assert any("larger than" in r.message for r in caplog.records)
    first = next(train_batches(task, seed=0))
    assert len(first["drug"]) == train
    batch, real = next(eval_batches(task, "validation", 0))
    assert len(batch["drug"]) <= train and real <= train



def test_show_config_prints_variants_and_the_resolved_config_without_training(tmp_path,
                                                                              capsys):
    main(["train", "--config", "experiments/hetionet_lincs_consensus.py:fold=2",
          "--show-config", "--config.train.num_steps=7", "--workdir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert "Variants" in out or "variant" in out  # the file's docstring
    assert "get_sweep():" in out and "runs" in out
    resolved = json.loads(out[out.index("\n{") + 1:])
    assert resolved["train"]["num_steps"] == 7 and resolved["data"]["fold"] == 2
    assert not (tmp_path / "run").exists()
    assert "--workdir is required" in one_line_error(capsys, ["train", "--config", DEMO])


@pytest.mark.parametrize("state", ["missing", "corrupt"])
def test_a_missing_or_corrupt_registered_file_stops_train_in_one_line(tmp_path, capsys,
                                                                      monkeypatch, state):
    data_dir = tmp_path / "data"
    (data_dir / "hetionet").mkdir(parents=True)
    if state == "corrupt":
        (data_dir / "l1000").mkdir()
        (data_dir / "l1000" / "modzs_n272x978.gct").write_text("#1.3\nnot the real file\n")
    monkeypatch.setenv("PERTURBJAX_DATA_DIR", str(data_dir))
    workdir = tmp_path / "run"
    line = one_line_error(capsys, ["train", "--config", "experiments/l1000_cell_lines.py:test",
                                   "--workdir", str(workdir), "--no-progress"])
    named = data_dir / "l1000" / "modzs_n272x978.gct"
    assert str(named) in line and ("is missing" if state == "missing" else "sha256") in line
    assert "perturbjax data fetch l1000/modzs_n272x978.gct" in line
    assert not (workdir / "summary.json").exists()


def test_an_unwritable_workdir_is_one_line(capsys):
    """/proc/self takes no new files, even for root (whom permission bits do not stop): the
    read-only workdir case."""
    line = one_line_error(capsys, ["train", "--config", DEMO, "--workdir", "/proc/self",
                                   "--no-progress"])
    assert "/proc/self" in line


def test_an_unknown_data_format_is_one_line_listing_the_formats(tmp_path, capsys):
    line = one_line_error(capsys, ["data", "summary", "--format", "gctt", "--path",
                                   str(tmp_path / "x.gct")])
    assert "unknown format 'gctt'" in line and "'gct'" in line
