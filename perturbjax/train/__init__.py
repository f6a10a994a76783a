"""Training: the task-agnostic loop (`loop.py`), batches, optimizer, checkpoints, logging,
data parallelism, and restoring a finished run.

`perturbjax.train` is the name of this package and of the API function `perturbjax.train(config,
workdir, ...)` (`perturbjax.runs.train`). Importing this package makes it the package's
attribute, so the package is callable too, and calling it is calling that function.
"""

import sys
import types


class _CallablePackage(types.ModuleType):
    def __call__(self, config, workdir, **kwargs):
        from perturbjax.runs import train

        return train(config, workdir, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
