"""The `perturbjax` command: train, launch, compare, explain, predict, repurpose, inspect run
directories, and manage data files and cell-graph datasets. `perturbjax COMMAND --help`
describes each command; the documentation's command-line page (docs/cli.md, generated from this
parser) lists them all, and its guides show them at work.

`--config.KEY=VALUE` overrides any config field (dotted keys reach nested fields); an unknown
key or a value of the wrong type is an error before any work starts.

A mistake in what the user gave (a config key or value, a missing or malformed file, a workdir
that does not match) ends the command with one line, `perturbjax: error: ...`, and exit status
2; `--debug` (or PERTURBJAX_DEBUG=1) shows the traceback instead. Other errors are bugs and keep
their traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import sys
import warnings
from typing import NoReturn

from perturbjax import __version__
from perturbjax.config import apply_overrides, load_config
from perturbjax.eval.compare import (
    DEFAULT_METRICS,
    compare_roots,
    markdown,
    provenance,
    write_outputs,
    write_section,
)
from perturbjax.runtime import tune_host_allocator


def _split_overrides(rest: list[str]) -> list[str]:
    """`--config.a.b=1` or `--config.a.b 1` -> `a.b=1`; anything else is an error."""
    overrides, i = [], 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--config."):
            raise SystemExit(f"perturbjax: unrecognised argument {arg!r} "
                             "(config overrides look like --config.train.num_steps=100)")
        key = arg[len("--config."):]
        if "=" not in key:
            if i + 1 >= len(rest):
                raise SystemExit(f"perturbjax: {arg} needs a value")
            key, i = f"{key}={rest[i + 1]}", i + 1
        overrides.append(key)
        i += 1
    return overrides


_PROCESS_FLAGS = ("--coordinator-address", "--num-processes", "--process-id")


def _join_processes(args) -> None:
    """Multi-host: joins JAX's distributed runtime before anything touches a JAX device.

    `--coordinator-address HOST:PORT --num-processes N --process-id I` (all three, in each
    process; process 0 serves at HOST:PORT) or `--distributed` alone, with which JAX detects them
    (the workers of a Cloud TPU VM pod, SLURM, Open MPI). Neither: one process, nothing called.
    """
    given = [args.coordinator_address, args.num_processes, args.process_id]
    if not args.distributed and given == [None] * 3:
        return
    if None in given and given != [None] * 3:
        missing = [flag for flag, value in zip(_PROCESS_FLAGS, given) if value is None]
        raise SystemExit(f"perturbjax train: {', '.join(_PROCESS_FLAGS)} go together (missing "
                         f"{', '.join(missing)}); or pass --distributed alone to let JAX detect "
                         f"them (TPU VM pods, SLURM, Open MPI)")
    from perturbjax.training.parallel import initialize_processes

    try:
        initialize_processes(*given)
    except (ValueError, RuntimeError) as e:
        hint = (f" (JAX detected no cluster; elsewhere pass {', '.join(_PROCESS_FLAGS)})"
                if given == [None] * 3 else "")
        raise SystemExit(f"perturbjax train: cannot join JAX's distributed runtime: {e}{hint}")


def _train(args, rest) -> None:
    # Imported here to keep `--help` fast.
    from perturbjax.runs import train
    from perturbjax.training.checkpoint import Preempted, WorkdirConflict
    from perturbjax.training.parallel import ProcessSetupError

    try:
        config = apply_overrides(load_config(args.config), _split_overrides(rest))
    except (ValueError, KeyError, FileNotFoundError, ImportError, TypeError) as e:
        raise SystemExit(f"perturbjax: --config {args.config}: {e}")
    if not args.show_config and not args.workdir:
        raise SystemExit("perturbjax train: --workdir is required (or pass --show-config)")
    if args.show_config:
        from perturbjax.config import describe_experiment

        print(describe_experiment(args.config, config))
        return
    _join_processes(args)
    path, _, variant = args.config.partition(".py:")
    experiment = os.path.splitext(os.path.basename(path))[0]
    try:
        summary = train(config, args.workdir, experiment=experiment, variant=variant,
                        progress=not args.no_progress, group=args.group,
                        job_type=args.job_type).summary
    except (WorkdirConflict, ProcessSetupError, FloatingPointError) as e:
        raise SystemExit(f"perturbjax: {e}")
    except Preempted as e:
        # Exit status 0: the run stopped as asked, with its state saved.
        print(f"perturbjax: {e}. The run is not finished (no summary.json); rerun the same "
              f"command to resume from step {e.step}.", file=sys.stderr)
        return
    import jax

    if jax.process_index() == 0:
        _print_table(summary)


def _print_table(summary: dict) -> None:
    """Test metrics of the model and each baseline, selection metric first."""
    keys = summary.get("report_metrics") or [summary["selection_metric"]]
    rows = [(f"{summary['model']} (run)", summary["test"])] + [
        (name, b["test"]) for name, b in summary["baselines"].items()]
    from perturbjax.eval.metrics import describe

    width = max(len(r[0]) for r in rows)
    split = summary.get("split") or {}
    fold = f", fold {split['fold']} of {split['num_folds']}" if split.get("num_folds") else ""
    print(f"\ntest metrics: {split.get('test', '?')} test examples of a "
          f"{split.get('kind', '?')} split{fold}; model selected on validation")
    print(" ".join([f"{'model':<{width}}"] + [f"{k:>17}" for k in keys]))
    for name, metrics in rows:
        print(" ".join([f"{name:<{width}}"] + [f"{metrics[k]:>17.4f}" for k in keys]))
    for k in keys:
        print(f"  {describe(k)}")


def _compare(args, rest) -> None:
    if rest:
        raise SystemExit(f"perturbjax compare: unrecognised arguments {rest}")
    if not args.runs and not args.wandb:
        raise SystemExit("perturbjax compare: give a ROOT of run directories or --wandb "
                         "ENTITY/PROJECT/GROUP")
    try:
        comparison, groups = compare_roots(args.runs, wandb=args.wandb, part=args.part,
                                           metrics=args.metrics.split(","), paired=args.paired)
        table = markdown(comparison)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"perturbjax compare: {e}")
    print(table)
    out = args.out or (args.runs[0] if args.runs else
                       f"comparison-{args.wandb[0].rsplit('/', 1)[-1]}")
    try:
        paths = write_outputs(comparison, out)
    except OSError as e:
        raise SystemExit(f"perturbjax compare: cannot write to --out {out}: {e}")
    print(f"wrote {', '.join(paths)}")
    if not args.write:
        return
    path, _, section = args.write.rpartition(":")
    if not path or not section:
        raise SystemExit(f"perturbjax compare: --write takes FILE:SECTION, got {args.write!r}")
    paired = f" --paired '{args.paired}'" if args.paired else ""
    metrics = f" --metrics {args.metrics}" if args.metrics else ""
    sources = " ".join([*args.runs, *[f"--wandb {w}" for w in args.wandb]])
    command = (f"perturbjax compare {sources} --part {args.part}{metrics}{paired} "
               f"--write {args.write}")
    try:
        write_section(path, section, table + "\n\n" + provenance(groups, command))
    except (OSError, ValueError) as e:
        raise SystemExit(f"perturbjax compare: {e}")
    print(f"wrote the {section!r} section of {path}")


def _explain(args, rest) -> None:
    if rest:
        raise SystemExit(f"perturbjax explain: unrecognised arguments {rest}")
    from tqdm import tqdm

    from perturbjax.runs import load_run

    for flag in ("genes", "paths", "steps"):
        if getattr(args, flag) < 1:
            raise SystemExit(f"perturbjax explain: --{flag} must be at least 1")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", args.drug)
    out = args.out or os.path.join(args.workdir, "explain", slug)
    explanation = load_run(args.workdir).explain(
        args.drug, cell=args.cell, genes=args.genes, paths=args.paths, steps=args.steps, out=out,
        progress=lambda xs: tqdm(xs, desc="integrated gradients", disable=args.no_progress))
    for path in explanation.written:
        print(f"wrote {path}")


def _predict(args, rest) -> None:
    if rest:
        raise SystemExit(f"perturbjax predict: unrecognised arguments {rest}")
    from perturbjax.runs import load_run

    if bool(args.smiles) == bool(args.smiles_file):
        raise SystemExit("perturbjax predict: give --smiles or --smiles-file (one of them)")
    if args.smiles_file and (args.targets or args.name):
        raise SystemExit("perturbjax predict: --targets and --name go with --smiles; a "
                         "--smiles-file gives them in its name and targets columns")
    run = load_run(args.workdir)
    frame = run.predict(args.smiles, targets=args.targets, name=args.name,
                        library=args.smiles_file, cell=args.cell, dose=args.dose,
                        time=args.time, source=args.smiles_file or "--smiles")
    from perturbjax.predict import write_signatures

    write_signatures(args.out, frame)
    print(f"wrote {args.out}: {frame.shape[1] - 2} drug(s) x {len(frame)} readout genes "
          f"({frame.attrs['condition']})")


def _repurpose(args, rest) -> None:
    if rest:
        raise SystemExit(f"perturbjax repurpose: unrecognised arguments {rest}")
    from perturbjax.runs import load_run

    if args.top_k < 1:
        raise SystemExit("perturbjax repurpose: --top-k must be at least 1")
    run = load_run(args.workdir)
    stem = os.path.splitext(os.path.basename(args.signature))[0]
    out = args.out or os.path.join(args.workdir, "repurpose", stem)
    rows = run.repurpose(args.signature, library=args.library, top_k=args.top_k, cell=args.cell,
                         dose=args.dose, time=args.time, out=out)
    for path in rows.attrs["written"]:
        print(f"wrote {path}")
    for r in rows.head(10).itertuples():
        print(f"{r.rank:>4}  {r.connectivity:+.3f}  {r.drug}  ({r.source}, {r.part})")


def _runs(args, rest) -> None:
    """`runs show W`: what a run holds, from its files (no data loaded when it has parts.json)."""
    if rest:
        raise SystemExit(f"perturbjax runs: unrecognised arguments {rest}")
    import textwrap

    from perturbjax.runs import load_run

    run = load_run(args.workdir)
    record = run.parts_record()
    if args.json:
        print(json.dumps(record, indent=2))
        return
    c = run.record
    head = (f"{run.workdir}: {c.get('model', {}).get('name', '?')} on "
            f"{c.get('data', {}).get('source', '?')}, {c.get('data', {}).get('split', '?')} split, "
            f"seed {c.get('seed', '?')}")
    try:
        summary = run.summary
        metric = summary["selection_metric"]
        head += f"; test {metric} {summary['test'][metric]:.4f}"
    except (ValueError, KeyError):
        head += "; unfinished (no summary.json)"
    print(head)

    def listing(title, ids, names):
        items = [f"{i} ({n})" if n and n != i else i for i, n in zip(ids, names)]
        print(textwrap.fill(", ".join(items), width=100, initial_indent=f"  {title}: ",
                            subsequent_indent="    "))

    for part, p in record["parts"].items():
        print(f"{part}: {p['conditions']} conditions, {len(p['drugs']['id'])} drugs, "
              f"{len(p['cell_lines']['id'])} cell lines")
        listing("drugs", p["drugs"]["id"], p["drugs"]["name"])
        listing("cell lines", p["cell_lines"]["id"], p["cell_lines"]["name"])
    genes = record["readout_genes"]
    print(f"readout genes: {len(genes['id'])} (id, symbol)")
    listing("genes", genes["id"], genes["symbol"])


def _launch(args, rest) -> None:
    from perturbjax import launch

    try:
        status = launch.launch(
            args.config, args.root, args.target, sweep=args.sweep,
            overrides=_split_overrides(rest), group=args.group, parallel=args.parallel,
            dry_run=args.dry_run, tpu=args.tpu, zone=args.zone, project=args.project,
            repo_dir=args.repo_dir, setup=args.setup, repo_url=args.repo_url, ref=args.ref,
            python=args.python, data=args.data, data_dir=args.data_dir, execute=args.execute,
            rerun=args.rerun)
    except launch.LaunchError as e:
        raise SystemExit(f"perturbjax launch: {e}")
    except KeyboardInterrupt:
        raise SystemExit(130)
    if status:
        raise SystemExit(status)


def _data_check(args, rest) -> None:
    """`data check`: the files source's mapping report, without training."""
    from perturbjax.data.kg_lincs import FilesConfig, FilterConfig, check
    from perturbjax.data.sources import frozen_kwargs as _frozen

    if not args.config:
        raise SystemExit("perturbjax data check: --config FILE[:VARIANT] is required (e.g. "
                         "experiments/kg_lincs.py with --config.data.files.KEY=PATH overrides)")
    try:
        config = apply_overrides(load_config(args.config), _split_overrides(rest))
    except (ValueError, KeyError, FileNotFoundError, ImportError, TypeError) as e:
        raise SystemExit(f"perturbjax data check: --config {args.config}: {e}")
    if config.get("data", {}).get("source") != "files":
        raise SystemExit(f"perturbjax data check: {args.config} has data.source "
                         f"{config.get('data', {}).get('source')!r}; check reads the files "
                         f"source (data.source=files, as experiments/kg_lincs.py)")
    summary, reports = check(FilesConfig(**_frozen(config.data.files)),
                             FilterConfig(**_frozen(config.data.filters)), config.data.collapse)
    for source, report in reports.items():
        print(f"\n== {source}", file=sys.stderr)
        for key, value in report["kept"].items():
            print(f"   kept     {value:>9}  {key}", file=sys.stderr)
        for reason, count in report["dropped"].items():
            examples = ", ".join(report["examples"].get(reason, [])[:3])
            print(f"   dropped  {count:>9}  {reason}" + (f"  (e.g. {examples})" if examples
                                                        else ""), file=sys.stderr)
        for key, value in report["notes"].items():
            print(f"   note     {key}: {value}", file=sys.stderr)
    print(json.dumps(summary, indent=2))


def _data(args, rest) -> None:
    from perturbjax.data import registry

    if args.action == "check":
        return _data_check(args, rest)

    if rest:
        raise SystemExit(f"perturbjax data: unrecognised arguments {rest}")
    if args.action == "list":
        print(f"data directory: {registry.data_dir()} (set ${registry.DATA_DIR_ENV} to change)")
        for name, f in registry.FILES.items():
            kind = "optional" if f.optional else "required"
            print(f"{registry.status(name):>9}  {name:<38} {kind:<8}  {f.licence:<34} "
                  f"{f.description}")
        return
    if args.action == "verify":
        try:
            states = {name: registry.status(name) for name in (args.names or registry.FILES)}
        except KeyError as e:
            raise SystemExit(f"perturbjax data verify: {e.args[0]}")
        # A file the user names is required; of all files, the optional ones may be missing.
        optional = {n for n in states if registry.FILES[n].optional and not args.names}
        for name, state in states.items():
            print(f"{state:>9}  {registry.data_dir() / name}"
                  + ("  (optional)" if name in optional else ""))
        bad = [n for n, s in states.items()
               if s == "corrupt" or (s == "missing" and n not in optional)]
        if bad:
            raise SystemExit(f"perturbjax data verify: {len(bad)} file(s) missing or corrupt: "
                             f"{bad}; `perturbjax data fetch --all` fetches those with a "
                             f"download address")
        absent = [n for n, s in states.items() if s == "missing"]
        print(f"{len(states) - len(absent)} of {len(states)} file(s) present and not corrupt"
              + (f"; missing but optional (no built-in experiment needs them): {absent}"
                 if absent else ""))
        return
    if args.action == "fetch":
        if args.all == bool(args.names):
            raise SystemExit("perturbjax data fetch: name the files to fetch or give --all, "
                             "not both" if args.all else
                             "perturbjax data fetch: name the files to fetch, or give --all "
                             "(see `perturbjax data list`)")
        try:
            outcomes = registry.fetch_all(None if args.all else args.names, force=args.force,
                                          print_fn=lambda line: print(line, flush=True))
        except KeyError as e:
            raise SystemExit(f"perturbjax data fetch: {e.args[0]}")
        by = {o: [n for n, got in outcomes.items() if got == o] for o in registry.FETCH_OUTCOMES}
        print(f"{len(by['fetched'])} fetched, {len(by['present'])} already present, "
              f"{len(by['manual'])} to get by hand, {len(by['failed'])} failed; data directory "
              f"{registry.data_dir()}")
        if by["manual"] and args.all:
            print(f"no direct download (see each line above): {by['manual']}")
        failed = by["failed"] + ([] if args.all else by["manual"])
        if failed:
            raise SystemExit(f"perturbjax data fetch: {len(failed)} file(s) not fetched: "
                             f"{failed} (reasons above)")
        return
    # summary
    from perturbjax.data.formats import summarise

    if not (args.format and args.path):
        raise SystemExit("perturbjax data summary: --format and --path are required "
                         "(formats: `perturbjax data --help`)")
    summary, report = summarise(args.format, args.path)
    print(report, file=sys.stderr)
    print(json.dumps(summary, indent=2))


def _tosg(args, rest) -> None:
    if rest:
        raise SystemExit(f"perturbjax tosg: unrecognised arguments {rest}")
    if args.action == "build":
        from perturbjax.data.tosg_build import build_from_anndata

        missing = [f"--{n}" for n in ("h5ad", "network", "out") if not getattr(args, n)]
        if missing:
            raise SystemExit(f"perturbjax tosg build: {', '.join(missing)} required")
        report = build_from_anndata(
            args.h5ad, args.network, args.out, network_format=args.network_format,
            label_columns=args.label_columns, donor_column=args.donor_column,
            dataset_id=args.dataset_id, gene_column=args.gene_column, text_dim=args.text_dim,
            layer=args.layer, allow_negative=args.allow_negative)
        print(f"wrote {args.out}: {report['samples']} samples, {report['genes']} genes (nodes); "
              f"{report['genes_matched']} of the network's {report['network_genes']} genes and "
              f"{report['edges_matched']} of its {report['network_edges']} interactions matched "
              f"(report in {os.path.join(args.out, 'build_report.json')})")
        return
    from perturbjax.data.tosg import TOSGDataset

    if not args.root:
        raise SystemExit("perturbjax tosg summary: --root is required")
    dataset = TOSGDataset(args.root)
    summary = dataset.summary()
    if args.label_column:
        codes, classes, known = dataset.labels(args.label_column)
        summary["labels"] = {dataset.column(args.label_column): {
            c: int((codes == i).sum()) for i, c in enumerate(classes)} | {
            "(unknown)": int((~known).sum())}}
    donors = dataset.donors()
    summary["donors"] = None if donors is None else len(set(donors) - {""})
    print(json.dumps(summary, indent=2))


def _user_errors() -> tuple[type[BaseException], ...]:
    """What a user's input can raise: the project's own error types, and the ValueError /
    OSError (missing file, unreadable directory, malformed record) that loaders and config
    checks raise with a message naming the file, record or key. A module not yet imported
    raised nothing, so it is not imported here (a fast refusal stays fast)."""
    errors = [ValueError, OSError]  # WorkdirConflict is a ValueError
    for module, name in (("perturbjax.training.parallel", "ProcessSetupError"),
                         ("perturbjax.launch", "LaunchError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def _fail(message: str) -> NoReturn:
    """One line on stderr and exit status 2; the SystemExit still carries the message."""
    message = " ".join(str(message).split())  # one line, whatever the message held
    print(f"perturbjax: error: {message}", file=sys.stderr)
    error = SystemExit(message)
    error.code = 2
    raise error


@contextlib.contextmanager
def _messages():
    """For the command's duration, the project's log messages (loading stages, warnings) go to
    stderr as `perturbjax: ...` lines, instead of through whatever the root logger does, and its
    Python warnings (`PerturbjaxWarning`) as one `perturbjax: warning: ...` line each."""
    logger = logging.getLogger("perturbjax")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("perturbjax: %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    from perturbjax import PerturbjaxWarning

    show = warnings.showwarning

    def one_line(message, category, *args, **kwargs):
        if issubclass(category, PerturbjaxWarning):
            print(f"perturbjax: warning: {' '.join(str(message).split())}", file=sys.stderr)
        else:
            show(message, category, *args, **kwargs)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", PerturbjaxWarning)
            warnings.showwarning = one_line
            yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def build_parser() -> argparse.ArgumentParser:
    """The `perturbjax` command line: every command, option and help text (the CLI reference in
    the docs is generated from it)."""
    parser = argparse.ArgumentParser(prog="perturbjax", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a user error (also PERTURBJAX_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"perturbjax {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train", help="train and evaluate one run",
        description="Train the configured model, fit the configured baselines on the same split, "
                    "and write config.json, metrics.jsonl and summary.json to the workdir. "
                    "A workdir with checkpoints (train.checkpoint.every > 0) is resumed exactly "
                    "from the latest one; one with another config is refused. SIGTERM or a first Ctrl-C saves a "
                    "checkpoint and exits with status 0 (a second Ctrl-C aborts). Further arguments --config.KEY=VALUE override config fields. "
                    "Multi-host: start one process per host (or several on one machine) with "
                    "--coordinator-address, --num-processes and --process-id, or --distributed "
                    "where JAX detects them (TPU VM pods); train.data_parallel must be on, the "
                    "workdir on a filesystem all processes see, and process 0 alone writes the run files.")
    train.add_argument("--config", required=True, help="experiment file, optionally with :VARIANT")
    train.add_argument("--workdir", help="run directory (created if missing); required "
                                         "unless --show-config")
    train.add_argument("--show-config", action="store_true",
                       help="print the experiment's variants and its resolved config (with the "
                            "overrides), and exit without training")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--group", help="W&B group (default: the experiment file's name)")
    train.add_argument("--job-type", help="W&B job type (default: the variant)")
    train.add_argument("--coordinator-address", "--coordinator_address", metavar="HOST:PORT",
                       help="multi-host: process 0's address, the same in every process")
    train.add_argument("--num-processes", "--num_processes", type=int, metavar="N",
                       help="multi-host: the number of processes")
    train.add_argument("--process-id", "--process_id", type=int, metavar="I",
                       help="multi-host: this process's index, 0 to N-1")
    train.add_argument("--distributed", action="store_true",
                       help="multi-host without the three options above: JAX detects them "
                            "(Cloud TPU VM pods, SLURM, Open MPI)")
    launch = commands.add_parser(
        "launch", help="run an experiment or its sweep as train runs, locally or on a TPU VM",
        description="Expand an experiment into `perturbjax train` runs (one, or one per "
                    "get_sweep() entry with --sweep), each in ROOT/NAME, NAME being its sweep "
                    "overrides joined by ',' made filesystem-safe (`default` without any), all "
                    "in one W&B group with the variant and sweep overrides as job type. "
                    "--config.KEY=VALUE overrides apply to every run, before the sweep's own. "
                    "local: run them as subprocesses (output in WORKDIR/train.log), or print the "
                    "commands with --dry-run. tpu-vm: print the gcloud ssh --worker=all lines, "
                    "to run one after another: a setup line (check out --repo-url at --ref, "
                    "check Python >= 3.11, make .venv, pip install -e ., copy --data from its "
                    "bucket into --data-dir, run --setup), then one line per run, each `train "
                    "--distributed` on all workers (one multi-host run) with "
                    "PERTURBJAX_DATA_DIR set; with --root gs://..., runs train on the workers' "
                    "disks and worker 0 copies each run to ROOT/NAME when it ends. --execute "
                    "runs the lines. Walkthrough: docs/tpu_vm.md.")
    launch.add_argument("--config", required=True, help="experiment file, optionally with :VARIANT")
    launch.add_argument("--sweep", action="store_true", help="one run per get_sweep() entry")
    launch.add_argument("--root", required=True,
                        help="directory of the runs' workdirs; tpu-vm: relative to --repo-dir on "
                             "the workers, or gs://BUCKET/PATH (runs copied there)")
    launch.add_argument("--target", required=True, choices=("local", "tpu-vm"))
    launch.add_argument("--group", help="W&B group (default: the experiment file's name)")
    launch.add_argument("--parallel", type=int, default=1, help="local: runs at a time")
    launch.add_argument("--rerun", action="store_true",
                        help="local: also run the runs whose workdir already holds a finished "
                             "run of the same config (they are skipped by default)")
    launch.add_argument("--dry-run", action="store_true",
                        help="print the commands instead of running them")
    launch.add_argument("--tpu", help="tpu-vm: the TPU VM's name")
    launch.add_argument("--zone", help="tpu-vm: its zone")
    launch.add_argument("--project", help="tpu-vm: its Google Cloud project")
    launch.add_argument("--repo-url", metavar="URL",
                        help="tpu-vm: the git repository the workers check out (default: this "
                             "checkout's `origin` remote)")
    launch.add_argument("--ref", help="tpu-vm: the branch, tag or full commit id to check out "
                                      "(default: this checkout's HEAD commit, so push it first)")
    launch.add_argument("--repo-dir", default="~/perturbjax",
                        help="tpu-vm: the repository's directory on the workers (cloned if "
                             "missing, else fetched and checked out)")
    launch.add_argument("--python", metavar="PYTHON",
                        help="tpu-vm: the interpreter (>= 3.11) that makes the workers' .venv "
                             "(default: python3)")
    launch.add_argument("--setup", default="",
                        help="tpu-vm: shell commands run at the end of the setup line, e.g. "
                             "\"pip install -U 'jax[tpu]'\"")
    launch.add_argument("--data", metavar="gs://BUCKET/PATH",
                        help="tpu-vm: copy this folder (gcloud storage rsync --recursive) into "
                             "--data-dir on every worker in the setup line")
    launch.add_argument("--data-dir", metavar="DIR",
                        help="tpu-vm: the workers' data directory, exported as "
                             "PERTURBJAX_DATA_DIR in every line (default with --data: "
                             "~/perturbjax-data); relative data.files paths are looked up there")
    launch.add_argument("--execute", action="store_true",
                        help="tpu-vm: run the gcloud lines (default: print them)")
    compare = commands.add_parser(
        "compare", help="compare runs: 95%% intervals, paired differences and tests, plots",
        description="Reads every run (summary.json, searched recursively) under the roots and "
                    "groups them: runs whose configs differ only in seed and data.fold are one "
                    "group, named by what differs between groups (an ablation sweep: "
                    "graph.ablation), or by root when each root holds one group. Prints a "
                    "Markdown table (mean ± 95%% t-interval per group and metric; with a "
                    "reference row, the paired difference, its interval, a paired t-test and "
                    "Holm-adjusted p-values, rows sorted by effect) and writes comparison.csv, "
                    "comparison.md and comparison_forest.png to --out.")
    compare.add_argument("runs", nargs="*", metavar="ROOT",
                         help="directories holding run directories (summary.json files)")
    compare.add_argument("--wandb", action="append", default=[], metavar="ENTITY/PROJECT/GROUP",
                         help="also the finished runs of a W&B group (online; repeatable)")
    compare.add_argument("--part", default="test", choices=("test", "validation"))
    compare.add_argument("--metrics", default="",
                         help="comma-separated metric names (default: the runs' task's "
                              f"report metrics; perturbation runs: {','.join(DEFAULT_METRICS)})")
    compare.add_argument("--paired", metavar="ROW",
                         help="the reference of the paired differences: a row as printed (e.g. "
                              "'kg_ridge: baseline tanimoto_ridge') or a group's name (its "
                              "model's row); default: the ablation sweep's 'none' group, if any")
    compare.add_argument("--out", metavar="DIR",
                         help="where comparison.csv, .md and the forest plot go (default: the "
                              "first ROOT)")
    compare.add_argument("--write", metavar="FILE:SECTION",
                         help="write the table, with the runs' hardware, wall time and this "
                              "command, between <!-- results:SECTION --> and "
                              "<!-- /results:SECTION --> in FILE (e.g. README.md:consensus)")
    explain = commands.add_parser(
        "explain", help="why a trained run predicts its signature for one drug",
        description="Loads a finished run (its config.json and model.npz; closed-form models are "
                    "refitted) and explains its prediction for the drug's first measured "
                    "condition: integrated gradients of the most affected genes over the "
                    "edges' message scales, summed per relation with occlusion and attention, "
                    "and the top KG paths from the drug to each gene; for kernel-ridge models, "
                    "the training drugs and shared targets that carry the prediction. Writes "
                    "explanation.md, explanation.json and PNG figures.")
    explain.add_argument("--workdir", required=True, help="a finished run's directory")
    explain.add_argument("--drug", required=True,
                         help="the drug: its node id (e.g. DB00945) or name (e.g. Aspirin)")
    explain.add_argument("--cell", help="a cell line (default: the drug's first condition's)")
    explain.add_argument("--genes", type=int, default=10, help="most affected genes explained")
    explain.add_argument("--paths", type=int, default=5, help="top paths per gene")
    explain.add_argument("--steps", type=int, default=16,
                         help="integration points of the integrated gradients")
    explain.add_argument("--out", help="output folder (default: WORKDIR/explain/DRUG)")
    explain.add_argument("--no-progress", action="store_true", help="no progress bar")
    predict = commands.add_parser(
        "predict", help="predicted signatures of drugs the graph does not know",
        description="Attaches each drug to a finished message-passing run's graph as a new "
                    "compound node (Morgan bits from its SMILES, edges to the given targets) "
                    "and writes its predicted signature: one line per readout gene (Entrez id, "
                    "symbol, one value per drug).")
    predict.add_argument("--workdir", required=True, help="a finished run's directory")
    predict.add_argument("--smiles", help="one drug's SMILES")
    predict.add_argument("--name", help="its name (default new_drug)")
    predict.add_argument("--targets", help="its target genes' ids, comma-separated (e.g. Entrez)")
    predict.add_argument("--smiles-file", help="many drugs: a table with smiles[, name, targets] "
                                               "columns, or a .smi file")
    predict.add_argument("--out", required=True, help="the signature file to write (TSV)")
    repurpose_parser = commands.add_parser(
        "repurpose", help="rank drugs by how strongly they reverse a query signature",
        description="Predicts every drug of a finished run's graph (and of --library) and ranks "
                    "them by CMap-style connectivity to the query (negative: reverses it; see "
                    "perturbjax/predict.py). Writes repurposing.tsv, .md and .png.")
    repurpose_parser.add_argument("--workdir", required=True, help="a finished run's directory")
    repurpose_parser.add_argument("--signature", required=True,
                                  help="the query: gene (Entrez id or symbol) and value per line")
    repurpose_parser.add_argument("--library", help="drugs of your own (as predict --smiles-file)")
    repurpose_parser.add_argument("--top-k", type=int, default=50,
                                  help="genes in the query's up and down sets (at most a "
                                       "tenth of its genes)")
    repurpose_parser.add_argument("--out", help="output folder (default WORKDIR/repurpose/NAME)")
    for p in (predict, repurpose_parser):
        p.add_argument("--cell", help="cell line (default: the data's most common)")
        p.add_argument("--dose", type=float, help="dose in µM (default: the data's most common)")
        p.add_argument("--time", type=float, help="time in h (default: the data's most common)")
    runs = commands.add_parser(
        "runs", help="what a run directory holds: its drugs, cell lines and readout genes",
        description="show W: the run's model, data, split and test score, then each split "
                    "part's drugs and cell lines (ids and names) and the readout genes (Entrez "
                    "ids and symbols), read from the run's config.json, summary.json and "
                    "parts.json without loading its data (runs trained before parts.json "
                    "existed load it again).")
    runs.add_argument("action", choices=("show",))
    runs.add_argument("workdir", metavar="W", help="a run's directory")
    runs.add_argument("--json", action="store_true", help="print parts.json's record as JSON")
    from perturbjax.data.formats import FORMATS

    data = commands.add_parser(
        "data", help="list, verify and fetch the registered data files; inspect any data file",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="list: every registered file with its status (ok, missing, corrupt, "
                    "unpinned), whether a built-in experiment needs it, licence and content."
                    "\nverify [NAME ...]: checksums; fails on a corrupt file or a missing "
                    "required (or named) one, and lists the missing optional ones.\nfetch NAME "
                    "... | --all: download into the data directory and verify; present files "
                    "are skipped (--force: download again), files without a download address "
                    "are listed.\nsummary --format F --path P: read a file of your own with the "
                    "reader the runs use; prints its load report (what was kept, dropped and "
                    "why) to stderr and counts as JSON to stdout.\ncheck --config "
                    "experiments/kg_lincs.py [--config.data.files.KEY=PATH ...]: read your KG "
                    "and LINCS files as a run would (tables and the matrix's ids, not its "
                    "values) and print each step's report to stderr and a summary as JSON to "
                    "stdout. Formats:\n"
                    + "\n".join(f"  {f.name:<19} {f.description}" for f in FORMATS.values()))
    data.add_argument("action", choices=("list", "verify", "fetch", "summary", "check"))
    data.add_argument("names", nargs="*", help="registered file names, e.g. hetionet/nodes.tsv")
    data.add_argument("--all", action="store_true",
                      help="fetch: every registered file that has a download address")
    data.add_argument("--force", action="store_true", help="fetch: download even if present")
    data.add_argument("--format", "--source", dest="format", metavar="FORMAT",
                      help="summary: the file's format (listed above)")
    data.add_argument("--path", help="summary: the file")
    data.add_argument("--config", metavar="FILE[:VARIANT]",
                      help="check: an experiment whose data.source is files (e.g. "
                           "experiments/kg_lincs.py), with --config.KEY=VALUE overrides")
    tosg = commands.add_parser(
        "tosg", help="build and inspect cell-graph datasets (OmniCellTOSG layout)",
        description="build: write an AnnData file (.h5ad) and a gene network into the "
                    "OmniCellTOSG layout at --out (see perturbjax/data/tosg_build.py): nodes "
                    "are the data's genes, edges the network's interactions among them; it "
                    "reports how many genes and edges matched. summary: what a dataset root "
                    "holds (samples, graph, shards; --label-column: class counts).")
    tosg.add_argument("action", choices=("build", "summary"))
    tosg.add_argument("--h5ad", help="build: the AnnData file")
    tosg.add_argument("--network", help="build: the gene interaction table")
    tosg.add_argument("--network-format", default="auto",
                      choices=("auto", "ppi", "signaling", "edgelist"),
                      help="build: the network's format (default: from its header)")
    tosg.add_argument("--label-columns", nargs="*", default=[], metavar="COL[=NAME]",
                      help="build: obs columns to keep as labels, optionally renamed (e.g. "
                           "bulk_labels=CMT_name, the layout's cell-type column)")
    tosg.add_argument("--donor-column", help="build: the obs column of donor ids")
    tosg.add_argument("--dataset-id", help="build: the dataset_id column's value (default: "
                                           "the file's name)")
    tosg.add_argument("--gene-column", help="build: the var column of gene symbols (default: "
                                            "var_names, or feature_name for Ensembl ids)")
    tosg.add_argument("--text-dim", type=int, default=16,
                      help="build: width of the name embeddings (deterministic stand-ins)")
    tosg.add_argument("--layer", default="X", metavar="X|raw|NAME",
                      help="build: the expression matrix: adata.X (default), adata.raw.X or "
                           "adata.layers[NAME]; it should hold counts, which OmniCellTOSG's "
                           "loader log-normalises")
    tosg.add_argument("--allow-negative", action="store_true",
                      help="build: copy negative (scaled) values instead of stopping; "
                           "OmniCellTOSG's loader refuses such a root, perturbjax reads it")
    tosg.add_argument("--out", help="build: the new dataset root")
    tosg.add_argument("--root", help="summary: a dataset root")
    tosg.add_argument("--label-column", help="summary: count this column's classes")
    return parser


def main(argv: list[str] | None = None) -> None:
    try:
        tune_host_allocator()  # before JAX starts its threads
    except ValueError as e:
        _fail(str(e))
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("PERTURBJAX_DEBUG", "") not in ("", "0")
    args, rest = parser.parse_known_args([a for a in argv if a != "--debug"])
    command = {"train": _train, "launch": _launch, "compare": _compare, "data": _data,
               "tosg": _tosg, "explain": _explain, "predict": _predict,
               "repurpose": _repurpose, "runs": _runs}
    try:
        with _messages():
            command[args.command](args, rest)
    except SystemExit as e:
        if isinstance(e.code, str):  # the commands' own "perturbjax [command]: ..." messages
            _fail(re.sub(r"^perturbjax(?: ([a-z ]+))?: ",
                         lambda m: f"{m.group(1)}: " if m.group(1) else "", e.code))
        raise
    except _user_errors() as e:
        if debug:
            raise
        _fail(str(e) or type(e).__name__)
    except KeyboardInterrupt:  # Ctrl-C outside a training loop, or a second one inside it
        if debug:
            raise
        print("perturbjax: interrupted", file=sys.stderr)
        raise SystemExit(130)


if __name__ == "__main__":
    main()
