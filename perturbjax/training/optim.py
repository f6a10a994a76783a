"""The optimizer and its update step, shared by the single-device and data-parallel steps."""

from __future__ import annotations

import ml_collections
import optax


def make_optimizer(train: ml_collections.ConfigDict) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with linear warm-up then cosine decay, after global-norm gradient clipping."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=train.learning_rate, warmup_steps=train.warmup_steps,
        decay_steps=max(train.num_steps, train.warmup_steps + 1), end_value=0.0)
    tx = optax.chain(optax.clip_by_global_norm(train.clip_norm),
                     optax.adamw(schedule, weight_decay=train.weight_decay))
    return tx, schedule


def apply_gradients(tx, params, opt_state, grads, loss, aux=None):
    """One optimizer update, with the statistics every step logs (shared by all step kinds):
    the loss, the task's auxiliary scalars `aux`, and gradient, update and parameter norms."""
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    stats = {"loss": loss, **(aux or {}), "grad_norm": optax.tree.norm(grads),
             "update_norm": optax.tree.norm(updates), "param_norm": optax.tree.norm(params)}
    return params, opt_state, stats
