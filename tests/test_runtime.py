"""The host allocator settings (`perturbjax.runtime`): XLA:CPU's large per-call buffers must reuse
pages instead of faulting fresh ones in on every call."""

import os
import subprocess
import sys

PROBE = r"""
import resource, sys
from perturbjax.runtime import tune_host_allocator
tuned = tune_host_allocator()
import jax, jax.numpy as jnp
f = jax.jit(lambda x: x + 1.0)
x = jnp.zeros((64 * 2**20 // 4,), jnp.float32)  # 64 MiB: above glibc's largest mmap threshold
for _ in range(20):  # the heap grows to its working size (tuned) first
    f(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    f(x).block_until_ready()
print(int(tuned), (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 10)
"""


def _probe(malloc: str) -> tuple[bool, int]:
    env = {**os.environ, "PERTURBJAX_MALLOC": malloc}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    return bool(int(out[0])), int(out[1])


def test_tuned_allocator_reuses_pages_of_large_buffers():
    tuned, faults = _probe("")
    untuned, system_faults = _probe("system")
    assert tuned and not untuned
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    assert system_faults > pages // 2  # glibc's defaults: a fresh mmap each call
    # Tuned, the pages are reused: typically 0 faults per call. The bound leaves room for the
    # kernel reclaiming idle heap pages between calls on a busy machine (one CI run saw 4,915
    # of the 16,384 pages fault per call), which glibc's settings cannot prevent.
    assert faults < system_faults // 3


def test_tuning_applies_once():
    from perturbjax.runtime import tune_host_allocator

    assert tune_host_allocator() == tune_host_allocator()


def test_an_unknown_allocator_choice_ends_the_command_with_one_line():
    env = {**os.environ, "PERTURBJAX_MALLOC": "sytem"}
    done = subprocess.run([sys.executable, "-m", "perturbjax.cli", "data", "--help"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "PERTURBJAX_MALLOC='sytem'" in lines[0], done.stderr
