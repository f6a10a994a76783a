"""`perturbjax launch`: sweep expansion, workdir names, the printed commands and error paths.

No training runs here (a real demo run takes ~45 s on 2 busy cores); the local runner is
exercised with stand-in commands.
"""

import ast
import os
import shlex
import sys
from pathlib import Path

import pytest

from perturbjax import cli, launch

ROOT_DIR = Path(__file__).resolve().parents[1]
CONSENSUS = str(ROOT_DIR / "experiments" / "hetionet_lincs_consensus.py")
DEMO = str(ROOT_DIR / "experiments" / "demo.py")


def _train_args(argv):
    """The `train ...` arguments of a printed command as a dict of option -> value."""
    i = argv.index("train")
    args, rest = {}, argv[i + 1:]
    j = 0
    while j < len(rest):
        if rest[j] in ("--no-progress", "--distributed"):
            args[rest[j]] = True
            j += 1
        elif rest[j].startswith("--config."):
            args.setdefault("overrides", []).append(rest[j][len("--config."):])
            j += 1
        else:
            args[rest[j]] = rest[j + 1]
            j += 2
    return args


def test_sweep_gives_five_runs_with_their_own_workdirs(tmp_path):
    runs = launch.expand(f"{CONSENSUS}:test", str(tmp_path), sweep=True,
                         overrides=["train.num_steps=5", "data.fold=3"])
    assert len(runs) == 5
    assert len({r.workdir for r in runs}) == 5
    assert [r.name for r in runs] == [f"data.fold={k}" for k in range(5)]
    assert [r.workdir for r in runs] == [str(tmp_path / f"data.fold={k}") for k in range(5)]
    # Command-line overrides first, the sweep entry last (it wins over data.fold=3).
    assert [r.overrides for r in runs] == [("train.num_steps=5", "data.fold=3", f"data.fold={k}")
                                           for k in range(5)]
    assert [r.job_type for r in runs] == [f"test,data.fold={k}" for k in range(5)]


def test_without_sweep_one_default_run(tmp_path):
    (run,) = launch.expand(f"{DEMO}:test", str(tmp_path))
    assert run.name == "default" and run.workdir == str(tmp_path / "default")
    assert run.overrides == () and run.job_type == "test"


def test_run_names_are_safe_deterministic_and_distinct():
    assert launch.run_name(["data.fold=2", "seed=1"]) == "data.fold=2,seed=1"
    assert launch.run_name([]) == "default"
    odd = ["graph.drop_relations=['interacts', 'binds']"]
    name = launch.run_name(odd)
    assert name == launch.run_name(odd)
    assert all(c.isalnum() or c in "._=,+-" for c in name), name
    assert name != launch.run_name(["graph.drop_relations=['interacts', 'bind_']"])
    # A name that needed no change cannot collide with a hashed one: those end in -HASH8 after
    # a replaced character, and the hash is of the unmodified text.
    assert len(launch.run_name([f"data.x={'a' * 300}"])) <= launch.MAX_NAME
    assert launch.run_name(["a/b=1"]) != launch.run_name(["a_b=1"])
    assert len(launch.job_type("test", [f"data.x={'a' * 300}"])) <= launch.MAX_JOB_TYPE


def test_local_dry_run_prints_the_exact_train_commands(tmp_path, capsys):
    root = str(tmp_path / "runs")
    cli.main(["launch", "--config", f"{CONSENSUS}:test", "--sweep", "--root", root,
              "--target", "local", "--dry-run", "--config.train.num_steps=5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    for k, line in enumerate(lines):
        argv = shlex.split(line)
        assert argv[:3] == [sys.executable, "-m", "perturbjax.cli"]
        assert _train_args(argv) == {
            "--config": f"{CONSENSUS}:test", "--workdir": os.path.join(root, f"data.fold={k}"),
            "--group": "hetionet_lincs_consensus", "--job-type": f"test,data.fold={k}",
            "--no-progress": True, "overrides": ["train.num_steps=5", f"data.fold={k}"]}
        # The printed command parses as a train invocation.
        args, rest = _train_parser_args(argv[3:])
        assert args.workdir == os.path.join(root, f"data.fold={k}")
    assert not os.path.exists(root)  # nothing ran


def _train_parser_args(argv):
    """Parses `train ...` with the real CLI parser (without running it)."""
    import argparse

    captured = {}

    def fake_train(args, rest):
        captured["args"], captured["rest"] = args, rest

    original = cli._train
    cli._train = fake_train
    try:
        cli.main(argv)
    finally:
        cli._train = original
    assert isinstance(captured["args"], argparse.Namespace)
    return captured["args"], captured["rest"]


def test_tpu_vm_dry_run_prints_quoted_gcloud_lines(tmp_path, capsys):
    cli.main(["launch", "--config", f"{CONSENSUS}:test", "--sweep", "--root", "runs/consensus",
              "--target", "tpu-vm", "--tpu", "my-tpu", "--zone", "us-central2-b",
              "--project", "proj", "--setup", "pip install -U 'jax[tpu]'",
              "--config.wandb.tags=['tpu run']"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6
    commands = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu"]
        assert argv[argv.index("--zone") + 1] == "us-central2-b"
        assert argv[argv.index("--project") + 1] == "proj"
        assert "--worker=all" in argv
        (command,) = [a for a in argv if a.startswith("--command=")]
        commands.append(shlex.split(command[len("--command="):]))
    setup = commands[0]
    assert setup[:2] == ["cd", "~/perturbjax"]
    assert "test -d .venv || python3 -m venv .venv;" in " ".join(setup)
    assert ["pip", "install", "-e", "."] == setup[setup.index("pip"):setup.index("pip") + 4]
    assert setup[-8:] == ["&&", "{", "pip", "install", "-U", "jax[tpu]", ";", "}"]
    for k, command in enumerate(commands[1:]):
        assert command[:2] == ["cd", "~/perturbjax"]
        train = command[len(command) - command[::-1].index("&&"):]
        assert train[:2] == ["perturbjax", "train"]
        assert _train_args(train) == {
            "--config": f"{CONSENSUS}:test", "--workdir": f"runs/consensus/data.fold={k}",
            "--group": "hetionet_lincs_consensus", "--job-type": f"test,data.fold={k}",
            "--no-progress": True, "--distributed": True,
            "overrides": ["wandb.tags=['tpu run']", f"data.fold={k}"]}
        # The printed command parses as a multi-host train invocation.
        args, _ = _train_parser_args(train[1:])
        assert args.distributed and args.process_id is None


def test_sweep_needs_get_sweep(tmp_path):
    with pytest.raises(SystemExit, match="get_sweep"):
        cli.main(["launch", "--config", f"{DEMO}:test", "--sweep", "--root", str(tmp_path),
                  "--target", "local", "--dry-run"])


def test_bad_override_fails_before_anything_runs(tmp_path):
    with pytest.raises(SystemExit, match="train.num_stepz"):
        cli.main(["launch", "--config", f"{DEMO}:test", "--root", str(tmp_path / "r"),
                  "--target", "local", "--config.train.num_stepz=3"])
    assert not (tmp_path / "r").exists()


def test_unknown_target_and_missing_tpu_options(tmp_path):
    with pytest.raises(SystemExit):  # argparse: invalid choice
        cli.main(["launch", "--config", DEMO, "--root", str(tmp_path), "--target", "slurm"])
    with pytest.raises(launch.LaunchError, match="unknown --target"):
        launch.launch(DEMO, str(tmp_path), "slurm", print_fn=lambda _: None)
    with pytest.raises(SystemExit, match="--tpu NAME and --zone ZONE"):
        cli.main(["launch", "--config", DEMO, "--root", str(tmp_path), "--target", "tpu-vm"])


def test_execute_without_gcloud_on_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no gcloud
    with pytest.raises(SystemExit, match="gcloud"):
        cli.main(["launch", "--config", f"{DEMO}:test", "--root", "runs/demo",
                  "--target", "tpu-vm", "--tpu", "t", "--zone", "z", "--execute"])
    assert capsys.readouterr().out == ""  # nothing printed as started


def test_run_local_reports_each_run_and_counts_failures(tmp_path):
    runs = launch.expand(f"{CONSENSUS}:test", str(tmp_path), sweep=True)[:3]
    commands = [[sys.executable, "-c", f"print('run {i}'); raise SystemExit({rc})"]
                for i, rc in enumerate([0, 3, 0])]
    lines = []
    failed = launch.run_local(commands, runs, parallel=2, print_fn=lines.append, poll_s=0.01)
    assert failed == 1
    assert sum(line.startswith("[launch] started") for line in lines) == 3
    (bad,) = [line for line in lines if "FAILED" in line]
    assert "data.fold=1" in bad and "rc 3" in bad and runs[1].workdir in bad
    assert sum("finished" in line for line in lines) == 2
    assert (Path(runs[0].workdir) / "train.log").read_text() == "run 0\n"


def test_execute_runs_the_lines_in_order_and_stops_at_a_failure(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    gcloud = tmp_path / "bin" / "gcloud"
    gcloud.parent.mkdir()
    # A stand-in gcloud: records its arguments; fails for the run of fold 1.
    gcloud.write_text(f"#!{sys.executable}\nimport sys\n"
                      f"open({str(calls)!r}, 'a').write(repr(sys.argv[1:]) + '\\n')\n"
                      "sys.exit(5 if any('data.fold=1 ' in a for a in sys.argv) else 0)\n")
    gcloud.chmod(0o755)
    monkeypatch.setenv("PATH", f"{gcloud.parent}{os.pathsep}{os.environ['PATH']}")
    lines = []
    status = launch.launch(f"{CONSENSUS}:test", "runs/c", "tpu-vm", sweep=True, tpu="t",
                           zone="z", execute=True, print_fn=lines.append)
    assert status == 1
    recorded = [ast.literal_eval(line) for line in calls.read_text().splitlines()]
    assert len(recorded) == 3  # setup, fold 0, fold 1 (failed: the rest never started)
    assert recorded[0][:4] == ["compute", "tpus", "tpu-vm", "ssh"]
    assert "data.fold=0" in recorded[1][-1] and "data.fold=1" in recorded[2][-1]
    assert any("FAILED" in line and "data.fold=1" in line for line in lines)


def test_run_logger_passes_group_and_job_type_to_wandb(tmp_path, monkeypatch):
    import types

    from perturbjax.config import load_config
    from perturbjax.train.logging import RunLogger

    seen = {}

    class FakeRun:
        def finish(self):
            pass

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: seen.update(kwargs) or FakeRun()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = load_config(f"{DEMO}:test")
    config.wandb.mode = "offline"
    RunLogger(str(tmp_path), config, experiment="demo", variant="test").close()
    assert (seen["group"], seen["job_type"]) == ("demo", "test")
    RunLogger(str(tmp_path), config, experiment="demo", variant="test", group="sweep",
              job_type="test,data.fold=2").close()
    assert (seen["group"], seen["job_type"]) == ("sweep", "test,data.fold=2")


def test_finished_runs_of_the_same_config_are_skipped(tmp_path, monkeypatch):
    runs = launch.expand(f"{CONSENSUS}:test", str(tmp_path), sweep=True)
    done, changed = runs[0], runs[1]
    for run, config in ((done, done.config_json), (changed, changed.config_json + " ")):
        os.makedirs(run.workdir)
        Path(run.workdir, "config.json").write_text(config)
        Path(run.workdir, "summary.json").write_text("{}")
    assert done.finished() and not changed.finished() and not runs[2].finished()
    started = []
    monkeypatch.setattr(launch, "run_local",
                        lambda commands, runs, *a, **k: started.extend(r.name for r in runs) or 0)
    lines = []
    assert launch.launch(f"{CONSENSUS}:test", str(tmp_path), "local", sweep=True,
                         print_fn=lines.append) == 0
    assert started == [r.name for r in runs[1:]]  # another config in the workdir: not skipped
    assert any(line.startswith(f"[launch] skipped  {done.name}") for line in lines)
    started.clear()
    launch.launch(f"{CONSENSUS}:test", str(tmp_path), "local", sweep=True, rerun=True,
                  print_fn=lines.append)
    assert started == [r.name for r in runs]
