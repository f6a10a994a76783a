"""Kernel ridge regression with learned kernels: the closed-form solve, its leave-one-out and
leave-group-out predictions, and `KernelRidgeReadout`, the perturbation model's kernel-ridge
decoder. Also used by `perturbjax.models.relational_sgc`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_glorot_views = nnx.initializers.glorot_uniform(in_axis=-2, out_axis=-1, batch_axis=0)


HYPER_RATE = 30.0


def scaled_hyper(value: float, shape: tuple = ()) -> nnx.Param:
    """A kernel hyperparameter initialised to `value`, stored divided by HYPER_RATE (read it
    with `hyper`): Adam moves a parameter by about the learning rate a step, far too slowly for
    log-scale hyperparameters next to network weights. A float32 array, not a weakly typed
    scalar, whose first update would change its type and recompile the train step."""
    return nnx.Param(jnp.full(shape, value / HYPER_RATE, jnp.float32))


def hyper(param: nnx.Param) -> jax.Array:
    """The value of a `scaled_hyper` parameter."""
    return param[...] * HYPER_RATE


def tanimoto_similarity(x_a: jax.Array, x_b: jax.Array) -> jax.Array:
    """[n_a, n_b] Tanimoto similarity of binary fingerprints (0 where both are empty)."""
    dot = x_a @ x_b.T
    union = jnp.sum(x_a * x_a, 1)[:, None] + jnp.sum(x_b * x_b, 1)[None] - dot
    return jnp.where(union > 0, dot / jnp.where(union > 0, union, 1.0), 0.0)


def leave_out_groups(labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """`ridge_predict`'s groups of support rows with equal `labels` [S] (host-side, numpy):
    member matrices [n_groups, size] (-1 padded), groups bucketed by size to powers of two so
    that one large group (a common scaffold) does not pad every other to its size."""
    _, group, sizes = np.unique(labels, return_inverse=True, return_counts=True)
    rows = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])
    width = 1 << np.ceil(np.log2(sizes)).astype(int)
    buckets = []
    for w in np.unique(width):
        members = np.full((int((width == w).sum()), int(w)), -1, np.int32)
        for i, g in enumerate(np.flatnonzero(width == w)):
            members[i, :sizes[g]] = rows[g]
        buckets.append(members)
    return tuple(buckets)


def query_rows(support_row: jax.Array | None, query: jax.Array) -> jax.Array:
    """The queries' support rows, -1 (not in the support) for all when none are given."""
    return jnp.full(query.shape[0], -1, jnp.int32) if support_row is None else support_row


def ridge_predict(k_ss: jax.Array, k_qs: jax.Array, y_support: jax.Array, penalty: jax.Array,
                  query_support_index: jax.Array, groups: tuple | None = None) -> jax.Array:
    """[B, G] kernel ridge predictions of B queries from the support's signatures [S, G]: a
    query that is support row i (`query_support_index`, else -1) gets its closed-form
    leave-one-out prediction `y_i - alpha_i / [(K + lambda I)^-1]_ii`, any other `k(q, S) alpha`.

    With `groups` (member matrices of groups of support rows, -1 padded: `leave_out_groups`),
    a support row is predicted with its whole group left out, as a split holds out a whole cell
    line or scaffold: the residual of group g is `([(K + lambda I)^-1]_gg)^-1 alpha_g` (the block
    form of the same identity).
    """
    n = k_ss.shape[0]
    chol = jnp.linalg.cholesky(k_ss + penalty * jnp.eye(n))
    inverse = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(n))
    alpha = inverse @ y_support                                          # [S, G]
    if groups is None:
        residual = alpha / jnp.diagonal(inverse)[:, None]
    else:
        residual = jnp.zeros_like(alpha)
        for members in groups:
            real = members >= 0
            m = jnp.maximum(members, 0)
            both = real[:, :, None] & real[:, None, :]
            block = jnp.where(both, inverse[m[:, :, None], m[:, None, :]],
                              jnp.eye(members.shape[1]))
            by_group = jnp.einsum("gij,gjk->gik", jnp.linalg.inv(block),
                                  jnp.where(real[..., None], alpha[m], 0.0))
            residual = residual.at[jnp.where(real, members, n)].set(by_group, mode="drop")
    row = jnp.maximum(query_support_index, 0)
    return jnp.where((query_support_index >= 0)[:, None], y_support[row] - residual[row],
                     k_qs @ alpha)


class KernelRidgeReadout(nnx.Module):
    """Kernel ridge over the training ("support") drugs in a learned kernel of their embeddings.

    One kernel per view of the encoder (its input projection and each block's output: the
    drug's own features, then what 1, 2, ... hops bring), mixed with learned weights:
    `K = sum_v w_v exp(s_v (cos(P_v h_a, P_v h_b) - 1))`, keys centred on the support's mean so
    that what every drug shares does not make them all alike; and one more view, the Tanimoto
    similarity of the drug nodes' raw input features (fingerprints) raised to a learned power,
    which no projection to a few dozen dimensions keeps as sharp. A learned sharpness s_v (a high
    one keeps only close neighbours, as a high Tanimoto power does) and a learned penalty. This
    is deep kernel learning (Wilson et al. 2016) with a graph encoder: kernel ridge's
    closed-form solve does what a few hundred training drugs cannot teach a free decoder, and
    the encoder only has to say which drugs are alike.

    A support drug is predicted from the other support drugs (the closed-form leave-one-out
    prediction `y_i - alpha_i / [(K + lambda I)^-1]_ii`), so training never shows a drug its
    own signature (the label trick) and the loss is a held-out one; a drug outside the support
    (validation, test, new) gets `k(q, S) alpha`. Signatures are regressed raw, so a drug
    unlike every support drug is predicted to change little.
    """

    def __init__(self, view_width: int, num_views: int, dim: int, *, rngs: nnx.Rngs):
        self.keys = nnx.Param(_glorot_views(rngs.params(), (num_views, view_width, dim)))
        self.log_sharpness = scaled_hyper(math.log(8.0), (num_views,))
        self.log_tanimoto_power = scaled_hyper(math.log(4.0))
        self.view_logits = scaled_hyper(0.0, (num_views + 1,))  # the last: the Tanimoto view
        self.log_penalty = scaled_hyper(math.log(0.3))

    def _keys(self, h: jax.Array, centre: jax.Array) -> jax.Array:
        """Unit keys [V, n, dim] of embeddings [n, V * view_width]."""
        v, width, _ = self.keys.shape
        k = jnp.einsum("nvw,vwd->vnd", h.reshape(h.shape[0], v, width), self.keys[...])
        k = k - centre
        return k / jnp.sqrt(jnp.sum(k * k, -1, keepdims=True) + 1e-12)

    def kernel(self, a: jax.Array, b: jax.Array, x_a: jax.Array, x_b: jax.Array) -> jax.Array:
        """[n_a, n_b] kernel of unit keys [V, n, dim] and raw features [n, F]."""
        sharpness = jnp.exp(hyper(self.log_sharpness))[:, None, None]
        mix = jax.nn.softmax(hyper(self.view_logits))
        views = jnp.exp(sharpness * (jnp.einsum("vad,vbd->vab", a, b) - 1.0))
        power = jnp.exp(hyper(self.log_tanimoto_power))
        chem = jnp.exp(power * jnp.log(jnp.maximum(tanimoto_similarity(x_a, x_b), 1e-12)))
        return jnp.einsum("v,vab->ab", mix[:-1], views) + mix[-1] * chem

    def __call__(self, h_query: jax.Array, h_support: jax.Array, x_query: jax.Array,
                 x_support: jax.Array, y_support: jax.Array,
                 query_support_index: jax.Array) -> jax.Array:
        """[B, G] predictions for B queries from their embeddings h and input features x;
        `query_support_index[b]` is query b's row in the support (it is then predicted
        leave-one-out) or -1."""
        v, width, _ = self.keys.shape
        centre = jnp.einsum("vw,vwd->vd", h_support.reshape(-1, v, width).mean(0),
                            self.keys[...])[:, None]
        q, s = self._keys(h_query, centre), self._keys(h_support, centre)
        return ridge_predict(self.kernel(s, s, x_support, x_support),
                             self.kernel(q, s, x_query, x_support), y_support,
                             jnp.exp(hyper(self.log_penalty)), query_support_index)
