"""Baseline classifiers of samples from their expression vectors, fitted on the host.

They run in the cell-graph task's harness on the same split as the graph models: fitted on the
training part (with the same class weights), hyperparameters chosen on validation macro-F1,
then scored on validation and test.

  * `majority`: the most frequent training class, for every sample (a floor, not a model).
  * `logreg`: multinomial logistic regression on standardised expression, L2 strength chosen
    on validation from a grid.
  * `mlp`: one hidden layer (ReLU, dropout), Adam, early stopping on validation.
"""

from __future__ import annotations

import numpy as np

from perturbjax.eval.metrics import classification_metrics

CLASSIFIERS = ("majority", "logreg", "mlp")


class Majority:
    name = "majority"

    def fit(self, x, y, weight, x_val, y_val, num_classes: int, seed: int) -> None:
        self.cls = int(np.bincount(y, minlength=num_classes).argmax())
        self.num_classes = num_classes
        self.chosen = {"class": self.cls}

    def scores(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), self.num_classes))
        out[:, self.cls] = 1.0
        return out


class _Gradient:
    """Full-batch weighted softmax regression or MLP trained with Adam (jitted), keeping the
    parameters of the best validation macro-F1 seen every `eval_every` steps."""

    grid: tuple[dict, ...] = ()
    steps, eval_every = 300, 25

    def fit(self, x, y, weight, x_val, y_val, num_classes: int, seed: int) -> None:
        import jax

        self.num_classes = num_classes
        best = (-1.0, None, None)
        for i, hyper in enumerate(self.grid):
            params = self._init(jax.random.key(seed + i), x.shape[1], num_classes, hyper)
            score, chosen_params, step = self._train(params, x, y, weight, x_val, y_val, hyper,
                                                     seed + i)
            if score > best[0]:
                best = (score, chosen_params, {**hyper, "steps": step})
        self.params, self.chosen = best[1], best[2]

    def _train(self, params, x, y, weight, x_val, y_val, hyper, seed):
        import jax
        import jax.numpy as jnp
        import optax

        tx = optax.adamw(hyper.get("lr", 1e-2), weight_decay=hyper.get("l2", 0.0))
        state = tx.init(params)
        xj, yj = jnp.asarray(x, jnp.float32), jnp.asarray(y)
        wj = jnp.asarray(weight / weight.mean(), jnp.float32)

        def loss(p, key):
            logits = self._apply(p, xj, key, hyper)
            return jnp.mean(wj * optax.softmax_cross_entropy_with_integer_labels(logits, yj))

        @jax.jit
        def step(p, s, key):
            g = jax.grad(loss)(p, key)
            updates, s = tx.update(g, s, p)
            return optax.apply_updates(p, updates), s

        names = [str(c) for c in range(self.num_classes)]
        best = (-1.0, params, 0)
        key = jax.random.key(seed)
        for t in range(1, self.steps + 1):
            key, sub = jax.random.split(key)
            params, state = step(params, state, sub)
            if t % self.eval_every == 0:
                f1 = classification_metrics(y_val, np.asarray(self._apply(params, x_val)),
                                            names)["macro_f1"]
                if f1 > best[0]:
                    best = (f1, jax.tree.map(np.asarray, params), t)
        return best

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._apply(self.params, x))


class LogisticRegression(_Gradient):
    name = "logreg"
    grid = tuple({"l2": l2, "lr": 1e-2} for l2 in (1e-4, 1e-3, 1e-2, 1e-1))

    def _init(self, key, d, k, hyper):
        import jax.numpy as jnp

        return {"w": jnp.zeros((d, k)), "b": jnp.zeros(k)}

    def _apply(self, p, x, key=None, hyper=None):
        return x @ p["w"] + p["b"]


class MLPClassifier(_Gradient):
    name = "mlp"
    grid = tuple({"hidden": 256, "dropout": 0.2, "l2": l2, "lr": 1e-3} for l2 in (1e-4, 1e-2))

    def _init(self, key, d, k, hyper):
        import jax

        k1, k2 = jax.random.split(key)
        h = hyper["hidden"]
        return {"w1": jax.random.normal(k1, (d, h)) * (2.0 / d) ** 0.5,
                "b1": jax.numpy.zeros(h),
                "w2": jax.random.normal(k2, (h, k)) * (1.0 / h) ** 0.5,
                "b2": jax.numpy.zeros(k)}

    def _apply(self, p, x, key=None, hyper=None):
        import jax

        h = jax.nn.relu(x @ p["w1"] + p["b1"])
        if key is not None and hyper and hyper.get("dropout"):
            keep = 1.0 - hyper["dropout"]
            h = h * jax.random.bernoulli(key, keep, h.shape) / keep
        return h @ p["w2"] + p["b2"]


def make_classifier(name: str):
    models = {"majority": Majority, "logreg": LogisticRegression, "mlp": MLPClassifier}
    if name not in models:
        raise ValueError(f"unknown baseline {name!r}; expected one of {CLASSIFIERS}")
    return models[name]()
