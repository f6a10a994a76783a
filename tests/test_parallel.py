"""Data parallelism (perturbjax/training/parallel.py): 4 CPU devices give the 1-device run.

The multi-device test runs in a subprocess: `--xla_force_host_platform_device_count` must be in
XLA_FLAGS before JAX initialises, and this pytest process has initialised it already.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from perturbjax.training.parallel import Shares, make_mesh, stack_shares

ROOT = os.path.join(os.path.dirname(__file__), "..")

# Two runs of the demo's test variant through `train_and_evaluate`, 20 steps of a global batch of
# 8: the plain step on one device, and the shard_map step on a 4-device mesh (2 conditions per
# device). Dropout is 0, since with dropout the devices draw their own masks (the key is folded
# with the device index) and the runs then agree in distribution only. The model is R-GCN: in
# the GAT, some attention vectors get tiny gradients (1e-12 to 1e-5 on the demo: relations whose
# messages barely reach the batch's loss), Adam scales the rounding noise that the two reduction
# orders leave in them up to learning-rate-sized steps, and those parameters drift apart by
# ~1e-3 although the losses agree to ~1e-6. (Relations whose receivers have one in-edge each get
# exactly zero gradient in both runs; they do not drift.)
SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from flax import nnx
    from perturbjax.config import apply_overrides, load_config
    from perturbjax.tasks import make_task
    from perturbjax.training.checkpoint import Checkpoints
    from perturbjax.training.loop import train_and_evaluate
    from perturbjax.training.optim import make_optimizer

    assert jax.device_count() == 4, jax.devices()
    demo, workdir = sys.argv[1], sys.argv[2]
    base = ["model.name=rgcn", "model.dropout=0.0", "train.batch_size=8", "train.num_steps=20",
            "train.log_every=1", "train.eval_every=20", "train.checkpoint.every=20", "baselines=[]"]
    out = {}
    for name, extra in (("single", []), ("parallel", ["train.data_parallel=True"])):
        config = apply_overrides(load_config(demo + ":test"), base + extra)
        run = f"{workdir}/{name}"
        summary = train_and_evaluate(config, run, progress=False)
        with open(f"{run}/metrics.jsonl") as f:
            losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
        if name == "single":
            task = make_task(config)
            params = nnx.split(task.build_model(nnx.Rngs(0)), nnx.Param, ...)[1]
            tx, _ = make_optimizer(config.train)
            template = {"params": params, "opt_state": tx.init(params), "best_params": params,
                        "key": np.asarray(jax.random.key_data(jax.random.key(0)))}
        ckpt = Checkpoints(run, keep=1)
        state, _ = ckpt.restore(20, template)
        ckpt.close()
        np.savez(f"{workdir}/{name}.npz", *jax.tree.leaves(state["params"]))
        out[name] = {"losses": losses, "compilations": summary["compilations"],
                     "test": summary["test"]["pearson_centered"]}
    print("RESULT " + json.dumps(out))
""")


def test_four_devices_match_one_device(tmp_path):
    script = tmp_path / "dp.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [os.path.abspath(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(script), os.path.join(ROOT, "experiments", "demo.py"),
                           str(tmp_path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    result = json.loads(line[len("RESULT "):])
    single, parallel = result["single"], result["parallel"]
    assert len(single["losses"]) == len(parallel["losses"]) == 20
    np.testing.assert_allclose(parallel["losses"], single["losses"], rtol=0, atol=1e-5)
    a, b = np.load(tmp_path / "single.npz"), np.load(tmp_path / "parallel.npz")
    assert len(a.files) == len(b.files) > 0
    diff = max(float(np.abs(a[k] - b[k]).max()) for k in a.files)
    assert diff < 1e-5, diff
    # Both runs compile each step once.
    assert single["compilations"] == parallel["compilations"] == {"train_step": 1, "predict_step": 1}
    assert abs(single["test"] - parallel["test"]) < 1e-4


def test_shares_layout_and_indivisible_batch():
    idx = np.arange(8)
    parts = Shares(4, (0, 1, 2, 3)).split(idx)
    assert [p.tolist() for p in parts] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    # A process holding devices 2 and 3 of the mesh builds only their shares.
    assert [p.tolist() for p in Shares(4, (2, 3)).split(idx)] == [[4, 5], [6, 7]]
    stacked = stack_shares([{"drug": p, "covariates": np.zeros((2, 3))} for p in parts])
    assert stacked["drug"].shape == (4, 2) and stacked["covariates"].shape == (4, 2, 3)
    assert stacked["drug"][1].tolist() == [2, 3]  # device i gets rows [i * B/n, (i + 1) * B/n)
    with pytest.raises(ValueError, match="batch size 10 is not divisible by the number of devices 4"):
        Shares(4, (0, 1, 2, 3)).split(np.arange(10))


def test_mesh_is_named_data_and_checks_the_device_count():
    import jax

    mesh = make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.local_device_count()
    assert make_mesh(1).size == 1
    with pytest.raises(ValueError, match="local devices are available"):
        make_mesh(jax.local_device_count() + 1)
