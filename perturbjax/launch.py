"""`perturbjax launch`: one experiment, or its whole sweep, as `perturbjax train` runs.

    perturbjax launch --config experiments/FILE.py[:VARIANT] [--sweep] --root DIR \
        --target local|tpu-vm [options] [--config.KEY=VALUE ...]
    perturbjax launch ... --target tpu-vm --tpu NAME --zone ZONE [--project P] \
        [--repo-url URL] [--ref REF] [--repo-dir DIR] [--python PYTHON] [--setup "..."] \
        [--data gs://BUCKET/PATH] [--data-dir DIR] [--root gs://BUCKET/PATH] [--execute]

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
          lines: one setup line, then one line per run, which runs `perturbjax train
          --distributed` in the foreground on every worker of the TPU VM: the workers of a pod
          are the processes of one multi-host run, which `jax.distributed.initialize()` finds
          by itself on TPU VMs (a pod of several workers needs
          `--config.train.data_parallel=True`). The lines are meant to run one after another:
          a TPU is held by one process, so runs on the same VM cannot overlap, and a line
          returns when its run has finished on all workers. `--execute` runs them so, stopping
          at the first failure. With a gs:// ROOT the run lines need bash as the workers' login
          shell (they read PIPESTATUS).

          The setup line, on every worker, from nothing: clones `--repo-url` into `--repo-dir`
          (default ~/perturbjax) unless a clone is there, fetches `--ref` from the URL and
          checks it out detached (so it is idempotent, and a relaunch moves every worker to the
          ref); checks that `--python` (default python3) is Python >= 3.11, else stops with a
          message naming the interpreter and its version; makes `.venv` with it if absent
          (and checks the venv's version too); `pip install -e .`; with `--data gs://...`,
          exports PERTURBJAX_DATA_DIR=`--data-dir` (default ~/perturbjax-data) and copies the
          bucket folder there with `gcloud storage rsync --recursive`; then runs `--setup`
          (e.g. "pip install -U 'jax[tpu]'"; with the variable set, `perturbjax data fetch
          --all` fills the same directory). `--repo-url` defaults to this checkout's `origin`
          and `--ref` to its HEAD commit (uncommitted or unpushed changes are not on the
          workers); with neither an origin nor `--repo-url` the launch stops before printing.

          Every run line exports PERTURBJAX_DATA_DIR (with `--data` or `--data-dir`), so a
          relative `data.files.*` path that is not found in the repository directory is read
          from the staged data. ROOT is relative to the repository directory on the VM, or
          `gs://BUCKET/PATH`: then each run trains into `~/perturbjax-runs/BUCKET/PATH/NAME` on
          the workers, its output also goes to `train.log` there, and worker 0 (JAX's process
          0, the one that writes the run files) copies that directory to ROOT/NAME with `gcloud
          storage rsync --recursive` when the run ends, after a failed run too; the line exits
          with the run's status (1 if the run succeeded but the copy failed). Checkpoints live
          in the workdir on the workers: relaunching on the same single-worker VM resumes from
          them (on a new one, copy ROOT/NAME into that directory first). Resuming a pod's run
          needs its workdir on a filesystem that every worker mounts (a relative ROOT there),
          as today: every worker takes part in the checkpoint saves and restores.
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
from perturbjax.data.registry import DATA_DIR_ENV

TARGETS = ("local", "tpu-vm")
MAX_NAME = 100
MAX_JOB_TYPE = 64  # W&B's limit
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+:-]")
MIN_PYTHON = (3, 11)  # jax 0.10 and flax 0.12 need it
DEFAULT_REPO_DIR = "~/perturbjax"
DEFAULT_DATA_DIR = "~/perturbjax-data"
LOCAL_RUNS = "~/perturbjax-runs"
# The worker's index in its TPU slice, which JAX's Cloud TPU cluster detection takes as the
# process id (jax/_src/clusters/cloud_tpu_cluster.py).
_WORKER_NUMBER = ("curl -s -H 'Metadata-Flavor: Google' http://metadata.google.internal/"
                  "computeMetadata/v1/instance/attributes/agent-worker-number")


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


def _word(path: str) -> str:
    """A path as one shell word on the worker. Quoting would stop the shell expanding a leading
    ~, so it stays outside the quotes."""
    if path == "~":
        return "~"
    if path.startswith("~/"):
        return f"~/{shlex.quote(path[2:])}"
    return shlex.quote(path)


def _cd(repo_dir: str) -> str:
    return f"cd {_word(repo_dir)}"


def _env_value(path: str) -> str:
    # `export X=~/...` relies on the shell expanding ~ after `=`; $HOME needs no such luck.
    return f'"$HOME"/{shlex.quote(path[2:])}' if path.startswith("~/") else _word(path)


def _git(*args: str) -> str | None:
    """`git ARGS` in this package's checkout; its output, or None where git or the value is
    missing."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        done = subprocess.run(["git", "-C", here, *args], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def _reachable(url: str) -> bool:
    """Whether a git URL names another machine (scheme://host/... or scp-like host:path), so the
    workers can clone it; a local path or file:// cannot be."""
    if "://" in url:
        return not url.startswith("file://")
    return re.match(r"^[^/]+:", url) is not None


def checkout_source(repo_url: str | None = None, ref: str | None = None) -> tuple[str, str]:
    """What the workers check out: (URL, REF). Defaults: this checkout's `origin` and its HEAD
    commit; with an explicit URL and no git here, the remote's default branch (HEAD).

    Raises:
      LaunchError: no URL given and none to be had from this checkout.
    """
    if not repo_url:
        origin = _git("remote", "get-url", "origin")
        if origin is None:
            raise LaunchError("--target tpu-vm checks the project out on every worker, and this "
                              "checkout has no `origin` remote (or is not a git checkout): give "
                              "--repo-url URL (and --ref REF)")
        if not _reachable(origin):
            raise LaunchError(f"this checkout's origin is {origin!r}, a local path the workers "
                              f"cannot clone: give --repo-url URL (and --ref REF)")
        repo_url = origin
    return repo_url, ref or _git("rev-parse", "HEAD") or "HEAD"


def _bucket(url: str, option: str) -> str:
    """`gs://BUCKET[/PATH]` without a trailing slash; LaunchError otherwise."""
    if not url.startswith("gs://") or not url[len("gs://"):].split("/")[0]:
        raise LaunchError(f"{option} must be a Cloud Storage folder, gs://BUCKET/PATH; "
                          f"got {url!r}")
    return url.rstrip("/")


def local_run_dir(root: str, name: str) -> str:
    """Where a run with a gs:// root trains on the workers: LOCAL_RUNS/BUCKET/PATH/NAME, so runs
    of different roots never share a workdir."""
    return f"{LOCAL_RUNS}/{root[len('gs://'):].rstrip('/')}/{name}"


def _python_check(python: str, what: str) -> str:
    """Shell: stop with a message unless `python` (a shell word) is at least MIN_PYTHON."""
    need = ".".join(map(str, MIN_PYTHON))
    what = re.sub(r'([\\"$`])', r"\\\1", what)  # literal inside the double quotes
    return (f"{{ {python} -c 'import sys; sys.exit(sys.version_info < {MIN_PYTHON})' || "
            f"{{ echo \"perturbjax needs Python >= {need}; {what} on $(hostname) is "
            f"$({python} -V 2>&1)\" >&2; exit 1; }}; }}")


def tpu_vm_commands(config_spec: str, runs: Sequence[Run], group: str, *, tpu: str, zone: str,
                    project: str | None = None, repo_dir: str = DEFAULT_REPO_DIR,
                    setup: str = "", repo_url: str, ref: str, python: str = "python3",
                    data: str | None = None, data_dir: str | None = None,
                    root: str = "") -> list[list[str]]:
    """The gcloud argv lists: the setup one first, then one per run (see the module docstring).

    `data` (gs://...) is copied into `data_dir` (default DEFAULT_DATA_DIR) by the setup line;
    with `data` or `data_dir`, every line exports PERTURBJAX_DATA_DIR. With a gs:// `root`, runs
    train into local_run_dir() and worker 0 copies each to ROOT/NAME when it ends.
    """
    ssh = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", tpu, "--zone", zone]
    if project:
        ssh += ["--project", project]
    ssh.append("--worker=all")
    if data and not data_dir:
        data_dir = DEFAULT_DATA_DIR
    export = f"export {DATA_DIR_ENV}={_env_value(data_dir)}" if data_dir else ""
    repo, py = _word(repo_dir), _word(python)
    url, quoted_ref = shlex.quote(repo_url), shlex.quote(ref)
    steps = [
        # Clone once; afterwards fetch the ref and check it out (detached), so relaunching with
        # another --ref moves every worker to it.
        f"{{ test -d {repo}/.git || git clone -q {url} {repo}; }}",
        _cd(repo_dir),
        f"git fetch -q {url} {quoted_ref}",
        "git checkout -q --detach FETCH_HEAD",
        _python_check(py, f"{python} (--python)"),
        f"{{ test -d .venv || {py} -m venv .venv; }}",
        ". .venv/bin/activate",
        # A .venv left by an older interpreter would pass the check above and fail later.
        _python_check("python", f"{repo_dir}/.venv (remove it to rebuild)"),
        "pip install -e .",
    ]
    if export:
        steps.append(export)
    if data:
        steps += [f"mkdir -p {_word(data_dir)}",
                  f"gcloud storage rsync --recursive {shlex.quote(data)} {_word(data_dir)}"]
    if setup.strip():
        steps.append(f"{{ {setup.strip()} ; }}")
    lines = [ssh + [f"--command={' && '.join(steps)}"]]
    prefix = " && ".join([_cd(repo_dir), ". .venv/bin/activate"] + ([export] if export else []))
    for run in runs:
        # The workers of a pod are the processes of one run (one worker: one process).
        if not root.startswith("gs://"):
            train = shlex.join(["perturbjax", *train_args(config_spec, run, group,
                                                          "--distributed")])
            lines.append(ssh + [f"--command={prefix} && {train}"])
            continue
        local = local_run_dir(root, run.name)
        argv = ["perturbjax", *train_args(config_spec, dataclasses.replace(run, workdir=local),
                                          group, "--distributed")]
        words = [shlex.quote(a) for a in argv]
        words[argv.index("--workdir") + 1] = _word(local)
        remote = shlex.quote(f"{root.rstrip('/')}/{run.name}")
        # Every worker logs to its own train.log; worker 0 (JAX's process 0, which writes the run
        # files) copies the workdir to the bucket, after a failed run too, and the line keeps
        # the run's exit status (or 1 if the run succeeded and the copy did not).
        lines.append(ssh + [
            f"--command={prefix} && mkdir -p {_word(local)} && "
            f"{{ {' '.join(words)} 2>&1 | tee -a {_word(local)}/train.log; "
            f"rc=${{PIPESTATUS[0]}}; "
            f"if [ \"$({_WORKER_NUMBER})\" = 0 ]; then "
            f"gcloud storage rsync --recursive {_word(local)} {remote} || "
            f"{{ [ \"$rc\" -ne 0 ] || rc=1; }}; fi; exit \"$rc\"; }}"])
    return lines


def launch(config_spec: str, root: str, target: str, *, sweep: bool = False,
           overrides: Sequence[str] = (), group: str | None = None, parallel: int = 1,
           dry_run: bool = False, tpu: str | None = None, zone: str | None = None,
           project: str | None = None, repo_dir: str = DEFAULT_REPO_DIR, setup: str = "",
           repo_url: str | None = None, ref: str | None = None, python: str | None = None,
           data: str | None = None, data_dir: str | None = None,
           execute: bool = False, rerun: bool = False,
           print_fn: Callable[[str], None] = print) -> int:
    """Expands and runs (or prints) a launch; returns the process exit status. Locally, runs
    already finished with the same config are skipped unless `rerun`.

    Raises:
      LaunchError: bad arguments, config or sweep; gcloud missing with execute=True; no
        repository to check out on the workers.
    """
    if target not in TARGETS:
        raise LaunchError(f"unknown --target {target!r}; expected one of {', '.join(TARGETS)}")
    if target == "tpu-vm":
        if not (tpu and zone):
            raise LaunchError("--target tpu-vm needs --tpu NAME and --zone ZONE")
        if parallel != 1:
            raise LaunchError("--parallel is for --target local (runs on one TPU VM cannot "
                              "overlap)")
        if data:
            data = _bucket(data, "--data")
        if root.startswith("gs://"):
            root = _bucket(root, "--root")
        for option, value in (("--repo-url", repo_url), ("--ref", ref), ("--python", python),
                              ("--data-dir", data_dir), ("--repo-dir", repo_dir)):
            if value is not None and not value.strip():
                raise LaunchError(f"{option} is empty")
    else:
        given = [option for option, value in (
            ("--execute", execute), ("--tpu", tpu), ("--zone", zone), ("--project", project),
            ("--data", data), ("--data-dir", data_dir), ("--repo-url", repo_url),
            ("--ref", ref), ("--python", python)) if value]
        if given:
            raise LaunchError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for "
                              f"--target tpu-vm")
        if root.startswith("gs://"):
            raise LaunchError(f"--root {root}: a gs:// root is for --target tpu-vm; locally, "
                              f"give a directory")
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

    if execute and shutil.which("gcloud") is None:
        raise LaunchError("--execute needs the gcloud CLI on PATH (install the Google Cloud SDK, "
                          "or drop --execute to print the commands)")
    repo_url, ref = checkout_source(repo_url, ref)
    lines = tpu_vm_commands(config_spec, runs, group, tpu=tpu, zone=zone, project=project,
                            repo_dir=repo_dir, setup=setup, repo_url=repo_url, ref=ref,
                            python=python or "python3", data=data, data_dir=data_dir, root=root)
    if not execute:
        for line in lines:
            print_fn(shlex.join(line))
        return 0
    for i, line in enumerate(lines):
        label = "setup" if i == 0 else runs[i - 1].name
        print_fn(f"[launch] started  {label}")
        rc = subprocess.call(line)
        if rc != 0:
            print_fn(f"[launch] FAILED   {label}  rc {rc}; stopping (rerun to resume)")
            return 1
        where = ("" if i == 0 else f"  workdir {runs[i - 1].workdir}" +
                 (" (copied from worker 0)" if root.startswith("gs://") else " on each worker"))
        print_fn(f"[launch] finished {label}  rc 0{where}")
    return 0
