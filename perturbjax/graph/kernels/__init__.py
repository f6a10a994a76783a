"""Compiled CPU kernels for message passing, built on first use, each with a pure-XLA fallback.

  * `sorted_segment_softmax` (segment_softmax.cc): attention's softmax over runs of equal,
    sorted segment ids, forward and backward in one pass per segment each, where XLA scatters
    segment maxima and sums and gathers them back per edge.
  * `take_rows` (take_rows.cc): a row gather that fetches the rows a few ahead of use. XLA's
    CPU gather waits on each cache miss (for the source-row gather and the fallback products;
    with it the consensus GAT step went from 0.34 to 0.29 s, `benchmarks/step.py gat full
    real`).
  * `csr_products` (csr_products.cc): a sparse product of every weight column (head) in one
    pass over the CSR entries, reading each edge's weights where they lie (edge order); JAX's
    BCSR product takes one column at a time, after a gather of the weights into CSR order.
    Its backward computes the weight gradient (the per-edge dots of the output gradient at the
    receiver with the value at the source) in the same pass, while the rows are at hand. With
    both the consensus GAT step went from 0.25 to 0.14 s (`benchmarks/step.py gat full real`).

The kernels are compiled with the machine's C++ compiler (`$CXX`, else `c++`) against the XLA
FFI headers that jaxlib ships, into `$PERTURBJAX_KERNEL_CACHE` (default
`~/.cache/perturbjax/kernels`), keyed by the sources, flags, jaxlib version and the compiler's
path and version, so they are built once per machine and compiler (a few seconds). They need
Linux (`os.sched_getaffinity` sizes their threads). Without a compiler, when the build fails,
on another platform, with `PERTURBJAX_KERNELS=0`, or when JAX's default backend is not the CPU,
the same functions run as XLA ops (one warning says why when the build fails).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

log = logging.getLogger(__name__)
SOURCES = tuple(sorted(Path(__file__).parent.glob("*.cc")))
TARGETS = {"perturbjax_segment_softmax": "PerturbjaxSegmentSoftmax",
           "perturbjax_segment_softmax_bwd": "PerturbjaxSegmentSoftmaxBwd",
           "perturbjax_take_rows": "PerturbjaxTakeRows",
           "perturbjax_csr_products": "PerturbjaxCsrProducts",
           "perturbjax_csr_products_bwd": "PerturbjaxCsrProductsBwd"}


def _cache_dir() -> Path:
    return Path(os.environ.get("PERTURBJAX_KERNEL_CACHE")
                or Path.home() / ".cache" / "perturbjax" / "kernels")


# -ffp-contract=fast: a * b + c may be one fused multiply-add (ISO C++ mode forbids it).
FLAGS = ("-O3", "-std=c++17", "-ffp-contract=fast", "-shared", "-fPIC", "-pthread")


def _compiler() -> tuple[str, str]:
    """The C++ compiler (`$CXX`, else `c++`) and its identity: its resolved path and the first
    line of `--version`, so another compiler (or version) builds its own library."""
    cxx = os.environ.get("CXX", "c++")
    path = shutil.which(cxx)
    if path is None:
        raise OSError(f"no C++ compiler {cxx!r} on PATH (set $CXX)")
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60,
                             check=True).stdout.strip().splitlines()
    return path, f"{os.path.realpath(path)} {version[0] if version else ''}"


def _library_path(compiler_identity: str) -> Path:
    """Where the library built from these sources and flags by this compiler is cached."""
    digest = hashlib.sha256(" ".join((jaxlib.__version__, compiler_identity, *FLAGS)).encode())
    for source in SOURCES:
        digest.update(source.read_bytes())
    return _cache_dir() / f"perturbjax_kernels-{digest.hexdigest()[:16]}.so"


def _build() -> Path:
    """The compiled library (built now unless cached); raises OSError or SubprocessError."""
    cxx, identity = _compiler()
    out = _library_path(identity)
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    try:
        subprocess.run([cxx, *FLAGS, "-I", jax.ffi.include_dir(),
                        *map(str, SOURCES), "-o", tmp],
                       check=True, capture_output=True, text=True, timeout=300)
        os.replace(tmp, out)  # atomic: processes building at once each write their own file
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return out


@functools.cache
def available() -> bool:
    """Whether the compiled kernels are registered (builds them on the first call)."""
    if os.environ.get("PERTURBJAX_KERNELS", "1") == "0":
        return False
    if not hasattr(os, "sched_getaffinity"):  # the kernels size their thread pool with it
        log.warning("the compiled message-passing kernels need Linux's sched_getaffinity, "
                    "which this platform lacks; using XLA ops")
        return False
    try:
        lib = ctypes.CDLL(str(_build()))
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)),
                                        platform="cpu")
    except (OSError, AttributeError, subprocess.SubprocessError) as e:
        detail = (getattr(e, "stderr", "") or str(e)).strip()
        log.warning("the compiled message-passing kernels are unavailable (%s); "
                    "using XLA ops, several times slower on CPU",
                    detail.splitlines()[-1] if detail else type(e).__name__)
        return False
    return True


def enabled() -> bool:
    """Whether the kernels run here: JAX's default backend is the CPU and they are built."""
    return jax.default_backend() == "cpu" and available()


def _threads() -> np.int64:
    return np.int64(len(os.sched_getaffinity(0)))


# ---- device variance inside shard_map ------------------------------------------------------
def variance(x) -> frozenset:
    """The mesh axes along which `x` varies inside `shard_map` (empty outside it)."""
    mat = getattr(jax.typeof(x), "manual_axis_type", None)
    return frozenset(getattr(mat, "varying", ()) or ())


def match_variance(y: jax.Array, like: frozenset) -> jax.Array:
    """`y` marked as varying exactly along `like`: custom kernels (these, and the sparse
    products) do not track device variance inside `shard_map`, so their results are re-marked
    (and a cotangent of a replicated input is summed over the devices, as the transpose of a
    broadcast must be)."""
    have = variance(y)
    if like - have:
        y = jax.lax.pcast(y, tuple(sorted(like - have)), to="varying")
    if have - like:
        y = jax.lax.psum(y, tuple(sorted(have - like)))
    return y


# ---- row gather ----------------------------------------------------------------------------
def take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """`x[index]` for float32 `x` `[n, ...]` and int32 `index` `[m]` (in range), with the rows
    fetched ahead of use. Not differentiable: for the insides of custom VJPs (the sparse
    products' edge order, the source-row gather)."""
    if not enabled() or x.dtype != jnp.float32 or index.ndim != 1:
        return x[index]
    out = jax.ShapeDtypeStruct((index.shape[0],) + x.shape[1:], jnp.float32)
    y = jax.ffi.ffi_call("perturbjax_take_rows", out)(x, jnp.asarray(index, jnp.int32),
                                                      threads=_threads())
    return match_variance(y, variance(x) | variance(index))


# ---- sparse products -----------------------------------------------------------------------
def csr_products(w: jax.Array, x: jax.Array, indptr: jax.Array, indices: jax.Array,
                 order: jax.Array, rows: int) -> jax.Array:
    """`out[i, k] = sum_p w[order[p], k] * x[indices[p], k]` over row i's CSR entries p, for
    float32 `w` `[E, K]` (edge order) and `x` `[S, K, F]`: float32 `[rows, K, F]`. Needs
    `enabled()`; `perturbjax.graph.propagate` falls back to one BCSR product per column."""
    out = jax.ShapeDtypeStruct((rows,) + x.shape[1:], jnp.float32)
    y = jax.ffi.ffi_call("perturbjax_csr_products", out)(
        jnp.asarray(w, jnp.float32), jnp.asarray(x, jnp.float32), indptr, indices, order,
        threads=_threads())
    return match_variance(y, variance(w) | variance(x) | variance(order))


def csr_products_bwd(w: jax.Array, g: jax.Array, x: jax.Array, indptr: jax.Array,
                     indices: jax.Array, order: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The backward of `csr_products` over its transposed pattern (rows = x's rows, columns =
    g's): `dx` `[S, K, F]` as `csr_products(w, g, ...)`, and in the same pass the weight
    gradient `dw[e, k] = <g[receiver(e), k], x[source(e), k]>` `[E, K]` (0 for edges the
    pattern leaves out). Needs `enabled()`."""
    shapes = (jax.ShapeDtypeStruct(x.shape, jnp.float32),
              jax.ShapeDtypeStruct(w.shape, jnp.float32))
    dx, dw = jax.ffi.ffi_call("perturbjax_csr_products_bwd", shapes)(
        jnp.asarray(w, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(x, jnp.float32),
        indptr, indices, order, threads=_threads())
    return match_variance(dx, variance(x)), match_variance(dw, variance(w))


# ---- softmax over sorted segments ----------------------------------------------------------
@jax.custom_vjp
def sorted_segment_softmax(logits: jax.Array, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax of float32 `logits` `[E, H]` over each run of equal int32 `ids` `[E]` (sorted),
    0 where the bool `mask` `[E]` is False (those edges enter no normaliser). Needs `enabled()`;
    `perturbjax.graph.aggregate.segment_softmax` chooses between this and XLA ops."""
    out = jax.ShapeDtypeStruct(logits.shape, jnp.float32)
    alpha = jax.ffi.ffi_call("perturbjax_segment_softmax", out)(logits, ids, mask,
                                                                threads=_threads())
    return match_variance(alpha, variance(logits) | variance(ids) | variance(mask))


def _softmax_fwd(logits, ids, mask):
    alpha = sorted_segment_softmax(logits, ids, mask)
    return alpha, (alpha, ids, mask)


def _softmax_bwd(res, g):
    alpha, ids, mask = res
    out = jax.ShapeDtypeStruct(alpha.shape, jnp.float32)
    dl = jax.ffi.ffi_call("perturbjax_segment_softmax_bwd", out)(
        alpha, jnp.asarray(g, jnp.float32), ids, threads=_threads())
    return match_variance(dl, variance(alpha) | variance(g)), None, None


sorted_segment_softmax.defvjp(_softmax_fwd, _softmax_bwd)
