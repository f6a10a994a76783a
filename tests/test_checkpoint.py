"""Checkpoints on the seconds-long demo variant, through the real `perturbjax train` command.

A run killed with SIGKILL and rerun ends with exactly the summary of a run never interrupted; a
run sent SIGTERM saves a checkpoint and exits with status 0, and its rerun matches too; a
checkpoint carries its config and graph description; a changed config in a used workdir is
refused. The runs are subprocesses sharing a persistent compilation cache, so only the first
compiles (each run then takes seconds).
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from perturbjax import cli
from perturbjax.config import apply_overrides, config_to_json, load_config
from perturbjax.tasks import make_task
from perturbjax.training.batching import train_batches
from perturbjax.tasks.perturbation_config import base_config
from perturbjax.training.checkpoint import (
    Checkpoints,
    WorkdirConflict,
    check_workdir_config,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(ROOT, "experiments", "demo.py")
# Checkpoints at steps 7, 14, 21, 28 and 30 (the last) of the variant's 30; evaluations at 15, 30.
EVERY = ["--config.train.checkpoint.every=7"]
TIMEOUT_S = 300
TIMINGS = ("step_time_s", "steps_per_s", "examples_per_s")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """This checkout first on the path (not an installed copy); one compilation cache."""
    cache = tmp_path_factory.mktemp("jax_cache")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
                JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _start(workdir, env, *overrides):
    cmd = [sys.executable, "-m", "perturbjax.cli", "train", "--config", f"{DEMO}:test",
           "--workdir", str(workdir), "--no-progress", *overrides]
    with open(f"{workdir}.log", "w") as log:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def _finish(proc, workdir) -> int:
    try:
        return proc.wait(timeout=TIMEOUT_S)
    finally:
        proc.kill()


def _run(workdir, env, *overrides):
    rc = _finish(_start(workdir, env, *overrides), workdir)
    assert rc == 0, _log(workdir)
    return json.loads((workdir / "summary.json").read_text())


def _log(workdir) -> str:
    return open(f"{workdir}.log").read()[-3000:]


def _wait_for(condition, proc, workdir):
    deadline = time.time() + TIMEOUT_S
    while not condition():
        assert proc.poll() is None, f"the run ended first:\n{_log(workdir)}"
        assert time.time() < deadline, f"timed out:\n{_log(workdir)}"
        time.sleep(0.02)


def _checkpoint_steps(workdir) -> list[int]:
    """Completed checkpoints: Orbax writes into a temporary directory and renames it when done."""
    d = workdir / "checkpoints"
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if d.exists() else []


def _records(workdir) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _has_record(workdir, split, step) -> bool:
    path = workdir / "metrics.jsonl"  # read while written: match text, not parsed lines
    return path.exists() and f'{{"step": {step}, "split": "{split}"' in path.read_text()


def _assert_same_results(summary, reference):
    for key in ("validation", "test", "baselines", "selected_step", "compilations"):
        assert summary[key] == reference[key], key  # floats equal, not approximately


def _assert_same_records(workdir, reference_dir):
    """The same (split, step) records, none twice, with the same values (timings aside)."""
    def strip(records):
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records
                if r["split"] != "preempted"]

    records = _records(workdir)
    keys = [(r["split"], r["step"]) for r in records]
    assert len(keys) == len(set(keys)), keys
    assert strip(records) == strip(_records(reference_dir))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, env):
    """An uninterrupted run, without checkpoints (the variant's 30 steps are fewer than every)."""
    workdir = tmp_path_factory.mktemp("runs") / "reference"
    summary = _run(workdir, env)
    assert not (workdir / "checkpoints").exists() and summary["resumed_from_step"] is None
    return workdir, summary


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, env):
    """SIGKILL once the step-15 evaluation is logged, then a rerun to completion.

    Checkpoint 7 at least is complete by then, and 21 most likely not: the resumed run then
    cuts that record from metrics.jsonl and writes it again.
    """
    workdir = tmp_path_factory.mktemp("runs") / "killed"
    proc = _start(workdir, env, *EVERY)
    _wait_for(lambda: _has_record(workdir, "validation", 15), proc, workdir)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=TIMEOUT_S) == -signal.SIGKILL
    assert not (workdir / "summary.json").exists()
    killed_at = _checkpoint_steps(workdir)[-1]
    assert killed_at >= 7
    return workdir, killed_at, _run(workdir, env, *EVERY)


def test_resume_after_sigkill_is_exact(reference, killed_and_resumed):
    (reference_dir, expected), (workdir, killed_at, summary) = reference, killed_and_resumed
    assert summary["resumed_from_step"] == killed_at
    assert f"perturbjax: resuming from step {killed_at} " in _log(workdir)  # the rerun's output
    _assert_same_results(summary, expected)
    _assert_same_records(workdir, reference_dir)
    assert _checkpoint_steps(workdir) == [28, 30]  # the last `keep` = 2


def test_sigterm_saves_exits_cleanly_and_resumes(tmp_path, env, reference):
    reference_dir, expected = reference
    workdir = tmp_path / "terminated"
    proc = _start(workdir, env, *EVERY)
    _wait_for(lambda: _checkpoint_steps(workdir), proc, workdir)
    seen = _checkpoint_steps(workdir)[-1]
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc, workdir) == 0, _log(workdir)
    assert "preempted (SIGTERM) at step" in _log(workdir) and "rerun the same command" in _log(workdir)
    assert not (workdir / "summary.json").exists()
    stopped_at = _checkpoint_steps(workdir)[-1]
    assert seen <= stopped_at < 30
    assert _records(workdir)[-1] == {"step": stopped_at, "split": "preempted",
                                     "checkpoint_step": stopped_at}

    summary = _run(workdir, env, *EVERY)
    assert summary["resumed_from_step"] == stopped_at
    _assert_same_results(summary, expected)
    _assert_same_records(workdir, reference_dir)


def test_checkpoint_describes_itself(killed_and_resumed):
    workdir, _, summary = killed_and_resumed
    ckpt = Checkpoints(str(workdir), keep=2)
    try:
        items = ckpt.read_json()
        assert items["config"] == json.loads((workdir / "config.json").read_text())
        for key in ("schema", "padding_budget", "graph", "split"):
            assert items["description"][key] == summary[key], key
        assert items["loop"]["step"] == 30 and items["loop"]["best_step"] == summary["selected_step"]
        arrays = ckpt.manager.restore(30, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        assert set(arrays.state) == {"params", "opt_state", "best_params", "key"}
        best = jax.tree.leaves(arrays.state["best_params"])
        assert summary["num_params"] == sum(np.size(x) for x in best)
    finally:
        ckpt.close()


def test_a_changed_config_is_refused(reference):
    workdir, _ = reference
    before = {name: (workdir / name).read_text() for name in ("config.json", "metrics.jsonl")}
    with pytest.raises(SystemExit, match=r"another run's config .*train\.num_steps: 30 -> 31.*"
                                         r"another --workdir"):
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(workdir),
                  "--no-progress", "--config.train.num_steps=31"])
    assert before == {name: (workdir / name).read_text() for name in before}


@pytest.mark.parametrize("damage", ["config_garbage", "config_not_an_object", "checkpoint"])
def test_a_damaged_workdir_is_one_line_naming_the_file(tmp_path, capsys, killed_and_resumed,
                                                       damage):
    import shutil

    workdir = tmp_path / "run"
    shutil.copytree(killed_and_resumed[0], workdir)
    (workdir / "summary.json").unlink()
    latest = workdir / "checkpoints" / str(_checkpoint_steps(workdir)[-1])
    if damage == "config_garbage":
        named = workdir / "config.json"
        named.write_bytes(bytes(range(128, 256)))
    elif damage == "config_not_an_object":
        named = workdir / "config.json"
        named.write_text("[1, 2]")
    else:
        named = latest
        for f in latest.rglob("*"):
            if f.is_file():
                f.write_bytes(b"\x00\xff garbage")
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--config", f"{DEMO}:test", "--workdir", str(workdir), "--no-progress",
                  *EVERY])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1, err
    assert err[0].startswith("perturbjax: error: ") and str(named) in err[0], err


def test_config_json_without_newer_keys_at_their_defaults_is_accepted(tmp_path):
    """A workdir from before keys were added: accepted while they keep their defaults."""
    def old_config(*drop):
        config = json.loads(config_json)
        for key in drop:
            section, name = key.split(".")
            del config[section][name]
        (tmp_path / "config.json").write_text(json.dumps(config))

    config = load_config(f"{DEMO}:test")
    config_json, defaults = config_to_json(config), config_to_json(base_config())
    old_config("train.data_parallel", "train.num_devices")
    check_workdir_config(str(tmp_path), config_json, defaults)
    # Without the defaults, or with a new value other than the default, it is refused.
    with pytest.raises(WorkdirConflict, match=r"train\.data_parallel: '<missing>' -> False"):
        check_workdir_config(str(tmp_path), config_json)
    changed = config_to_json(apply_overrides(config, ["train.num_devices=2"]))
    with pytest.raises(WorkdirConflict, match=r"1 difference.*train\.num_devices: '<missing>' -> 2"):
        check_workdir_config(str(tmp_path), changed, defaults)
    # A key the experiment sets away from the default (the demo's model.hidden) is a real
    # difference even when missing, and so is any changed value.
    old_config("model.hidden")
    with pytest.raises(WorkdirConflict, match=r"model\.hidden: '<missing>' -> 32"):
        check_workdir_config(str(tmp_path), config_json, defaults)
    old_config()
    changed = config_to_json(apply_overrides(config, ["seed=1"]))
    with pytest.raises(WorkdirConflict, match=r"seed: 0 -> 1"):
        check_workdir_config(str(tmp_path), changed, defaults)


def test_train_accepts_a_workdir_from_before_new_keys(tmp_path):
    """The loop passes the task's defaults: the same command runs on such a workdir."""
    workdir = tmp_path / "run"
    args = ["train", "--config", f"{DEMO}:test", "--workdir", str(workdir), "--no-progress",
            "--config.model.name=mean", "--config.baselines=[]"]  # a baseline: seconds
    cli.main(args)
    config = json.loads((workdir / "config.json").read_text())
    del config["train"]["num_devices"]
    (workdir / "config.json").write_text(json.dumps(config))
    cli.main(args)
    assert json.loads((workdir / "config.json").read_text())["train"]["num_devices"] == 0
    (workdir / "config.json").write_text(json.dumps(config))  # the old file again
    with pytest.raises(SystemExit, match=r"train\.num_devices: '<missing>' -> 2"):
        cli.main([*args, "--config.train.num_devices=2"])


def test_batches_resume_at_any_step():
    task = make_task(load_config(f"{DEMO}:test"))  # 9 batches per epoch
    stream = list(itertools.islice(train_batches(task, 3), 30))
    for start in (0, 4, 9, 22):
        resumed = itertools.islice(train_batches(task, 3, start_step=start), 30 - start)
        for expected, batch in zip(stream[start:], resumed, strict=True):
            assert all(np.array_equal(expected[k], batch[k]) for k in expected)
