"""Training: the task-agnostic loop (`loop.py`), batches, optimizer, checkpoints, logging,
data parallelism, and restoring a finished run. The API function that trains a run is
`perturbjax.train` (`perturbjax/runs.py`)."""
