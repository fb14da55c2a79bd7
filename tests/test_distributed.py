"""Tests for rnnjax.distributed: a 4-device data-parallel run equals the 1-device run.

The many-device run happens in a subprocess with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (set before jax is imported).
"""

import json
import os
import subprocess
import sys
import textwrap
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import distributed as dist

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    import jax, jax.numpy as jnp, numpy as np
    import rnnjax as rj
    from rnnjax import distributed as dist
    from rnnjax.blocks import SequenceModel
    from rnnjax.train import Trainer

    assert jax.device_count() == 4, jax.devices()
    model = SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5)
    tr = Trainer(model, clip_norm=0.5)
    r = np.random.default_rng(0)
    def batch(p):
        r = np.random.default_rng(p)
        return {"inputs": r.integers(0, 5, (8, 6)).astype(np.int32),
                "targets": r.integers(0, 5, (8, 6)).astype(np.int32),
                "length": np.array([6, 3, 5, 6, 1, 2, 6, 4], np.int32)}
    one = tr.init(jax.random.key(0))
    mesh = dist.make_mesh()
    many = dist.replicate(one, mesh)
    out = {"one": [], "many": [], "tbptt_one": [], "tbptt_many": []}
    for p in range(3):
        one, m1 = tr.train_step(one, {k: jnp.asarray(v) for k, v in batch(p).items()})
        sharded = dist.shard_batch(batch(p), mesh)
        assert sharded["inputs"].sharding.spec == jax.sharding.PartitionSpec("data")
        assert len(sharded["inputs"].addressable_shards) == 4
        many, m4 = tr.train_step(many, sharded)
        out["one"].append(float(m1["loss"]))
        out["many"].append(float(m4["loss"]))
    one_t, many_t = one, many
    if "tbptt" in sys.argv:
        one_t, m1 = tr.tbptt_step(one, {k: jnp.asarray(v) for k, v in batch(9).items()}, 2)
        many_t, m4 = tr.tbptt_step(many, dist.shard_batch(batch(9), mesh), 2)
        out["tbptt_one"] = np.asarray(m1["loss"]).tolist()
        out["tbptt_many"] = np.asarray(m4["loss"]).tolist()
    leaf = jax.tree_util.tree_leaves(many_t.params)[0]
    out["params_replicated"] = leaf.sharding.is_fully_replicated and len(leaf.sharding.device_set) == 4
    out["max_param_diff"] = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree_util.tree_leaves(one_t.params), jax.tree_util.tree_leaves(many_t.params)))
    try:
        dist.shard_batch({"inputs": np.zeros((6, 2), np.float32)}, mesh)
        out["bad_batch_error"] = None
    except ValueError as e:
        out["bad_batch_error"] = str(e)
    print("RESULT" + json.dumps(out))
    """
)


def _run_four_devices(*args):
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu"
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")][-1]
    return json.loads(line[len("RESULT") :])


@pytest.fixture(scope="module")
def four_devices():
    return _run_four_devices()


def test_four_devices_equal_one_device(four_devices):
    """Three train steps, batch of 8 sharded over 4 CPU devices vs one device."""
    np.testing.assert_allclose(four_devices["many"], four_devices["one"], rtol=2e-6)
    assert four_devices["max_param_diff"] < 1e-5
    assert four_devices["params_replicated"]


@pytest.mark.slow
def test_four_devices_equal_one_device_tbptt():
    out = _run_four_devices("tbptt")
    np.testing.assert_allclose(out["many"], out["one"], rtol=2e-6)
    np.testing.assert_allclose(out["tbptt_many"], out["tbptt_one"], rtol=2e-6)
    assert out["max_param_diff"] < 1e-5
    assert out["params_replicated"]


def test_batch_not_divisible_by_devices_is_a_clear_error(four_devices):
    msg = four_devices["bad_batch_error"]
    assert msg is not None and "6" in msg and "multiple of the 4 devices" in msg


def test_single_device_helpers():
    mesh = dist.make_mesh()
    assert mesh.axis_names == (dist.DATA_AXIS,)
    b = dist.shard_batch({"x": np.arange(jax.device_count() * 2, dtype=np.float32)}, mesh)
    np.testing.assert_array_equal(np.asarray(b["x"]), np.arange(jax.device_count() * 2))
    r = dist.replicate({"w": jnp.ones(3)}, mesh)
    assert r["w"].sharding.is_fully_replicated
    with pytest.raises(ValueError, match="scalar"):
        dist.shard_batch({"x": np.float32(1.0)}, mesh)
    with pytest.raises(ValueError, match="axis_name"):
        dist.shard_batch({"x": np.zeros(2)}, mesh, axis_name="model")
    with pytest.raises(ValueError, match="at least one device"):
        dist.make_mesh([])


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
    for v in (
        "JAX_COORDINATOR_ADDRESS",
        "SLURM_JOB_ID",
        "TPU_WORKER_HOSTNAMES",
        "OMPI_COMM_WORLD_SIZE",
    ):
        monkeypatch.delenv(v, raising=False)
    called = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: called.append(kw))
    assert dist.initialize() is False and not called
    assert dist.initialize(coordinator_address="host:1234", num_processes=2, process_id=0) is True
    assert called and called[0]["num_processes"] == 2


def test_mesh_arguments_are_checked():
    with pytest.raises(TypeError, match="axis_name must be a non-empty str"):
        dist.make_mesh(axis_name=3)
    with pytest.raises(TypeError, match="devices must be"):
        dist.make_mesh(devices="cpu")
    with pytest.raises(TypeError, match="devices must be jax devices"):
        dist.make_mesh(devices=[0])
    with pytest.raises(ValueError, match="distinct"):
        dist.make_mesh(devices=jax.devices() * 2)
    mesh = dist.make_mesh(devices=jax.devices()[:1], axis_name="batch")
    assert mesh.axis_names == ("batch",) and mesh.devices.size == 1
    for bad in ("data", jax.devices()):
        with pytest.raises(TypeError, match=r"mesh must be a jax.sharding.Mesh.*make_mesh"):
            dist.fit(None, None, None, 1, mesh=bad)
        with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
            dist.shard_batch({"x": np.zeros((2, 3))}, bad)
        with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
            dist.replicate({"x": np.zeros(2)}, bad)


def test_only_process_zero_writes_the_log(monkeypatch, tmp_path):
    """In every process but 0, distributed.fit passes fit no log file and no progress."""
    from rnnjax import train

    seen = []
    monkeypatch.setattr(train, "fit", lambda *a, **k: (seen.append(k), (a[1], []))[1])
    state = train.TrainState(
        step=jnp.int32(0),
        position=jnp.int32(0),
        params={"w": jnp.ones(2)},
        opt_state=(),
        key=jax.random.key_data(jax.random.key(0)),
        carry=None,
    )
    log = tmp_path / "log.jsonl"
    for index, want_log in ((0, log), (1, None)):
        monkeypatch.setattr(jax, "process_index", lambda: index)
        dist.fit(types.SimpleNamespace(model=None), state, None, 1, log_path=log, progress=True)
        assert seen[-1]["log_path"] == want_log
        assert seen[-1]["progress"] is (index == 0)
