"""`perturbjax launch`: one experiment, or its whole sweep, as `perturbjax train` runs.

    perturbjax launch --config experiments/FILE.py[:VARIANT] [--sweep] --root DIR \
        --target local|tpu-vm [options] [--config.KEY=VALUE ...]

Expansion. Without `--sweep` there is one run; with it, one run per entry of the file's
`get_sweep()` (a list of "dotted.key=value" override lists). A run's overrides are the
command line's `--config.KEY=VALUE` ones first and its sweep entry's last, so a sweep entry wins
over a command-line override of the same key. Every run's config is built here before anything
starts, so a typo fails before the first run.

Names. Run i's workdir is `ROOT/NAME`, NAME being its sweep overrides joined by "," (e.g.
`ROOT/data.fold=2`, `ROOT/data.fold=2,seed=1`, `ROOT/graph.ablation=drop:binds,seed=0`), or
`default` for a run without sweep overrides. Characters other than letters, digits and
`._=,+:-` become `_`, and a name that had any replaced, starts with `.` or `-`, or is longer
than 100 characters is cut to 100 characters and gets `-` plus the first 8 hex digits of the
SHA-1 of the unmodified name, so names are deterministic and distinct runs never share a
workdir (a sweep with two equal entries is an error). Command-line overrides are not part of
the name: they are common to all runs, so give such a launch its own ROOT.

W&B. All runs share one group, the experiment file's name (`--group` to change it), and each
run's job type is its variant and sweep overrides joined by "," (`test,data.fold=2`; W&B caps
job types at 64 characters, so a longer one is cut and hashed as above). They reach W&B
through `perturbjax train --group G --job-type J`.

Targets.
  local   runs `python -m perturbjax.cli train ...` subprocesses with this interpreter (so the
          same code and environment as the launcher), one at a time or `--parallel N` at a
          time, each writing its output to `WORKDIR/train.log`, and prints one status line per
          run as it starts and ends. A run whose workdir already holds a summary.json and the
          same config.json is skipped (so relaunching an interrupted sweep runs only what is
          left; `--rerun` runs everything). Exits non-zero if any run failed. Ctrl-C sends
          SIGTERM to the runs in flight (they save a checkpoint if checkpoints are on; launching
          again resumes them).
  tpu-vm  prints `gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command=...`
          lines: one setup line (venv, `pip install -e .`, `--setup`) and one line per run,
          which runs `perturbjax train --distributed` in the foreground on every worker of the
          TPU VM: the workers of a pod are the processes of one multi-host run, which
          `jax.distributed.initialize()` finds by itself on TPU VMs (a pod of several workers
          needs `--config.train.data_parallel=True`). The lines are meant to run one after
          another: a TPU is held by one process, so runs on the same VM cannot overlap, and a
          line returns when its run has finished on all workers. `--execute` runs them so,
          stopping at the first failure. ROOT is relative to the repository directory on the VM;
          worker 0 writes the run directories (and the checkpoints: resuming a pod's run needs
          ROOT on a filesystem that every worker mounts).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from perturbjax.config import apply_overrides, config_to_json, load_config, load_sweep

TARGETS = ("local", "tpu-vm")
MAX_NAME = 100
MAX_JOB_TYPE = 64  # W&B's limit
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+:-]")


class LaunchError(Exception):
    """A launch that cannot start: bad arguments, config or sweep."""


@dataclasses.dataclass(frozen=True)
class Run:
    name: str                 # the workdir's name under the root
    workdir: str              # ROOT/name
    overrides: tuple[str, ...]  # command-line overrides, then the sweep entry's
    job_type: str             # W&B job type
    config_json: str = ""     # the resolved config, as the run's config.json will hold it

    def finished(self) -> bool:
        """Whether the workdir holds this run, done: a summary.json and the same config."""
        try:
            with open(os.path.join(self.workdir, "config.json")) as f:
                same = f.read() == self.config_json
        except OSError:
            return False
        return same and os.path.exists(os.path.join(self.workdir, "summary.json"))


def _hashed(text: str, safe: str, limit: int) -> str:
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{safe[:limit - 9]}-{digest}"


def run_name(sweep_overrides: Sequence[str]) -> str:
    """The workdir name of a run with these sweep overrides (see the module docstring)."""
    raw = ",".join(sweep_overrides) or "default"
    safe = _UNSAFE.sub("_", raw)
    if safe != raw or safe[0] in ".-" or len(safe) > MAX_NAME:
        return _hashed(raw, safe, MAX_NAME)
    return safe


def job_type(variant: str, sweep_overrides: Sequence[str]) -> str:
    text = ",".join(([variant] if variant else []) + list(sweep_overrides))
    return text if len(text) <= MAX_JOB_TYPE else _hashed(text, text, MAX_JOB_TYPE)


def experiment_name(config_spec: str) -> str:
    path, _, _ = config_spec.partition(".py:")
    return os.path.splitext(os.path.basename(path))[0]


def expand(config_spec: str, root: str, *, sweep: bool = False,
           overrides: Sequence[str] = ()) -> list[Run]:
    """The runs of a launch, each config built and checked.

    Raises:
      LaunchError: the config, an override or the sweep is invalid, the file has no
        get_sweep (with sweep=True), the sweep is empty, or two runs get one name.
    """
    _, _, variant = config_spec.partition(".py:")
    try:
        base = load_config(config_spec)
    except (ValueError, KeyError, FileNotFoundError, ImportError, TypeError) as e:
        raise LaunchError(f"--config: {e}")
    try:
        entries = load_sweep(config_spec, strict=False) if sweep else [[]]
    except (ImportError, TypeError, ValueError) as e:
        raise LaunchError(f"--sweep: {e}")
    if not entries:
        raise LaunchError(f"get_sweep() in {_file(config_spec)} returned no runs")
    runs, seen = [], {}
    for entry in entries:
        run_overrides = (*overrides, *entry)
        try:
            config_json = config_to_json(apply_overrides(base, run_overrides))
        except (ValueError, KeyError, TypeError) as e:
            raise LaunchError(f"run {entry}: {e}")
        name = run_name(entry)
        if name in seen:
            raise LaunchError(f"sweep entries {seen[name]} and {entry} get the same workdir "
                              f"{name!r}; every run needs its own")
        seen[name] = entry
        runs.append(Run(name, os.path.join(root, name), run_overrides, job_type(variant, entry),
                        config_json))
    return runs


def _file(config_spec: str) -> str:
    path, sep, _variant = config_spec.partition(".py:")
    return path + ".py" if sep else path


def train_args(config_spec: str, run: Run, group: str, *flags: str) -> list[str]:
    """The arguments after `perturbjax`: `train --config ... --workdir ... --group ... ...`,
    with `flags` (e.g. `--distributed`) before the config overrides."""
    return (["train", "--config", config_spec, "--workdir", run.workdir, "--group", group,
             "--job-type", run.job_type, "--no-progress", *flags]
            + [f"--config.{o}" for o in run.overrides])


def local_commands(config_spec: str, runs: Sequence[Run], group: str,
                   python: str | None = None) -> list[list[str]]:
    """`python -m perturbjax.cli train ...` per run, `python` being this interpreter by default."""
    return [[python or sys.executable, "-m", "perturbjax.cli", *train_args(config_spec, r, group)]
            for r in runs]


def run_local(commands: Sequence[list[str]], runs: Sequence[Run], parallel: int = 1,
              print_fn: Callable[[str], None] = print, poll_s: float = 0.2) -> int:
    """Runs the commands, `parallel` at a time; returns the number of failed runs."""
    if parallel < 1:
        raise LaunchError(f"--parallel must be at least 1, got {parallel}")
    pending = list(zip(commands, runs))
    running: list[tuple[subprocess.Popen, Run, float, object]] = []
    failed = 0
    total = len(pending)
    done = 0
    try:
        while pending or running:
            while pending and len(running) < parallel:
                command, run = pending.pop(0)
                os.makedirs(run.workdir, exist_ok=True)
                log = open(os.path.join(run.workdir, "train.log"), "a")
                # Own session: a terminal's Ctrl-C reaches only the launcher, which then sends
                # SIGTERM (checkpoint and exit) rather than SIGINT (no checkpoint) to the runs.
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
                running.append((proc, run, time.time(), log))
                print_fn(f"[launch] started  {run.name}  pid {proc.pid}  "
                         f"log {os.path.join(run.workdir, 'train.log')}")
            still = []
            for proc, run, start, log in running:
                rc = proc.poll()
                if rc is None:
                    still.append((proc, run, start, log))
                    continue
                log.close()
                done += 1
                failed += rc != 0
                state = "finished" if rc == 0 else "FAILED  "
                print_fn(f"[launch] {state} {run.name}  rc {rc}  {time.time() - start:.0f}s  "
                         f"workdir {run.workdir}  ({done}/{total})")
            running = still
            if running:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        for proc, run, _start, _log in running:
            proc.send_signal(signal.SIGTERM)  # the run saves a checkpoint and exits
        for proc, run, _start, log in running:
            proc.wait()
            log.close()
            print_fn(f"[launch] stopped  {run.name}  rc {proc.returncode}  workdir {run.workdir}")
        raise
    return failed


def _cd(repo_dir: str) -> str:
    # Quoting would stop the shell expanding a leading ~, so it stays outside the quotes.
    if repo_dir == "~":
        return "cd ~"
    if repo_dir.startswith("~/"):
        return f"cd ~/{shlex.quote(repo_dir[2:])}"
    return f"cd {shlex.quote(repo_dir)}"


def tpu_vm_commands(config_spec: str, runs: Sequence[Run], group: str, *, tpu: str, zone: str,
                    project: str | None = None, repo_dir: str = "~/perturbjax",
                    setup: str = "") -> list[list[str]]:
    """The gcloud argv lists: the setup one first, then one per run."""
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, "--zone", zone]
    if project:
        ssh += ["--project", project]
    ssh.append("--worker=all")
    activate = f"{_cd(repo_dir)} && . .venv/bin/activate"
    setup_cmd = (f"{_cd(repo_dir)} && {{ test -d .venv || python3 -m venv .venv; }} && "
                 f". .venv/bin/activate && pip install -e .")
    if setup.strip():
        setup_cmd += f" && {{ {setup.strip()} ; }}"
    lines = [ssh + [f"--command={setup_cmd}"]]
    for run in runs:
        # The workers of a pod are the processes of one run (one worker: one process).
        train = shlex.join(["perturbjax", *train_args(config_spec, run, group, "--distributed")])
        lines.append(ssh + [f"--command={activate} && {train}"])
    return lines


def launch(config_spec: str, root: str, target: str, *, sweep: bool = False,
           overrides: Sequence[str] = (), group: str | None = None, parallel: int = 1,
           dry_run: bool = False, tpu: str | None = None, zone: str | None = None,
           project: str | None = None, repo_dir: str = "~/perturbjax", setup: str = "",
           execute: bool = False, rerun: bool = False,
           print_fn: Callable[[str], None] = print) -> int:
    """Expands and runs (or prints) a launch; returns the process exit status. Locally, runs
    already finished with the same config are skipped unless `rerun`.

    Raises:
      LaunchError: bad arguments, config or sweep; gcloud missing with execute=True.
    """
    if target not in TARGETS:
        raise LaunchError(f"unknown --target {target!r}; expected one of {', '.join(TARGETS)}")
    if target == "tpu-vm":
        if not (tpu and zone):
            raise LaunchError("--target tpu-vm needs --tpu NAME and --zone ZONE")
        if parallel != 1:
            raise LaunchError("--parallel is for --target local (runs on one TPU VM cannot "
                              "overlap)")
    elif execute or tpu or zone or project:
        raise LaunchError("--execute, --tpu, --zone and --project are for --target tpu-vm")
    if execute and dry_run:
        raise LaunchError("--execute and --dry-run contradict each other")
    group = group or experiment_name(config_spec)
    runs = expand(config_spec, root, sweep=sweep, overrides=overrides)

    if target == "local":
        done = [] if rerun else [r for r in runs if r.finished()]
        for r in done:
            print_fn(f"[launch] skipped  {r.name}  (finished: summary.json, same config; "
                     f"--rerun to run it again)")
        runs = [r for r in runs if r not in done]
        commands = local_commands(config_spec, runs, group)
        if dry_run:
            for command in commands:
                print_fn(shlex.join(command))
            return 0
        print_fn(f"[launch] {len(runs)} run(s) of {config_spec} under {root}, "
                 f"{parallel} at a time, W&B group {group!r}")
        failed = run_local(commands, runs, parallel, print_fn)
        print_fn(f"[launch] {len(runs) - failed} finished, {failed} failed")
        return 1 if failed else 0

    lines = tpu_vm_commands(config_spec, runs, group, tpu=tpu, zone=zone, project=project,
                            repo_dir=repo_dir, setup=setup)
    if not execute:
        for line in lines:
            print_fn(shlex.join(line))
        return 0
    if shutil.which("gcloud") is None:
        raise LaunchError("--execute needs the gcloud CLI on PATH (install the Google Cloud SDK, "
                          "or drop --execute to print the commands)")
    for i, line in enumerate(lines):
        label = "setup" if i == 0 else runs[i - 1].name
        print_fn(f"[launch] started  {label}")
        rc = subprocess.call(line)
        if rc != 0:
            print_fn(f"[launch] FAILED   {label}  rc {rc}; stopping (rerun to resume)")
            return 1
        print_fn(f"[launch] finished {label}  rc 0" +
                 ("" if i == 0 else f"  workdir {runs[i - 1].workdir} on each worker"))
    return 0
