r"""Data-parallel training with ``jax.sharding``: the batch sharded, the parameters replicated.

The train steps of :mod:`rnnjax.train` are plain ``jax.jit`` programs, so they run
data-parallel unchanged: put the state on the devices replicated
(:func:`replicate`), the batch sharded along its leading axis (:func:`shard_batch`),
and XLA's SPMD partitioner inserts the gradient all-reduce (no hand-written
collective). The same code runs on many processes (hosts) after :func:`initialize`
(``jax.distributed.initialize``): the arrays are then global ``jax.Array``\ s spanning
the devices of every process, each process holding its own rows of the batch
(:func:`global_batch`), and :func:`fit` trains, checkpoints (orbax, every process
taking part) and resumes exactly like the one-process :func:`rnnjax.train.fit`.

On CPU, several processes on one machine talk over the loopback address through JAX's
gloo collectives (``jax_cpu_collectives_implementation``, the default).

Shapes: ``B`` global batch, a multiple of the number of devices on the mesh axis.

Example:
  >>> mesh = make_mesh()                                       # doctest: +SKIP
  >>> state = replicate(trainer.init(jax.random.key(0)), mesh)  # doctest: +SKIP
  >>> state, m = trainer.train_step(state, shard_batch(batch, mesh))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "initialize",
    "make_mesh",
    "replicate",
    "shard_batch",
    "process_rows",
    "global_batch",
    "abstract_state",
    "fit",
    "DATA_AXIS",
]

DATA_AXIS = "data"


def initialize(
    coordinator_address: Optional[str] = None,
    num_processes: Optional[int] = None,
    process_id: Optional[int] = None,
    **kwargs,
) -> bool:
    """Start JAX's multi-host runtime when this is a multi-process run.

    Calls ``jax.distributed.initialize`` when a coordinator is given (arguments, or the
    ``JAX_COORDINATOR_ADDRESS`` / cluster environment JAX detects itself, e.g. SLURM,
    Cloud TPU) and does nothing for a single process. Call it before any other JAX call.

    Args:
      coordinator_address: ``"host:port"`` of process 0.
      num_processes: number of processes.
      process_id: this process's index.
      **kwargs: passed to ``jax.distributed.initialize``.

    Returns:
      Whether the distributed runtime was initialised.

    Example:
      In a single process (no coordinator in the environment) nothing starts:

      >>> from rnnjax import distributed
      >>> distributed.initialize()
      False
    """
    explicit = coordinator_address is not None or num_processes is not None
    env = any(
        v in os.environ
        for v in (
            "JAX_COORDINATOR_ADDRESS",
            "SLURM_JOB_ID",
            "TPU_WORKER_HOSTNAMES",
            "OMPI_COMM_WORLD_SIZE",
        )
    )
    if not explicit and not env:
        return False
    if num_processes is not None and num_processes == 1 and coordinator_address is None:
        return False
    jax.distributed.initialize(
        coordinator_address=coordinator_address,
        num_processes=num_processes,
        process_id=process_id,
        **kwargs,
    )
    if jax.process_count() > 1:
        # Meet once right away: the first collective sets up the CPU (gloo) context,
        # which waits only a limited time for the other processes; here they arrive
        # together rather than after compiles of different lengths.
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("rnnjax.distributed.initialize")
    return True


def make_mesh(devices: Optional[Sequence] = None, axis_name: str = DATA_AXIS) -> Mesh:
    """A one-axis ``Mesh`` over ``devices`` (default all devices of all processes).

    Args:
      devices: a sequence of distinct devices (``jax.Device``; default ``jax.devices()``).
      axis_name: the name of the mesh axis (a non-empty ``str``).

    Returns:
      A ``jax.sharding.Mesh`` with the one axis ``axis_name``.

    Raises:
      TypeError: ``devices`` is not a sequence of devices, ``axis_name`` not a ``str``.
      ValueError: ``devices`` is empty or repeats a device.

    Example:
      >>> from rnnjax import distributed
      >>> mesh = distributed.make_mesh()
      >>> mesh.axis_names
      ('data',)
    """
    if not isinstance(axis_name, str) or not axis_name:
        raise TypeError(f"axis_name must be a non-empty str (a mesh axis name); got {axis_name!r}")
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, (str, bytes)) or not hasattr(devices, "__iter__"):
        raise TypeError(
            f"devices must be a sequence of jax devices (e.g. jax.devices()); got {devices!r}"
        )
    devices = list(devices)
    if not devices:
        raise ValueError("devices must hold at least one device; got none")
    bad = [d for d in devices if not isinstance(d, jax.Device)]
    if bad:
        raise TypeError(
            f"devices must be jax devices (e.g. jax.devices()); got {type(bad[0]).__name__} "
            f"{bad[0]!r}"
        )
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices must be distinct; got {devices}")
    return Mesh(np.asarray(devices), (axis_name,))


def _check_mesh(mesh, name: str = "mesh") -> Mesh:
    """``mesh`` must be a ``jax.sharding.Mesh`` (e.g. :func:`make_mesh`)."""
    if not isinstance(mesh, Mesh):
        hint = (
            "; build one with rnnjax.distributed.make_mesh(devices)"
            if isinstance(mesh, (list, tuple)) or hasattr(mesh, "__iter__")
            else "; build one with rnnjax.distributed.make_mesh()"
        )
        raise TypeError(
            f"{name} must be a jax.sharding.Mesh; got {type(mesh).__name__} {mesh!r:.80}{hint}"
        )
    return mesh


def replicate(tree, mesh: Mesh):
    """Put every array leaf of ``tree`` on all devices of ``mesh`` (replicated).

    On several processes every process must pass the same values (e.g. the same
    ``trainer.init(key)``); each one fills its own devices from its copy.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import distributed
      >>> mesh = distributed.make_mesh()
      >>> params = distributed.replicate({"w": jnp.ones((3, 4))}, mesh)
      >>> params["w"].sharding.is_fully_replicated
      True
    """
    sharding = NamedSharding(_check_mesh(mesh), PartitionSpec())
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(
            lambda a: jax.device_put(a, sharding) if hasattr(a, "shape") else a, tree
        )

    def put(a):
        if not hasattr(a, "shape"):
            return a
        host = np.asarray(jax.device_get(a))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree_util.tree_map(put, tree)


def shard_batch(batch, mesh: Mesh, axis_name: Optional[str] = None):
    """Shard every leaf of ``batch`` along its leading (batch) axis over ``mesh``.

    On one process the leaves are the global batch. On several processes each process
    passes its local part (``B / process_count`` rows), assembled with
    ``jax.make_array_from_process_local_data``.

    Raises:
      ValueError: a leaf's batch size is not a multiple of the devices on the axis.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import distributed
      >>> mesh = distributed.make_mesh()
      >>> batch = distributed.shard_batch({"inputs": jnp.ones((2 * jax.device_count(), 5))}, mesh)
      >>> batch["inputs"].shape[1]                          # (B, T), B split over devices
      5
    """
    mesh = _check_mesh(mesh)
    axis_name = mesh.axis_names[0] if axis_name is None else axis_name
    if axis_name not in mesh.axis_names:
        raise ValueError(
            f"axis_name must be one of the mesh axes {mesh.axis_names}; got {axis_name!r}"
        )
    n_dev = mesh.shape[axis_name]
    sharding = NamedSharding(mesh, PartitionSpec(axis_name))
    multi = jax.process_count() > 1

    def put(path, a):
        a = np.asarray(a) if not isinstance(a, jax.Array) else a
        if a.ndim == 0:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} must have a batch axis; got a scalar"
            )
        B = a.shape[0] * (jax.process_count() if multi else 1)
        if B % n_dev:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has global batch size {B}, which must be "
                f"a multiple of the {n_dev} devices on mesh axis {axis_name!r}"
            )
        if multi:
            return jax.make_array_from_process_local_data(sharding, np.asarray(a))
        return jax.device_put(a, sharding)

    return jax.tree_util.tree_map_with_path(put, batch)


def process_rows(batch, process_index: Optional[int] = None, process_count: Optional[int] = None):
    """This process's rows of a global host batch: rows ``[i * B / P, (i + 1) * B / P)``
    of every leaf, for process ``i`` of ``P`` (default: this process of all).

    Raises:
      ValueError: a leaf's batch size is not a multiple of ``P``.

    Example:
      >>> import numpy as np
      >>> from rnnjax import distributed
      >>> rows = distributed.process_rows({"x": np.arange(8)}, process_index=1, process_count=2)
      >>> rows["x"].tolist()
      [4, 5, 6, 7]
    """
    i = jax.process_index() if process_index is None else process_index
    P = jax.process_count() if process_count is None else process_count

    def rows(path, a):
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] % P:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} must have a leading batch axis "
                f"that is a multiple of the {P} processes; got shape {a.shape}"
            )
        n = a.shape[0] // P
        return a[i * n : (i + 1) * n]

    return jax.tree_util.tree_map_with_path(rows, batch)


def global_batch(batch, mesh: Mesh):
    """A global batch sharded over ``mesh`` from the global host batch that every
    process holds (the same values everywhere, e.g. a deterministic ``data(position)``):
    each process contributes only its rows (:func:`process_rows`). With one process,
    :func:`shard_batch` of the whole batch.

    Example:
      >>> import numpy as np
      >>> from rnnjax import distributed
      >>> mesh = distributed.make_mesh()
      >>> batch = distributed.global_batch({"x": np.zeros((4, 3))}, mesh)
      >>> batch["x"].shape
      (4, 3)
    """
    return shard_batch(process_rows(batch), _check_mesh(mesh))


def abstract_state(trainer, mesh: Mesh, **kwargs):
    """``trainer.abstract_state(**kwargs)`` with every leaf replicated over ``mesh``: the
    restore target under which orbax puts the restored arrays on every process's
    devices (see :meth:`rnnjax.checkpoint.Checkpointer.restore`).

    Example:
      >>> import jax, rnnjax as rj
      >>> from rnnjax import distributed
      >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> target = distributed.abstract_state(trainer, distributed.make_mesh())
      >>> all(leaf.sharding.is_fully_replicated for leaf in jax.tree_util.tree_leaves(target))
      True
    """
    sharding = NamedSharding(_check_mesh(mesh), PartitionSpec())
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding),
        trainer.abstract_state(**kwargs),
    )


def fit(trainer, state, data, num_batches: int, mesh: Optional[Mesh] = None, **fit_kwargs):
    """Data-parallel :func:`rnnjax.train.fit` over ``mesh`` (default: every device of
    every process).

    Every process calls it with the same arguments. ``data(position)`` returns the
    global host batch (identical on every process: it is a function of the position,
    so a resumed run sees the batches it would have seen); it is checked on the host,
    then each process contributes its rows of it (:func:`global_batch`). ``state`` is
    replicated over the mesh (a fresh ``trainer.init`` on every process, or a state
    restored with :func:`abstract_state` as the target). A ``checkpointer`` in
    ``fit_kwargs`` saves from every process: orbax coordinates the arrays, and only
    process 0 writes the files the processes share (``config.json``, ``ranking.json``,
    orbax's metrics, and ``log_path``: on the other processes ``log_path`` and
    ``progress`` are switched off, so their ``history`` holds only this call's rows).

    Args:
      trainer: the :class:`rnnjax.train.Trainer`.
      state: the train state (replicated here over ``mesh``).
      data: ``data(position)`` -> the global host batch at that position.
      num_batches: train until the state's position reaches this.
      mesh: a ``jax.sharding.Mesh`` (:func:`make_mesh`); default every device.
      **fit_kwargs: passed to :func:`rnnjax.train.fit`.

    Returns:
      ``(state, history)`` as :func:`rnnjax.train.fit`; the state's arrays are global.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import distributed
      >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> def data(i):                                      # the global batch i: (B, T) tokens
      ...     tokens = (jnp.arange(14).reshape(2, 7) + i) % 5
      ...     return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
      >>> state, history = distributed.fit(trainer, trainer.init(jax.random.key(0)), data, 2,
      ...                                  progress=False)
      >>> int(state.position), len(history)
      (2, 2)
    """
    from rnnjax import train

    mesh = make_mesh() if mesh is None else _check_mesh(mesh)
    train._trainer._check_state("state", state)  # a TrainState, not params alone
    if jax.process_index() != 0:
        # one writer for the files every process shares: the JSONL log and the
        # progress display belong to process 0 (orbax coordinates the checkpoints)
        fit_kwargs = dict(fit_kwargs, log_path=None, progress=False)
    per_step = getattr(trainer.model, "head", None) == "per_step"

    def sharded(position):
        batch = data(position)
        train._check_batch(batch, per_step, trainer.loss, trainer.model)  # on the host values
        return global_batch(batch, mesh)

    state = replicate(state, mesh)
    return train.fit(trainer, state, sharded, num_batches, **fit_kwargs)
