"""`perturbjax launch`: sweep expansion, workdir names, the printed commands and error paths.

No training runs here (a real demo run takes ~45 s on 2 busy cores); the local runner is
exercised with stand-in commands.
"""

import ast
import os
import shlex
import shutil
import subprocess
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


ORIGIN = "https://github.com/example/perturbjax.git"
HEAD = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def checkout(monkeypatch):
    """This checkout as if cloned from ORIGIN at HEAD (the tests' own may have no remote)."""
    answers = {("remote", "get-url", "origin"): ORIGIN, ("rev-parse", "HEAD"): HEAD}
    monkeypatch.setattr(launch, "_git", lambda *args: answers.get(args))
    return answers


def _commands(lines):
    """Each printed gcloud line's --command, as the remote shell's words."""
    commands = []
    for line in lines:
        argv = shlex.split(line)
        (command,) = [a for a in argv if a.startswith("--command=")]
        commands.append(command[len("--command="):])
    return commands


def test_tpu_vm_dry_run_prints_quoted_gcloud_lines(tmp_path, capsys, checkout):
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
    # The checkout comes first (this checkout's origin and commit by default), then the cd.
    assert " ".join(setup).startswith(f"{{ test -d ~/perturbjax/.git || git clone -q {ORIGIN} "
                                      f"~/perturbjax; }} && cd ~/perturbjax && git fetch -q "
                                      f"{ORIGIN} {HEAD} && git checkout -q --detach FETCH_HEAD")
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


def test_execute_runs_the_lines_in_order_and_stops_at_a_failure(tmp_path, monkeypatch,
                                                                checkout):
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
    from perturbjax.training.logging import RunLogger

    seen = {}

    class FakeRun:
        def finish(self):
            pass

        settings = types.SimpleNamespace(sync_dir="wandb/offline-run-x", log_user="debug.log")

    fake = types.ModuleType("wandb")
    fake.init = lambda **kwargs: seen.update(kwargs) or FakeRun()
    fake.Settings = lambda **kwargs: kwargs
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


KG_LINCS_FILES = ["--config.data.files.kg=kg.csv", "--config.data.files.signatures=level5.gctx"]


def test_tpu_vm_from_nothing_checks_out_installs_stages_data_and_syncs_runs(capsys):
    """The issue's dry run: repo-url@ref, Python >= 3.11, venv + pip, data from the bucket into
    the data dir, PERTURBJAX_DATA_DIR in every run line, runs copied to the gs:// root."""
    url, ref = "https://github.com/someone/perturbjax.git", "v0.2"
    cli.main(["launch", "--config", f"{CONSENSUS}:test", "--sweep",
              "--root", "gs://my-bucket/runs/consensus/", "--target", "tpu-vm",
              "--tpu", "my-tpu", "--zone", "us-central2-b", "--repo-url", url, "--ref", ref,
              "--python", "python3.11", "--data", "gs://my-bucket/data",
              "--setup", "pip install -U 'jax[tpu]'", "--config.train.num_steps=5"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and all(line.startswith("gcloud compute tpus tpu-vm ssh my-tpu ")
                                   and " --worker=all " in line for line in lines)
    setup, *runs = _commands(lines)
    steps = setup.split(" && ")
    assert steps[:4] == [
        f"{{ test -d ~/perturbjax/.git || git clone -q {url} ~/perturbjax; }}",
        "cd ~/perturbjax", f"git fetch -q {url} {ref}", "git checkout -q --detach FETCH_HEAD"]
    assert steps[4].startswith("{ python3.11 -c 'import sys; sys.exit(sys.version_info < "
                               "(3, 11))' || { echo \"perturbjax needs Python >= 3.11;")
    assert steps[5:9] == ["{ test -d .venv || python3.11 -m venv .venv; }",
                          ". .venv/bin/activate", steps[7], "pip install -e ."]
    assert steps[7].startswith("{ python -c 'import sys; sys.exit(sys.version_info < (3, 11))'")
    assert steps[9:] == ['export PERTURBJAX_DATA_DIR="$HOME"/perturbjax-data',
                         "mkdir -p ~/perturbjax-data",
                         "gcloud storage rsync --recursive gs://my-bucket/data ~/perturbjax-data",
                         "{ pip install -U 'jax[tpu]' ; }"]
    for k, run in enumerate(runs):
        name, local = f"data.fold={k}", f"~/perturbjax-runs/my-bucket/runs/consensus/data.fold={k}"
        assert run.startswith('cd ~/perturbjax && . .venv/bin/activate && '
                              'export PERTURBJAX_DATA_DIR="$HOME"/perturbjax-data && '
                              f"mkdir -p {local} && {{ perturbjax train ")
        words = shlex.split(run)
        train = words[words.index("perturbjax"):words.index("2>&1")]
        assert _train_args(train)["--workdir"].startswith("~/perturbjax-runs/")  # ~ unquoted
        assert f"--workdir {local} " in run
        assert f"| tee -a {local}/train.log; rc=${{PIPESTATUS[0]}};" in run
        assert "computeMetadata/v1/instance/attributes/agent-worker-number)\" = 0 ]" in run
        assert (f"then gcloud storage rsync --recursive {local} "
                f"gs://my-bucket/runs/consensus/{name} || ") in run
        assert run.endswith('exit "$rc"; }')


def _stub(bin_dir, name, body):
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.mark.skipif(shutil.which("bash") is None, reason="the remote commands are bash")
@pytest.mark.parametrize("worker", ["0", "1"])
def test_a_failed_run_is_still_copied_by_worker_0_and_keeps_its_status(tmp_path, worker):
    """The printed run line, run by bash with stand-ins for perturbjax, curl and gcloud."""
    (tmp_path / "perturbjax" / ".venv" / "bin").mkdir(parents=True)
    (tmp_path / "perturbjax" / ".venv" / "bin" / "activate").write_text("")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "perturbjax", 'echo "data: $PERTURBJAX_DATA_DIR"; echo boom >&2; exit 3\n')
    _stub(bin_dir, "curl", f"echo {worker}\n")
    _stub(bin_dir, "gcloud", f'echo "$@" >> {tmp_path}/gcloud.txt\n')
    lines = []
    launch.launch(f"{DEMO}:test", "gs://b/runs", "tpu-vm", tpu="t", zone="z", repo_url="u",
                  ref="r", data_dir="/data", print_fn=lines.append)
    env = {"HOME": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    done = subprocess.run(["bash", "-c", _commands(lines)[1]], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 3
    local = tmp_path / "perturbjax-runs" / "b" / "runs" / "default"
    assert (local / "train.log").read_text() == "data: /data\nboom\n"
    copied = (tmp_path / "gcloud.txt").read_text() if worker == "0" else ""
    assert copied == (f"storage rsync --recursive {local} gs://b/runs/default\n"
                      if worker == "0" else "")


@pytest.mark.skipif(shutil.which("bash") is None, reason="the remote commands are bash")
def test_setup_clones_once_and_stops_on_an_old_python(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stub(bin_dir, "git", f'echo "$@" >> {tmp_path}/git.txt\n'
                          'if [ "$1" = clone ]; then mkdir -p "$4/.git"; fi\n')
    _stub(bin_dir, "python3.10", 'if [ "$1" = -V ]; then echo "Python 3.10.12"; exit 0; fi\n'
                                 "exit 1\n")
    lines = []
    launch.launch(f"{DEMO}:test", "runs/demo", "tpu-vm", tpu="t", zone="z", repo_url="URL",
                  ref="REF", python="python3.10", print_fn=lines.append)
    env = {"HOME": str(tmp_path), "PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    for _ in range(2):
        done = subprocess.run(["bash", "-c", _commands(lines)[0]], env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1
        assert "perturbjax needs Python >= 3.11; python3.10 (--python) on " in done.stderr
        assert done.stderr.strip().endswith(" is Python 3.10.12")
    assert not (tmp_path / "perturbjax" / ".venv").exists()
    assert (tmp_path / "git.txt").read_text().splitlines() == [
        f"clone -q URL {tmp_path}/perturbjax", "fetch -q URL REF",
        "checkout -q --detach FETCH_HEAD", "fetch -q URL REF",
        "checkout -q --detach FETCH_HEAD"]  # cloned once


def test_repository_defaults_to_this_checkout_and_fails_clearly_without_one(
        tmp_path, capsys, monkeypatch, checkout):
    base = ["launch", "--config", f"{DEMO}:test", "--root", "r", "--target", "tpu-vm",
            "--tpu", "t", "--zone", "z"]
    cli.main(base)
    setup = _commands(capsys.readouterr().out.splitlines())[0]
    assert f"git clone -q {ORIGIN} ~/perturbjax" in setup and f"fetch -q {ORIGIN} {HEAD} " in setup
    cli.main(base + ["--repo-url", "git@example.org:me/p.git", "--ref", "main"])
    assert "git fetch -q git@example.org:me/p.git main " in capsys.readouterr().out
    checkout[("remote", "get-url", "origin")] = "/home/me/perturbjax"
    assert "local path" in one_line_error(capsys, base)
    del checkout[("remote", "get-url", "origin")]
    line = one_line_error(capsys, base)
    assert "no `origin` remote" in line and "--repo-url" in line
    del checkout[("rev-parse", "HEAD")]  # an explicit URL and no git here: the default branch
    cli.main(base + ["--repo-url", "https://x/p.git"])
    assert "git fetch -q https://x/p.git HEAD " in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--target", "tpu-vm", "--tpu", "t", "--zone", "z", "--data", "/local/data"],
     "--data must be a Cloud Storage folder, gs://BUCKET/PATH; got '/local/data'"),
    (["--target", "tpu-vm", "--tpu", "t", "--zone", "z", "--data", "gs://"],
     "--data must be a Cloud Storage folder"),
    (["--target", "local", "--data", "gs://b/data"], "--data is for --target tpu-vm"),
    (["--target", "local", "--repo-url", "u", "--python", "python3.12"],
     "--repo-url, --python are for --target tpu-vm"),
    (["--target", "local", "--root", "gs://b/runs"], "a gs:// root is for --target tpu-vm"),
])
def test_launch_option_mistakes_are_one_line(tmp_path, capsys, checkout, args, message):
    argv = ["launch", "--config", f"{DEMO}:test", "--root", str(tmp_path / "r"), *args]
    assert message in one_line_error(capsys, argv)
    assert not (tmp_path / "r").exists()


def one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("perturbjax: error: "), err
    return err[0]
