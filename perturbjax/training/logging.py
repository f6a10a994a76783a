"""Run logging: every metric goes to `metrics.jsonl`; W&B gets the same when enabled.

The JSONL file is the source of truth (comparisons work offline); W&B is a view of it. W&B says
one line per run on stderr (where the run is, or how to upload an offline one); its own messages
go to its log file in the workdir (`wandb/*run-*/logs/debug.log`, named in that line).
"""

from __future__ import annotations

import json
import os
import resource
import sys

import ml_collections
import numpy as np


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (host memory, not accelerator memory)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)  # bytes on macOS, KiB on Linux


def wandb_mode(config: ml_collections.ConfigDict) -> str:
    """`auto` means online with an API key (or a prior `wandb login`), offline otherwise."""
    mode = config.wandb.mode
    if mode != "auto":
        return mode
    has_key = bool(os.environ.get("WANDB_API_KEY")) or os.path.exists(os.path.expanduser("~/.netrc"))
    return "online" if has_key else "offline"


def wandb_line(run, mode: str) -> str:
    """The one line a W&B run gets on the console."""
    settings = run.settings
    if mode == "offline":
        return (f"W&B offline run in {settings.sync_dir} (its messages: logs/debug.log there); "
                f"upload it with `wandb sync {settings.sync_dir}`")
    return f"W&B run {run.url} (its messages: {settings.log_user})"


class RunLogger:
    """Appends one JSON object per call to `workdir/metrics.jsonl`, mirrors it to W&B.

    `keep_bytes` truncates an existing file to its first `keep_bytes` bytes (`offset()` at the
    checkpoint a run resumes from; 0 for a run started afresh), so that records written after that
    checkpoint, which the resumed run writes again, are never duplicated.

    The W&B run's group is `group`, else `experiment`; its job type is `job_type`, else `variant`
    (`perturbjax launch` gives all runs of a sweep one group and each its own job type).

    With `write=False` it records nothing: the processes of a multi-host run other than the
    first compute the same metrics, and one process writes them.
    """

    def __init__(self, workdir: str, config: ml_collections.ConfigDict, experiment: str = "",
                 variant: str = "", keep_bytes: int = 0, group: str | None = None,
                 job_type: str | None = None, write: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._file = self._wandb = None
        if not write:
            return
        if os.path.exists(self.path) and os.path.getsize(self.path) > keep_bytes:
            os.truncate(self.path, keep_bytes)
        self._file = open(self.path, "a")
        mode = wandb_mode(config)
        if mode != "disabled":
            import wandb  # imported lazily: it is slow to import and tests disable it

            self._wandb = wandb.init(
                project=config.wandb.project, entity=config.wandb.entity or None,
                group=(experiment if group is None else group) or None,
                job_type=(variant if job_type is None else job_type) or None, tags=list(config.wandb.tags),
                config=config.to_dict(), dir=workdir, mode=mode,
                settings=wandb.Settings(silent=True))  # its messages go to its debug.log
            print(f"perturbjax: {wandb_line(self._wandb, mode)}", file=sys.stderr)

    def log(self, step: int, split: str, metrics: dict) -> None:
        if self._file is None:
            return
        record = {"step": int(step), "split": split, **{k: _jsonable(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._wandb is not None:
            self._wandb.log({f"{split}/{k}": v for k, v in record.items()
                             if k not in ("step", "split") and isinstance(v, (int, float))},
                            step=int(step))

    def offset(self) -> int:
        """Bytes written so far (every record is flushed when logged); 0 when not writing."""
        return 0 if self._file is None else self._file.tell()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._wandb is not None:
            self._wandb.finish()
