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

Compiled or not, the ops are the same functions under every JAX transformation (jit, vmap,
jvp/jacfwd, vjp/grad/jacrev, and compositions such as grad of grad or vmap of grad): a vmap folds
the batch into the rows or columns a kernel already loops over, first derivatives (forward and
reverse) run the kernels, and higher ones partly XLA ops (see "transformations" below).
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
from jax.custom_batching import custom_vmap
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

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


# ---- transformations -----------------------------------------------------------------------
# Every op here runs under jit, vmap, jvp, vjp and their compositions, and gives what its XLA
# fallback gives under each. An FFI call alone has no derivative and no batching rule, so:
#   * the raw kernel calls (`take_rows`, `csr_products`, `csr_products_bwd` and the softmax's
#     forward) are `custom_vmap` functions whose rule folds the batch into the rows or columns
#     the kernel already loops over (one call for the whole batch), or, where it cannot (a
#     batched index or CSR pattern), maps the kernel over the batch one element at a time; and
#     `custom_jvp` functions whose tangent is the same product written in XLA ops, which JAX
#     can transpose and batch itself (only derivatives of the kernels' own derivatives, e.g.
#     grad of grad, take that path);
#   * the differentiable ops the layers use (`sorted_segment_softmax` here, and
#     `perturbjax.graph.propagate`'s sparse products and row gather) are `custom_jvp`
#     functions whose tangent is a *linear primitive* (`linear_primitive`): a JAX primitive
#     linear in its tangent operands with its own transpose rule. Forward mode evaluates it
#     with the kernels; reverse mode transposes it into the fused backward kernels (the same
#     calls a custom VJP would make, so a plain gradient costs what it did); its batching rule
#     folds the batch into the kernel's columns and binds the primitive again, so a transform
#     applied outside a vmap still sees it.
def leading_batch(x: jax.Array, batched: bool, size: int) -> jax.Array:
    """`x` with a leading batch axis of `size` (broadcast when it has none)."""
    return x if batched else jnp.broadcast_to(x, (size,) + x.shape)


def batch_first(x: jax.Array, dim: int | None, size: int) -> jax.Array:
    """A batching rule's operand with its batch axis `dim` (None: none) first, of `size`."""
    return leading_batch(x if dim is None else jnp.moveaxis(x, dim, 0), dim is not None, size)


def fold(x: jax.Array, axis: int) -> jax.Array:
    """`[B, d0, ..., d_axis, ...]` -> `[d0, ..., B * d_axis, ...]`: the leading batch axis
    folded into axis `axis` of the unbatched shape (batch-major within it)."""
    y = jnp.moveaxis(x, 0, axis)
    return y.reshape(y.shape[:axis] + (-1,) + y.shape[axis + 2:])


def unfold(y: jax.Array, axis: int, size: int) -> jax.Array:
    """The inverse of `fold`, the batch axis left at `axis` (not moved to the front): `[d0, ...,
    B * d_axis, ...]` -> `[d0, ..., B, d_axis, ...]`."""
    return y.reshape(y.shape[:axis] + (size, -1) + y.shape[axis + 1:])


def sequential(fn, in_batched, args):
    """`fn` mapped over the leading batch axis of the batched `args` one element at a time (the
    others passed whole): the batching of last resort, for batched indices or patterns."""
    def one(xs):
        it = iter(xs)
        return fn(*[next(it) if b else a for a, b in zip(args, in_batched)])

    return jax.lax.map(one, [a for a, b in zip(args, in_batched) if b])


def _float_aval(shape, avals):
    """The abstract float32 result of a kernel: `shape`, varying (inside `shard_map`) along the
    axes its operands vary along (those of the most varying operand)."""
    floats = [a for a in avals if jnp.issubdtype(a.dtype, jnp.floating)] or list(avals)
    like = max(floats, key=lambda a: len(variance_of_aval(a)))
    return like.update(shape=tuple(shape), dtype=jnp.dtype(jnp.float32), weak_type=False)


def variance_of_aval(aval) -> frozenset:
    mat = getattr(aval, "manual_axis_type", None)
    return frozenset(getattr(mat, "varying", ()) or ())


def linear_primitive(name: str, impl, shape, *, jvp, transpose, batch) -> Primitive:
    """A JAX primitive for a function linear in some of its operands, with its rules.

    Args:
      name: the primitive's name (shown in jaxprs).
      impl: `impl(*operands, **params)` -> float32 array: its value (eager) and its lowering
        (`mlir.lower_fun`), written with the kernel calls or XLA ops.
      shape: `shape(*avals, **params)` -> the result's shape.
      jvp, transpose, batch: JAX's rules for the primitive (`ad.primitive_jvps`,
        `ad.primitive_transposes`, `batching.primitive_batchers` signatures).
    """
    prim = Primitive(name)
    prim.def_impl(impl)
    prim.def_abstract_eval(lambda *avals, **params: _float_aval(shape(*avals, **params), avals))
    mlir.register_lowering(prim, mlir.lower_fun(impl, multiple_results=False))
    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose
    batching.primitive_batchers[prim] = batch
    return prim


def bind_sequential(prim: Primitive, args, dims, **params):
    """A batching rule's fallback: `prim` bound once per batch element (`jax.lax.map`)."""
    moved = [a if d is None else jnp.moveaxis(a, d, 0) for a, d in zip(args, dims)]
    out = sequential(lambda *xs: prim.bind(*xs, **params), [d is not None for d in dims], moved)
    return out, 0


def is_zero(t) -> bool:
    """Whether a tangent or cotangent is symbolically zero."""
    return type(t) in (ad.Zero, jax.custom_derivatives.SymbolicZero)


# ---- row gather ----------------------------------------------------------------------------
def take_rows(x: jax.Array, index: jax.Array) -> jax.Array:
    """`x[index]` for float32 `x` `[n, ...]` and int32 `index` `[m]` (in range), with the rows
    fetched ahead of use. Its derivatives are those of `x[index]` (XLA ops): the layers
    differentiate the row gather through `perturbjax.graph.propagate`'s own rules."""
    if not enabled() or x.dtype != jnp.float32 or index.ndim != 1:
        return x[index]
    return _take_rows(x, jnp.asarray(index, jnp.int32))


def _take_rows_call(x, index):
    out = jax.ShapeDtypeStruct((index.shape[0],) + x.shape[1:], jnp.float32)
    y = jax.ffi.ffi_call("perturbjax_take_rows", out)(x, index, threads=_threads())
    return match_variance(y, variance(x) | variance(index))


_take_rows_batchable = custom_vmap(_take_rows_call)
_take_rows = jax.custom_jvp(_take_rows_batchable)


@_take_rows_batchable.def_vmap
def _take_rows_vmap(size, in_batched, x, index):
    # The batch folded into the rows: x [B, n, ...] is [B * n, ...], element b's index shifted
    # by b * n; no transposes.
    x_batched, index_batched = in_batched
    if not x_batched:
        out = _take_rows(x, index.reshape(-1))
        return out.reshape(index.shape + x.shape[1:]), True
    n = x.shape[1]
    index = leading_batch(index, index_batched, size)
    shifted = index + (jnp.arange(size, dtype=jnp.int32) * n)[:, None]
    out = _take_rows(x.reshape((size * n,) + x.shape[2:]), shifted.reshape(-1))
    return out.reshape(index.shape + x.shape[2:]), True


@_take_rows.defjvp
def _take_rows_jvp(primals, tangents):
    x, index = primals
    return _take_rows(x, index), tangents[0][index]


# ---- sparse products -----------------------------------------------------------------------
def csr_products(w: jax.Array, x: jax.Array, indptr: jax.Array, indices: jax.Array,
                 order: jax.Array, rows: int) -> jax.Array:
    """`out[i, k] = sum_p w[order[p], k] * x[indices[p], k]` over row i's CSR entries p, for
    float32 `w` `[E, K]` (edge order) and `x` `[S, K, F]`: float32 `[rows, K, F]`. Needs
    `enabled()`; `perturbjax.graph.propagate` falls back to one BCSR product per column.
    Batched over `x` alone it is one call with the batch in the value columns F, over `w` one
    with the batch in the weight columns K."""
    return _csr_products_op(int(rows))(jnp.asarray(w, jnp.float32), jnp.asarray(x, jnp.float32),
                                       indptr, indices, order)


def entry_rows(indptr: jax.Array, nnz: int) -> jax.Array:
    """The row of every CSR entry, `[nnz]` int32 (ascending)."""
    rows = indptr.shape[0] - 1
    return jnp.repeat(jnp.arange(rows, dtype=jnp.int32), jnp.diff(indptr),
                      total_repeat_length=nnz)


def csr_products_reference(w, x, indptr, indices, order, rows):
    """`csr_products` in XLA ops (gathers and a sorted segment sum; it holds an `[nnz, K, F]`
    array): the tangent of the kernel, which JAX transposes and batches itself."""
    data = w[order][:, :, None] * x[indices]
    return jax.ops.segment_sum(data, entry_rows(indptr, indices.shape[0]), rows,
                               indices_are_sorted=True)


@functools.cache
def _csr_products_op(rows: int):
    def call(w, x, indptr, indices, order):
        out = jax.ShapeDtypeStruct((rows,) + x.shape[1:], jnp.float32)
        y = jax.ffi.ffi_call("perturbjax_csr_products", out)(w, x, indptr, indices, order,
                                                             threads=_threads())
        return match_variance(y, variance(w) | variance(x) | variance(indptr) | variance(indices)
                              | variance(order))

    batchable = custom_vmap(call)
    op = jax.custom_jvp(batchable)

    @batchable.def_vmap
    def vmap_rule(size, in_batched, w, x, indptr, indices, order):
        w_batched, x_batched, *pattern_batched = in_batched
        if any(pattern_batched):
            return sequential(op, in_batched, (w, x, indptr, indices, order)), True
        if not w_batched:  # the batch in the value columns: x [B, S, K, F] -> [S, K, B * F]
            out = op(w, fold(x, 2), indptr, indices, order)
            return jnp.moveaxis(unfold(out, 2, size), 2, 0), True
        # the batch in the weight columns: w [E, B * K], x [S, B * K, F]
        out = op(fold(w, 1), fold(leading_batch(x, x_batched, size), 1), indptr, indices, order)
        return jnp.moveaxis(unfold(out, 1, size), 1, 0), True

    @op.defjvp
    def jvp_rule(primals, tangents):
        w, x, indptr, indices, order = primals
        _, tangent = jax.jvp(
            lambda w, x: csr_products_reference(w, x, indptr, indices, order, rows),
            (w, x), tangents[:2])
        return op(*primals), tangent

    return op


def csr_products_bwd(w: jax.Array, g: jax.Array, x: jax.Array, indptr: jax.Array,
                     indices: jax.Array, order: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The backward of `csr_products` over its transposed pattern (rows = x's rows, columns =
    g's): `dx` `[S, K, F]` as `csr_products(w, g, ...)`, and in the same pass the weight
    gradient `dw[e, k] = <g[receiver(e), k], x[source(e), k]>` `[E, K]` (0 for edges the
    pattern leaves out). Needs `enabled()`. Batched, it is one call with the batch in the
    weight columns K."""
    return _csr_products_bwd(jnp.asarray(w, jnp.float32), jnp.asarray(g, jnp.float32),
                             jnp.asarray(x, jnp.float32), indptr, indices, order)


def csr_products_bwd_reference(w, g, x, indptr, indices, order):
    """`csr_products_bwd` in XLA ops: the tangent of the kernel."""
    source = entry_rows(indptr, indices.shape[0])
    at_receiver = g[indices]
    dx = jax.ops.segment_sum(w[order][:, :, None] * at_receiver, source, x.shape[0],
                             indices_are_sorted=True)
    dw = jnp.zeros(w.shape, jnp.float32).at[order].add(jnp.sum(at_receiver * x[source], -1))
    return dx, dw


def _csr_products_bwd_call(w, g, x, indptr, indices, order):
    shapes = (jax.ShapeDtypeStruct(x.shape, jnp.float32),
              jax.ShapeDtypeStruct(w.shape, jnp.float32))
    dx, dw = jax.ffi.ffi_call("perturbjax_csr_products_bwd", shapes)(
        w, g, x, indptr, indices, order, threads=_threads())
    # The results vary along every axis an operand varies along (an FFI call's results are
    # marked invariant): marked so first, then summed down to x's and w's (a gradient of a
    # replicated operand is summed over the devices).
    varies = variance(w) | variance(g) | variance(x) | variance(order)
    return (match_variance(match_variance(dx, varies), variance(x)),
            match_variance(match_variance(dw, varies), variance(w)))


_csr_products_bwd_batchable = custom_vmap(_csr_products_bwd_call)
_csr_products_bwd = jax.custom_jvp(_csr_products_bwd_batchable)


@_csr_products_bwd_batchable.def_vmap
def _csr_products_bwd_vmap(size, in_batched, w, g, x, indptr, indices, order):
    args = (w, g, x, indptr, indices, order)
    if any(in_batched[3:]):
        return sequential(_csr_products_bwd, in_batched, args), (True, True)
    # Every element's weight gradient is its own: the batch goes into the weight columns K.
    w, g, x = (fold(leading_batch(a, b, size), 1) for a, b in zip((w, g, x), in_batched[:3]))
    dx, dw = _csr_products_bwd(w, g, x, indptr, indices, order)
    return (jnp.moveaxis(unfold(dx, 1, size), 1, 0),
            jnp.moveaxis(unfold(dw, 1, size), 1, 0)), (True, True)


@_csr_products_bwd.defjvp
def _csr_products_bwd_jvp(primals, tangents):
    w, g, x, indptr, indices, order = primals
    _, tangent = jax.jvp(
        lambda w, g, x: csr_products_bwd_reference(w, g, x, indptr, indices, order),
        (w, g, x), tangents[:3])
    return _csr_products_bwd(*primals), tangent


# ---- softmax over sorted segments ----------------------------------------------------------
@jax.custom_jvp
def sorted_segment_softmax(logits: jax.Array, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Softmax of float32 `logits` `[E, H]` over each run of equal int32 `ids` `[E]` (sorted),
    0 where the bool `mask` `[E]` is False (those edges enter no normaliser). Needs `enabled()`;
    `perturbjax.graph.aggregate.segment_softmax` chooses between this and XLA ops.

    Its tangent `alpha * (dl - sum_segment alpha * dl)` is linear and self-adjoint, so forward
    and reverse mode both run the backward kernel (`softmax_tangent`)."""
    return _softmax(logits, ids, mask)


def _softmax_call(logits, ids, mask):
    out = jax.ShapeDtypeStruct(logits.shape, jnp.float32)
    alpha = jax.ffi.ffi_call("perturbjax_segment_softmax", out)(logits, ids, mask,
                                                                threads=_threads())
    return match_variance(alpha, variance(logits) | variance(ids) | variance(mask))


_softmax = custom_vmap(_softmax_call)


@_softmax.def_vmap
def _softmax_vmap(size, in_batched, logits, ids, mask):
    if any(in_batched[1:]):
        return sequential(_softmax, in_batched, (logits, ids, mask)), True
    out = _softmax(fold(logits, 1), ids, mask)  # the batch in the heads: [E, B * H]
    return jnp.moveaxis(unfold(out, 1, size), 1, 0), True


@sorted_segment_softmax.defjvp
def _softmax_jvp(primals, tangents):
    logits, ids, mask = primals
    alpha = sorted_segment_softmax(logits, ids, mask)
    return alpha, softmax_tangent.bind(alpha, ids, jnp.asarray(tangents[0], jnp.float32))


def softmax_tangent_reference(alpha, ids, t):
    """`alpha * (t - sum_segment alpha * t)` in XLA ops, 0 where alpha is 0 (padding edges, whose
    t may hold anything)."""
    run = jnp.concatenate([jnp.zeros(1, jnp.int32),
                           jnp.cumsum(ids[1:] != ids[:-1], dtype=jnp.int32)])  # 0, 1, ... per run
    live = alpha != 0
    dot = jax.ops.segment_sum(jnp.where(live, alpha * t, 0.0), run, ids.shape[0],
                              indices_are_sorted=True)
    return jnp.where(live, alpha * (t - dot[run]), 0.0)


def _softmax_tangent_impl(alpha, ids, t):
    out = jax.ShapeDtypeStruct(alpha.shape, jnp.float32)
    dl = jax.ffi.ffi_call("perturbjax_segment_softmax_bwd", out)(alpha, t, ids,
                                                                 threads=_threads())
    return match_variance(dl, variance(alpha) | variance(t))


def _softmax_tangent_jvp(primals, tangents):
    alpha, ids, t = primals
    d_alpha, _, dt = tangents
    out = softmax_tangent.bind(alpha, ids, t)
    tangent = jnp.zeros_like(out)
    if not is_zero(dt):
        tangent = softmax_tangent.bind(alpha, ids, ad.instantiate_zeros(dt))
    if not is_zero(d_alpha):  # second order: XLA ops
        tangent = tangent + jax.jvp(lambda a: softmax_tangent_reference(a, ids, t), (alpha,),
                                    (ad.instantiate_zeros(d_alpha),))[1]
    return out, tangent


def _softmax_tangent_transpose(ct, alpha, ids, t):
    if is_zero(ct):
        return None, None, None
    ct = softmax_tangent.bind(alpha, ids, ct)
    return None, None, match_variance(ct, variance_of_aval(t.aval))


def _softmax_tangent_batch(args, dims):
    alpha, ids, t = args
    if dims[1] is not None:
        return bind_sequential(softmax_tangent, args, dims)
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    alpha, t = (fold(batch_first(a, d, size), 1) for a, d in ((alpha, dims[0]), (t, dims[2])))
    return unfold(softmax_tangent.bind(alpha, ids, t), 1, size), 1


softmax_tangent = linear_primitive(
    "perturbjax_softmax_tangent", _softmax_tangent_impl, lambda alpha, ids, t: t.shape,
    jvp=_softmax_tangent_jvp, transpose=_softmax_tangent_transpose,
    batch=_softmax_tangent_batch)
softmax_tangent.__doc__ = ("`alpha * (t - sum_segment alpha * t)` (linear in `t`, operands "
                           "alpha [E, H], ids [E], t [E, H]): the softmax's tangent and its "
                           "transpose, by the backward kernel.")
