"""A battery of malformed calls over the public API.

Every call in :data:`BAD` must raise a ``ValueError`` or ``TypeError`` whose message names
the argument (the second column). Every call in :data:`VALID` is an edge case that must
be accepted (NumPy scalars for numbers, and so on).

Run as a script to classify every call without asserting (``clear`` / ``obscure`` /
``silent``), which is how the before/after counts were taken::

    PYTHONPATH=. python tests/test_bad_input.py

Shapes are tiny and the models are built once (module-level cache), so the whole battery
runs in seconds once the few jitted functions are compiled.
"""

from __future__ import annotations

import functools
import sys
import tempfile
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import decoding, metrics, reservoir, train
from rnnjax.blocks import SequenceModel
from rnnjax.seq2seq import Seq2Seq

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- fixtures


@functools.lru_cache(maxsize=None)
def F(name):
    """Shared, lazily built objects (built once for the whole battery)."""
    k = jax.random.key(0)
    if name == "gru":
        return rj.GRU(2, 3)
    if name == "gru_p":
        return F("gru").init(k)
    if name == "lstm":
        return rj.LSTM(2, 3)
    if name == "lstm_p":
        return F("lstm").init(k)
    if name == "xs":
        return jnp.ones((5, 2))
    if name == "xsb":
        return jnp.ones((2, 5, 2))
    if name == "rec":
        return rj.Recurrent(rj.GRU(2, 3))
    if name == "lm":  # tokens, per-step head, natively batched path
        return SequenceModel(rj.GRU(3, 4), output_size=4, vocab_size=4)
    if name == "lm_p":
        return F("lm").init(k)
    if name == "lm_proj":  # proj_size: the per-example (vmap) path of apply_batch
        return SequenceModel(rj.LSTM(3, 4, proj_size=2), output_size=4, vocab_size=4)
    if name == "lm_proj_p":
        return F("lm_proj").init(k)
    if name == "lm_drop":  # dropout with a key: the per-example path
        return SequenceModel(
            rj.Recurrent(rj.GRU(3, 4), input_dropout=0.25), output_size=4, vocab_size=4
        )
    if name == "lm_drop_p":
        return F("lm_drop").init(k)
    if name == "tr":
        return train.Trainer(F("lm"))
    if name == "tr_state":
        return F("tr").init(k)
    if name == "s2s":
        return Seq2Seq.build(src_vocab=5, tgt_vocab=6, embed_size=3, hidden_size=4)
    if name == "s2s_p":
        return F("s2s").init(k)
    if name == "esn":
        return rj.EchoState(1, 8)
    if name == "esn_p":
        return F("esn").init(k)
    if name == "k":
        return jax.random.key(0)
    if name == "ckpt":
        return rj.checkpoint.Checkpointer(tempfile.mkdtemp(), async_save=False)
    raise KeyError(name)


def _tok(*shape, hi=4):
    return jnp.asarray(np.random.default_rng(0).integers(0, hi, shape), jnp.int32)


def _batch(**kw):
    b = {"inputs": _tok(2, 5), "targets": _tok(2, 5)}
    b.update(kw)
    return b


def _unroll(**kw):
    args = dict(cell=F("gru"), params=F("gru_p"), xs=F("xs"))
    args.update(kw)
    return rj.unroll(**args)


def _unroll_batch(**kw):
    args = dict(cell=F("gru"), params=F("gru_p"), xs=F("xsb"))
    args.update(kw)
    return rj.unroll_batch(**args)


def _s2s(method, **kw):
    m, p = F("s2s"), F("s2s_p")
    if method == "encode":
        args = dict(src=_tok(4, hi=5), src_len=None)
    elif method in ("decode_train", "token_losses"):
        args = dict(src=_tok(4, hi=5), src_len=4, tgt=_tok(5, hi=6), tgt_len=5)
        if method == "decode_train":
            args["tgt_len"] = None
    else:  # batched
        args = dict(
            src=_tok(2, 4, hi=5),
            src_len=jnp.array([4, 2]),
            tgt=_tok(2, 5, hi=6),
            tgt_len=jnp.array([5, 3]),
        )
    args.update(kw)
    return getattr(m, method)(p, **args)


def _decode(fn, **kw):
    args = dict(src=_tok(2, 4, hi=5), src_len=jnp.array([4, 2]), max_len=3)
    args.update(kw)
    return fn(F("s2s"), F("s2s_p"), **args)


def _fit_ridge(**kw):
    us = jnp.ones((20, 1)) * 0.1
    args = dict(us=us, ys=us, ridge=1e-3, washout=2)
    args.update(kw)
    return reservoir.fit_ridge(F("esn"), F("esn_p"), **args)


def _save_at(position):
    st = F("tr_state")
    return F("ckpt").save(st._replace(position=jnp.asarray(position, jnp.int32)), force=True)


def _to_torch_bad():
    p = dict(F("gru_p"))
    del p["b"]
    return rj.interop.to_torch(F("rec"), p)


# --------------------------------------------------------------------------- the table
# (id, name the message must contain, the malformed call)


def _topology(name, key=None, **kw):
    """A reservoir topology of size 10 (``cluster``: 2 clusters) with ``kw`` changed."""
    from rnnjax.reservoir import topologies

    key = jax.random.key(0) if key is None else key
    kw = {"clusters": 2, **kw} if name == "cluster" else kw
    return getattr(topologies, name)(key, 10, **kw)


BAD = [
    # ---- cells
    ("gru-input_size-0", "input_size", lambda: rj.GRU(0, 3)),
    ("gru-input_size-float", "input_size", lambda: rj.GRU(2.5, 3)),
    ("gru-input_size-bool", "input_size", lambda: rj.GRU(True, 3)),
    ("gru-input_size-str", "input_size", lambda: rj.GRU("2", 3)),
    ("gru-hidden_size-neg", "hidden_size", lambda: rj.GRU(2, -1)),
    ("gru-reset_after-str", "reset_after", lambda: rj.GRU(2, 3, reset_after="yes")),
    ("gru-chrono-nan", "chrono_t_max", lambda: rj.GRU(2, 3, chrono_t_max=NAN)),
    ("gru-param_dtype-int", "param_dtype", lambda: rj.GRU(2, 3, param_dtype=jnp.int32)),
    ("gru-param_dtype-str", "param_dtype", lambda: rj.GRU(2, 3, param_dtype="nope")),
    ("gru-dtype-int", "dtype", lambda: rj.GRU(2, 3, dtype=jnp.int32)),
    ("gru-kernel_init", "kernel_init", lambda: rj.GRU(2, 3, kernel_init="nope")),
    ("gru-recurrent_init", "recurrent_init", lambda: rj.GRU(2, 3, recurrent_init=3)),
    ("lstm-forget_bias-nan", "forget_bias", lambda: rj.LSTM(2, 3, forget_bias=NAN)),
    ("lstm-forget_bias-inf", "forget_bias", lambda: rj.LSTM(2, 3, forget_bias=INF)),
    ("lstm-forget_bias-str", "forget_bias", lambda: rj.LSTM(2, 3, forget_bias="1")),
    ("lstm-proj_size-neg", "proj_size", lambda: rj.LSTM(2, 3, proj_size=-1)),
    ("lstm-proj_size-big", "proj_size", lambda: rj.LSTM(2, 3, proj_size=3)),
    ("lstm-chrono-1", "chrono_t_max", lambda: rj.LSTM(2, 3, chrono_t_max=1.0)),
    ("rnn-nonlinearity", "nonlinearity", lambda: rj.SimpleRNN(2, 3, nonlinearity="sigmoid")),
    ("gru-init-key", "key", lambda: F("gru").init(0)),
    ("gru-initial_state-dtype", "dtype", lambda: F("gru").initial_state(jnp.int32)),
    ("step-x-shape", "x", lambda: F("gru").step(F("gru_p"), F("gru").initial_state(), jnp.ones(3))),
    (
        "step-x-2d",
        "x",
        lambda: F("gru").step(F("gru_p"), F("gru").initial_state(), jnp.ones((1, 2))),
    ),
    (
        "step-x-int",
        "x",
        lambda: F("gru").step(F("gru_p"), F("gru").initial_state(), jnp.ones(2, jnp.int32)),
    ),
    (
        "step-state-shape",
        "state",
        lambda: F("gru").step(F("gru_p"), rj.GRUState(jnp.ones(4)), jnp.ones(2)),
    ),
    (
        "step-params-missing",
        "params",
        lambda: F("gru").step({"w_ih": F("gru_p")["w_ih"]}, F("gru").initial_state(), jnp.ones(2)),
    ),
    (
        "lstm-step-state-tuple",
        "state",
        lambda: F("lstm").step(F("lstm_p"), (jnp.zeros(3),), jnp.ones(2)),
    ),
    # ---- unroll
    ("unroll-xs-1d", "xs", lambda: _unroll(xs=jnp.ones(5))),
    ("unroll-xs-int", "xs", lambda: _unroll(xs=jnp.ones((5, 2), jnp.int32))),
    ("unroll-xs-features", "xs", lambda: _unroll(xs=jnp.ones((5, 3)))),
    ("unroll-xs-batched", "xs", lambda: _unroll(xs=F("xsb"))),
    ("unroll-xs-list", "xs", lambda: _unroll(xs=[[1.0, 2.0], [3.0]])),
    ("unroll-length-big", "length", lambda: _unroll(length=6)),
    ("unroll-length-neg", "length", lambda: _unroll(length=-1)),
    ("unroll-length-float", "length", lambda: _unroll(length=2.0)),
    ("unroll-length-bool", "length", lambda: _unroll(length=True)),
    ("unroll-length-vector", "length", lambda: _unroll(length=jnp.array([2, 3]))),
    ("unroll-reverse-str", "reverse", lambda: _unroll(reverse="no")),
    ("unroll-reverse-int", "reverse", lambda: _unroll(reverse=1)),
    ("unroll-unroll-0", "unroll", lambda: _unroll(unroll=0)),
    ("unroll-resets-int", "resets", lambda: _unroll(resets=jnp.zeros(5, jnp.int32))),
    ("unroll-resets-shape", "resets", lambda: _unroll(resets=jnp.zeros(4, bool))),
    ("unroll-state-shape", "state", lambda: _unroll(state=rj.GRUState(jnp.zeros(4)))),
    ("unroll-state-int", "state", lambda: _unroll(state=rj.GRUState(jnp.zeros(3, jnp.int32)))),
    (
        "unroll-params-shape",
        "params",
        lambda: _unroll(params={**F("gru_p"), "w_hh": jnp.ones((4, 9))}),
    ),
    ("unroll-params-missing", "params", lambda: _unroll(params={"w_ih": F("gru_p")["w_ih"]})),
    ("unroll-config", "config", lambda: _unroll(config="fused")),
    ("unroll-cell", "cell", lambda: _unroll(cell="gru")),
    ("unroll_batch-length-big", "length", lambda: _unroll_batch(length=jnp.array([2, 9]))),
    ("unroll_batch-length-neg", "length", lambda: _unroll_batch(length=jnp.array([2, -3]))),
    ("unroll_batch-length-shape", "length", lambda: _unroll_batch(length=jnp.array([2, 3, 4]))),
    ("unroll_batch-xs-2d", "xs", lambda: _unroll_batch(xs=F("xs"))),
    ("unroll_batch-resets-shape", "resets", lambda: _unroll_batch(resets=jnp.zeros((2, 4), bool))),
    # ---- scan config
    ("scanconfig-backward", "backward", lambda: rj.ScanConfig(backward="fast")),
    ("scanconfig-projection", "projection", lambda: rj.ScanConfig(projection="x")),
    ("scanconfig-remat-0", "remat", lambda: rj.ScanConfig(remat=0)),
    ("scanconfig-remat-neg", "remat", lambda: rj.ScanConfig(remat=-2)),
    ("scanconfig-method", "method", lambda: rj.ScanConfig(method="fast")),
    ("scanconfig-unroll-0", "unroll", lambda: rj.ScanConfig(unroll=0)),
    # ---- layers
    ("recurrent-unroll-0", "unroll", lambda: rj.Recurrent(rj.GRU(2, 3), unroll=0)),
    ("recurrent-reverse-str", "reverse", lambda: rj.Recurrent(rj.GRU(2, 3), reverse="no")),
    (
        "recurrent-input_dropout-1",
        "input_dropout",
        lambda: rj.Recurrent(rj.GRU(2, 3), input_dropout=1.0),
    ),
    (
        "recurrent-input_dropout-nan",
        "input_dropout",
        lambda: rj.Recurrent(rj.GRU(2, 3), input_dropout=NAN),
    ),
    (
        "recurrent-recurrent_dropout-neg",
        "recurrent_dropout",
        lambda: rj.Recurrent(rj.GRU(2, 3), recurrent_dropout=-0.1),
    ),
    ("recurrent-zoneout-inf", "zoneout", lambda: rj.Recurrent(rj.GRU(2, 3), zoneout=INF)),
    (
        "recurrent-mode",
        "recurrent_dropout_mode",
        lambda: rj.Recurrent(rj.GRU(2, 3), recurrent_dropout_mode="x"),
    ),
    ("recurrent-config", "config", lambda: rj.Recurrent(rj.GRU(2, 3), config="fused")),
    ("recurrent-cell", "cell", lambda: rj.Recurrent("gru")),
    ("recurrent-apply-length", "length", lambda: F("rec").apply(F("gru_p"), F("xs"), 6)),
    (
        "recurrent-apply_batch-length",
        "length",
        lambda: F("rec").apply_batch(F("gru_p"), F("xsb"), jnp.array([2, 9])),
    ),
    (
        "recurrent-apply-key",
        "key",
        lambda: rj.Recurrent(rj.GRU(2, 3), input_dropout=0.5).apply(F("gru_p"), F("xs"), key=3),
    ),
    ("stacked-empty", "layers", lambda: rj.Stacked([])),
    ("stacked-str", "layers", lambda: rj.Stacked("gru")),
    ("stacked-sizes", "input_size", lambda: rj.Stacked([rj.GRU(2, 3), rj.GRU(4, 3)])),
    ("stacked-dropout", "dropout", lambda: rj.Stacked([rj.GRU(2, 3), rj.GRU(3, 3)], dropout=1.5)),
    ("bidirectional-merge", "merge", lambda: rj.Bidirectional(rj.GRU(2, 3), merge="max")),
    (
        "bidirectional-forward-rev",
        "forward",
        lambda: rj.Bidirectional(rj.Recurrent(rj.GRU(2, 3), reverse=True)),
    ),
    ("dropout-rate", "rate", lambda: rj.dropout(jax.random.key(0), jnp.ones(3), 1.0)),
    ("pack-row_length-0", "row_length", lambda: rj.pack([jnp.ones((2, 1))], 0)),
    ("pack-too-long", "row_length", lambda: rj.pack([jnp.ones((4, 1))], 3)),
    # ---- SequenceModel
    ("model-output_size-0", "output_size", lambda: SequenceModel(rj.GRU(2, 3), output_size=0)),
    (
        "model-output_size-np",
        "output_size",
        lambda: SequenceModel(rj.GRU(2, 3), output_size=np.float32(2)),
    ),
    ("model-vocab_size-0", "vocab_size", lambda: SequenceModel(rj.GRU(2, 3), 2, vocab_size=0)),
    ("model-head", "head", lambda: SequenceModel(rj.GRU(2, 3), 2, head="last")),
    ("model-layer", "layer", lambda: SequenceModel("gru", 2)),
    ("model-apply-token-big", "xs", lambda: F("lm").apply(F("lm_p"), jnp.array([1, 2, 99]))),
    ("model-apply-token-neg", "xs", lambda: F("lm").apply(F("lm_p"), jnp.array([1, -1, 2]))),
    ("model-apply-float-tokens", "xs", lambda: F("lm").apply(F("lm_p"), jnp.ones(3))),
    ("model-apply-length", "length", lambda: F("lm").apply(F("lm_p"), _tok(5), 9)),
    ("model-apply_batch-token-big", "xs", lambda: F("lm").apply_batch(F("lm_p"), _tok(2, 5, hi=9))),
    (
        "model-apply_batch-length-big",
        "length",
        lambda: F("lm").apply_batch(F("lm_p"), _tok(2, 5), jnp.array([2, 9])),
    ),
    (
        "model-apply_batch-length-shape",
        "length",
        lambda: F("lm").apply_batch(F("lm_p"), _tok(2, 5), jnp.array([2])),
    ),
    (
        "model-apply_batch-length-float",
        "length",
        lambda: F("lm").apply_batch(F("lm_p"), _tok(2, 5), jnp.array([2.0, 3.0])),
    ),
    (
        "model-proj-apply_batch-length-big",
        "length",
        lambda: F("lm_proj").apply_batch(F("lm_proj_p"), _tok(2, 5), jnp.array([2, 9])),
    ),
    (
        "model-proj-apply_batch-length-neg",
        "length",
        lambda: F("lm_proj").apply_batch(F("lm_proj_p"), _tok(2, 5), jnp.array([2, -3])),
    ),
    (
        "model-drop-apply_batch-length-big",
        "length",
        lambda: F("lm_drop").apply_batch(
            F("lm_drop_p"), _tok(2, 5), jnp.array([2, 9]), key=jax.random.key(1)
        ),
    ),
    (
        "model-proj-apply_batch-token-neg",
        "xs",
        lambda: F("lm_proj").apply_batch(F("lm_proj_p"), -_tok(2, 5) - 1),
    ),
    ("model-apply_batch-xs-1d", "xs", lambda: F("lm").apply_batch(F("lm_p"), _tok(5))),
    # ---- training
    ("optimizer-name", "optimizer", lambda: train.make_optimizer("adamm")),
    ("optimizer-lr-inf", "learning_rate", lambda: train.make_optimizer("adam", INF)),
    ("optimizer-lr-nan", "learning_rate", lambda: train.make_optimizer("adam", NAN)),
    ("optimizer-lr-neg", "learning_rate", lambda: train.make_optimizer("adam", -1e-3)),
    ("optimizer-lr-str", "learning_rate", lambda: train.make_optimizer("adam", "1e-3")),
    ("optimizer-clip-nan", "clip_norm", lambda: train.make_optimizer("adam", clip_norm=NAN)),
    ("optimizer-clip-inf", "clip_norm", lambda: train.make_optimizer("adam", clip_norm=INF)),
    ("optimizer-clip-0", "clip_norm", lambda: train.make_optimizer("adam", clip_norm=0.0)),
    (
        "optimizer-max_nonfinite-neg",
        "max_consecutive_nonfinite",
        lambda: train.make_optimizer("adam", max_consecutive_nonfinite=-1),
    ),
    ("trainer-loss", "loss", lambda: train.Trainer(F("lm"), loss="ce")),
    ("trainer-lr-inf", "learning_rate", lambda: train.Trainer(F("lm"), learning_rate=INF)),
    ("trainer-model", "model", lambda: train.Trainer("lm")),
    ("trainer-init-key", "key", lambda: F("tr").init(jnp.zeros(3))),
    (
        "train_step-targets-big",
        "targets",
        lambda: F("tr").train_step(F("tr_state"), _batch(targets=_tok(2, 5) + 95)),
    ),
    (
        "train_step-targets-neg",
        "targets",
        lambda: F("tr").train_step(F("tr_state"), _batch(targets=_tok(2, 5) - 1)),
    ),
    (
        "train_step-targets-float",
        "targets",
        lambda: F("tr").train_step(F("tr_state"), _batch(targets=jnp.ones((2, 5)))),
    ),
    (
        "train_step-targets-shape",
        "targets",
        lambda: F("tr").train_step(F("tr_state"), _batch(targets=_tok(2, 4))),
    ),
    (
        "train_step-inputs-big",
        "inputs",
        lambda: F("tr").train_step(F("tr_state"), _batch(inputs=_tok(2, 5) + 10)),
    ),
    (
        "train_step-length-big",
        "length",
        lambda: F("tr").train_step(F("tr_state"), _batch(length=jnp.array([2, 9]))),
    ),
    (
        "train_step-length-neg",
        "length",
        lambda: F("tr").train_step(F("tr_state"), _batch(length=jnp.array([2, -1]))),
    ),
    ("train_step-batch-list", "batch", lambda: F("tr").train_step(F("tr_state"), [1, 2])),
    ("train_step-batch-keys", "batch", lambda: F("tr").train_step(F("tr_state"), {"x": 1})),
    ("tbptt-k-0", "k", lambda: F("tr").tbptt_step(F("tr_state"), _batch(), 0)),
    ("tbptt-k-3", "k", lambda: F("tr").tbptt_step(F("tr_state"), _batch(), 3)),
    (
        "tbptt-stateful-str",
        "stateful",
        lambda: F("tr").tbptt_step(F("tr_state"), _batch(), 5, stateful="yes"),
    ),
    (
        "evaluate-targets-big",
        "targets",
        lambda: F("tr").evaluate(F("tr_state").params, _batch(targets=_tok(2, 5) + 95)),
    ),
    (
        "fit-num_batches-neg",
        "num_batches",
        lambda: train.fit(F("tr"), F("tr_state"), lambda p: _batch(), -1, progress=False),
    ),
    (
        "fit-stateful-no-tbptt",
        "stateful",
        lambda: train.fit(
            F("tr"), F("tr_state"), lambda p: _batch(), 1, stateful=True, progress=False
        ),
    ),
    (
        "fit-tbptt-0",
        "tbptt",
        lambda: train.fit(F("tr"), F("tr_state"), lambda p: _batch(), 1, tbptt=0, progress=False),
    ),
    # ---- metrics
    ("ce-labels-float", "labels", lambda: metrics.cross_entropy(jnp.zeros((3, 4)), jnp.zeros(3))),
    (
        "ce-labels-shape",
        "labels",
        lambda: metrics.cross_entropy(jnp.zeros((3, 4)), jnp.zeros(4, jnp.int32)),
    ),
    (
        "ce-labels-big",
        "labels",
        lambda: metrics.cross_entropy(jnp.zeros((3, 4)), jnp.array([0, 1, 9])),
    ),
    (
        "ce-labels-neg",
        "labels",
        lambda: metrics.cross_entropy(jnp.zeros((3, 4)), jnp.array([0, -1, 2])),
    ),
    (
        "accuracy-labels-big",
        "labels",
        lambda: metrics.accuracy(jnp.zeros((3, 4)), jnp.array([0, 1, 9])),
    ),
    ("mse-shape", "targets", lambda: metrics.mse(jnp.zeros(3), jnp.zeros(4))),
    (
        "masked_mean-mask-shape",
        "mask",
        lambda: metrics.masked_mean(jnp.zeros(3), jnp.ones(4, bool)),
    ),
    # ---- checkpoints
    (
        "ckpt-save_every-0",
        "save_every",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), save_every=0),
    ),
    (
        "ckpt-keep_last-float",
        "keep_last",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), keep_last=2.0),
    ),
    (
        "ckpt-best_mode",
        "best_mode",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), best_mode="low"),
    ),
    (
        "ckpt-config-json",
        "config",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), config={"f": object()}),
    ),
    ("ckpt-save-position-neg", "position", lambda: _save_at(-3)),
    # ---- seq2seq
    (
        "s2s-src_vocab-0",
        "src_vocab",
        lambda: Seq2Seq.build(src_vocab=0, tgt_vocab=6, embed_size=3, hidden_size=4),
    ),
    (
        "s2s-embed-float",
        "embed_size",
        lambda: Seq2Seq.build(src_vocab=5, tgt_vocab=6, embed_size=3.0, hidden_size=4),
    ),
    (
        "s2s-cell",
        "cell",
        lambda: Seq2Seq.build(src_vocab=5, tgt_vocab=6, embed_size=3, hidden_size=4, cell="tcn"),
    ),
    (
        "s2s-attention",
        "attention",
        lambda: Seq2Seq.build(src_vocab=5, tgt_vocab=6, embed_size=3, hidden_size=4, attention="x"),
    ),
    (
        "s2s-num_layers-0",
        "num_layers",
        lambda: Seq2Seq.build(src_vocab=5, tgt_vocab=6, embed_size=3, hidden_size=4, num_layers=0),
    ),
    (
        "s2s-bos-big",
        "bos_id",
        lambda: Seq2Seq.build(src_vocab=5, tgt_vocab=6, embed_size=3, hidden_size=4, bos_id=6),
    ),
    ("s2s-encode-src-big", "src", lambda: _s2s("encode", src=_tok(4, hi=5) + 5)),
    ("s2s-encode-src-neg", "src", lambda: _s2s("encode", src=jnp.array([1, -1, 2, 3]))),
    ("s2s-encode-src-float", "src", lambda: _s2s("encode", src=jnp.ones(4))),
    ("s2s-encode-src_len-big", "src_len", lambda: _s2s("encode", src_len=5)),
    ("s2s-encode-src_len-neg", "src_len", lambda: _s2s("encode", src_len=-1)),
    (
        "s2s-decode_train-empty-tgt",
        "tgt",
        lambda: _s2s("decode_train", tgt=jnp.zeros((0,), jnp.int32)),
    ),
    ("s2s-decode_train-tgt-big", "tgt", lambda: _s2s("decode_train", tgt=_tok(5, hi=6) + 6)),
    (
        "s2s-decode_train-tgt-neg",
        "tgt",
        lambda: _s2s("decode_train", tgt=jnp.array([1, 2, -1, 3, 2])),
    ),
    (
        "s2s-decode_train-teacher-nan",
        "teacher_prob",
        lambda: _s2s("decode_train", teacher_prob=NAN),
    ),
    (
        "s2s-decode_train-teacher-big",
        "teacher_prob",
        lambda: _s2s("decode_train", teacher_prob=1.5),
    ),
    ("s2s-decode_train-feed", "feed", lambda: _s2s("decode_train", feed="beam")),
    ("s2s-decode_train-needs-key", "key", lambda: _s2s("decode_train", teacher_prob=0.5)),
    ("s2s-token_losses-tgt_len-big", "tgt_len", lambda: _s2s("token_losses", tgt_len=7)),
    ("s2s-token_losses-tgt_len-neg", "tgt_len", lambda: _s2s("token_losses", tgt_len=-1)),
    ("s2s-token_losses-src_len-big", "src_len", lambda: _s2s("token_losses", src_len=9)),
    (
        "s2s-loss_batch-src_len-big",
        "src_len",
        lambda: _s2s("loss_batch", src_len=jnp.array([4, 9])),
    ),
    (
        "s2s-loss_batch-src_len-neg",
        "src_len",
        lambda: _s2s("loss_batch", src_len=jnp.array([4, -2])),
    ),
    (
        "s2s-loss_batch-tgt_len-big",
        "tgt_len",
        lambda: _s2s("loss_batch", tgt_len=jnp.array([5, 8])),
    ),
    ("s2s-loss_batch-src-big", "src", lambda: _s2s("loss_batch", src=_tok(2, 4, hi=5) + 5)),
    ("s2s-loss_batch-tgt-big", "tgt", lambda: _s2s("loss_batch", tgt=_tok(2, 5, hi=6) + 6)),
    ("s2s-loss_batch-tgt-batch", "tgt", lambda: _s2s("loss_batch", tgt=_tok(3, 5, hi=6))),
    (
        "s2s-loss_batch-src_len-float",
        "src_len",
        lambda: _s2s("loss_batch", src_len=jnp.array([4.0, 2.0])),
    ),
    (
        "s2s-decode_train_batch-src_len-big",
        "src_len",
        lambda: _s2s("decode_train_batch", src_len=jnp.array([4, 9]), tgt_len=None),
    ),
    (
        "s2s-decode_train_batch-src_len-shape",
        "src_len",
        lambda: _s2s("decode_train_batch", src_len=jnp.array([4, 2, 1]), tgt_len=None),
    ),
    (
        "s2s-decode_train_batch-tgt-big",
        "tgt",
        lambda: _s2s("decode_train_batch", tgt=_tok(2, 5, hi=6) + 6, tgt_len=None),
    ),
    (
        "s2s-decode_train_batch-tgt_len-big",
        "tgt_len",
        lambda: _s2s("decode_train_batch", tgt_len=jnp.array([5, 8])),
    ),
    (
        "s2s-decode_train_batch-src-1d",
        "src",
        lambda: _s2s("decode_train_batch", src=_tok(4, hi=5), tgt_len=None),
    ),
    # ---- decoding
    (
        "greedy-src_len-big",
        "src_len",
        lambda: _decode(decoding.greedy_decode, src_len=jnp.array([4, 9])),
    ),
    (
        "greedy-src_len-neg",
        "src_len",
        lambda: _decode(decoding.greedy_decode, src_len=jnp.array([4, -1])),
    ),
    ("greedy-src-big", "src", lambda: _decode(decoding.greedy_decode, src=_tok(2, 4, hi=5) + 5)),
    ("greedy-src-neg", "src", lambda: _decode(decoding.greedy_decode, src=_tok(2, 4, hi=5) - 1)),
    ("greedy-max_len-0", "max_len", lambda: _decode(decoding.greedy_decode, max_len=0)),
    ("greedy-model", "model", lambda: decoding.greedy_decode(object(), F("lm_p"), _tok(2, 4))),
    (
        "beam-src_len-big",
        "src_len",
        lambda: _decode(decoding.beam_search, src_len=jnp.array([4, 9])),
    ),
    ("beam-src-big", "src", lambda: _decode(decoding.beam_search, src=_tok(2, 4, hi=5) + 5)),
    ("beam-width-0", "beam_width", lambda: _decode(decoding.beam_search, beam_width=0)),
    ("beam-alpha-nan", "alpha", lambda: _decode(decoding.beam_search, alpha=NAN)),
    ("beam-alpha-inf", "alpha", lambda: _decode(decoding.beam_search, alpha=INF)),
    # ---- attention
    ("additive-query_size-0", "query_size", lambda: rj.AdditiveAttention(0, 3)),
    ("dot-sizes", "key_size", lambda: rj.DotAttention(3, 4)),
    ("source_mask-length-big", "length", lambda: rj.attention.source_mask(9, 4)),
    # ---- echo state networks
    ("esn-spectral_radius-inf", "spectral_radius", lambda: rj.EchoState(1, 8, spectral_radius=INF)),
    ("esn-spectral_radius-nan", "spectral_radius", lambda: rj.EchoState(1, 8, spectral_radius=NAN)),
    (
        "esn-spectral_radius-neg",
        "spectral_radius",
        lambda: rj.EchoState(1, 8, spectral_radius=-1.0),
    ),
    ("esn-input_scaling-inf", "input_scaling", lambda: rj.EchoState(1, 8, input_scaling=INF)),
    ("esn-bias_scaling-nan", "bias_scaling", lambda: rj.EchoState(1, 8, bias_scaling=NAN)),
    ("esn-noise-inf", "noise", lambda: rj.EchoState(1, 8, noise=INF)),
    ("esn-leak_rate-0", "leak_rate", lambda: rj.EchoState(1, 8, leak_rate=0.0)),
    ("esn-leak_rate-big", "leak_rate", lambda: rj.EchoState(1, 8, leak_rate=1.5)),
    ("esn-density-0", "density", lambda: rj.EchoState(1, 8, density=0.0)),
    ("esn-hidden_size-0", "hidden_size", lambda: rj.EchoState(1, 0)),
    ("esn-activation", "activation", lambda: rj.EchoState(1, 8, activation="relu")),
    ("esn-fit_ridge-ridge-inf", "ridge", lambda: _fit_ridge(ridge=INF)),
    ("esn-fit_ridge-ridge-nan", "ridge", lambda: _fit_ridge(ridge=NAN)),
    ("esn-fit_ridge-ridge-neg", "ridge", lambda: _fit_ridge(ridge=-1.0)),
    ("esn-fit_ridge-washout-neg", "washout", lambda: _fit_ridge(washout=-1)),
    ("esn-fit_ridge-washout-all", "washout", lambda: _fit_ridge(washout=20)),
    ("esn-fit_ridge-us-shape", "us", lambda: _fit_ridge(us=jnp.ones((20, 2)))),
    ("esn-fit_ridge-ys-length", "ys", lambda: _fit_ridge(ys=jnp.ones((19, 1)))),
    ("esn-fit_ridge-precision", "precision", lambda: _fit_ridge(precision="float16")),
    ("esn-fit_ridge-chunk", "chunk_size", lambda: _fit_ridge(chunk_size=0)),
    (
        "esn-generate-n-0",
        "n",
        lambda: reservoir.generate(
            F("esn"),
            F("esn_p"),
            {"w": jnp.zeros((8, 1)), "b": jnp.zeros(1)},
            F("esn").initial_state(),
            0,
        ),
    ),
    (
        "esn-predict-readout",
        "readout",
        lambda: reservoir.predict(F("esn"), F("esn_p"), {"w": jnp.zeros((3, 1))}, jnp.ones((5, 1))),
    ),
    (
        "esn-harvest-us-int",
        "us",
        lambda: reservoir.harvest(F("esn"), F("esn_p"), jnp.ones((5, 1), jnp.int32)),
    ),
    # ---- interop
    ("to_torch-params-missing", "params", _to_torch_bad),
    ("to_torch-cell", "cell", lambda: rj.interop.to_torch(rj.Recurrent(F("esn")), F("esn_p"))),
    (
        "to_torch_state_dict-params-shape",
        "params",
        lambda: rj.interop.to_torch_state_dict(F("rec"), {**F("gru_p"), "w_hh": jnp.ones((4, 9))}),
    ),
    # ---- the surface added with the modern cells and the reservoir topologies
    ("slstm-forget_bias-nan", "forget_bias", lambda: rj.SLSTM(4, 4, forget_bias=NAN)),
    ("mlstm-forget_bias-inf", "forget_bias", lambda: rj.MLSTM(4, 4, forget_bias=INF)),
    ("mlstm-forget_bias-pair-nan", "forget_bias", lambda: rj.MLSTM(4, 4, forget_bias=(3, NAN))),
    ("xlstm-expansion-0", "expansion", lambda: rj.xlstm_block(8, "slstm", expansion=0)),
    ("count_params-str", "params", lambda: rj.count_params("abc")),
    ("fit-log_path-int", "log_path", lambda: _fit(log_path=123)),
    (
        "effective_spectral_radius-nan",
        "w",
        lambda: reservoir.effective_spectral_radius(jnp.full((3, 3), NAN)),
    ),
    ("multiscroll-x0-nan", "x0", lambda: rj.tasks.chaos.multiscroll(10, x0=(NAN, 0.5, -0.6))),
    ("small_world-neighbours-0", "neighbours", lambda: _topology("small_world", neighbours=0)),
    ("bernoulli-density-0", "density", lambda: _topology("bernoulli", density=0.0)),
    *[
        (f"{name}-{arg}", arg, functools.partial(_topology, name, **{arg: value}))
        for name in ("small_world", "cluster", "bernoulli", "fast_spectral")
        for arg, value in (("spectral_radius", -1.0), ("dtype", jnp.int32), ("key", 0))
    ],
    # ---- diagnostics
    ("spectral_radius-nonsquare", "w", lambda: rj.diagnostics.spectral_radius(jnp.ones((2, 3)))),
    (
        "pascanu-nonlinearity",
        "nonlinearity",
        lambda: rj.pascanu_bound(jnp.eye(2), nonlinearity="relu6"),
    ),
]

# Edge cases that must be ACCEPTED (numbers as NumPy scalars, etc.).
VALID = [
    (
        "recurrent-np-float32-rate",
        lambda: rj.Recurrent(rj.GRU(2, 3), input_dropout=np.float32(0.5)),
    ),
    (
        "stacked-np-float32-dropout",
        lambda: rj.Stacked([rj.GRU(2, 3), rj.GRU(3, 3)], dropout=np.float32(0.5)),
    ),
    ("gru-np-int64-sizes", lambda: rj.GRU(np.int64(2), np.int64(3))),
    ("lstm-np-float32-forget_bias", lambda: rj.LSTM(2, 3, forget_bias=np.float32(2.0))),
    ("optimizer-np-float32-lr", lambda: train.make_optimizer("adam", np.float32(1e-3))),
    ("optimizer-np-float32-clip", lambda: train.make_optimizer("adam", clip_norm=np.float32(1.0))),
    ("trainer-np-float32-lr", lambda: train.Trainer(F("lm"), learning_rate=np.float32(1e-3))),
    (
        "esn-np-float32-spectral_radius",
        lambda: rj.EchoState(1, 8, spectral_radius=np.float32(0.9), leak_rate=np.float32(0.5)),
    ),
    ("esn-fit_ridge-np-float32-ridge", lambda: _fit_ridge(ridge=np.float32(1e-3))),
    ("model-np-int-output_size", lambda: SequenceModel(rj.GRU(2, 3), output_size=np.int64(2))),
    (
        "s2s-np-int-vocab",
        lambda: Seq2Seq.build(src_vocab=np.int64(5), tgt_vocab=6, embed_size=3, hidden_size=4),
    ),
    ("s2s-np-float32-teacher", lambda: _s2s("decode_train", teacher_prob=np.float32(1.0))),
    ("unroll-length-np-int", lambda: _unroll(length=np.int64(3))),
    ("tbptt-np-int-k", lambda: F("tr").tbptt_step(F("tr_state"), _batch(), np.int64(5))),
    (
        "checkpointer-np-int",
        lambda: rj.checkpoint.Checkpointer(
            tempfile.mkdtemp(), save_every=np.int64(2), keep_last=np.int64(1)
        ),
    ),
]


# ---- training workflow: evaluate-less early stopping, TrainState/params mix-ups,
# schedule_unit, writers, checkpoint cadence and data, vocabulary, nnx.Recurrent
def _fit(*args, **kw):
    kw.setdefault("progress", False)
    args = args or (F("tr"), F("tr_state"), lambda p: _batch(), 1)
    return train.fit(*args, **kw)


def _vocab(v):
    from rnnjax.tasks.language import Vocabulary

    return Vocabulary(v)


def _csv(path):
    from rnnjax.progress import CsvWriter

    return CsvWriter(path)


def _nnx_recurrent(cell):
    from flax import nnx

    import rnnjax.nnx as rn

    return rn.Recurrent(cell, rngs=nnx.Rngs(0))


BAD += [
    (
        "fit-early_stopping-no-evaluate",
        "early_stopping",
        lambda: _fit(early_stopping=train.EarlyStopping("valid_loss")),
    ),
    ("fit-eval_every-no-evaluate", "eval_every", lambda: _fit(eval_every=2)),
    ("fit-params-for-state", "state", lambda: _fit(F("tr"), F("lm_p"), lambda p: _batch(), 1)),
    ("fit-writers-object", "writers", lambda: _fit(writers=[object()])),
    ("fit-data-not-callable", "data", lambda: _fit(F("tr"), F("tr_state"), [_batch()], 1)),
    ("evaluate-trainstate-for-params", "params", lambda: F("tr").evaluate(F("tr_state"), _batch())),
    (
        "evaluate_batches-trainstate",
        "params",
        lambda: train.evaluate_batches(F("tr"), F("tr_state"), [_batch()]),
    ),
    ("train_step-params-for-state", "state", lambda: F("tr").train_step(F("lm_p"), _batch())),
    ("tbptt_step-params-for-state", "state", lambda: F("tr").tbptt_step(F("lm_p"), _batch(), 5)),
    ("learning_rate_at-params", "state", lambda: F("tr").learning_rate_at(F("lm_p"))),
    (
        "distributed-fit-params-for-state",
        "state",
        lambda: rj.distributed.fit(F("tr"), F("lm_p"), lambda p: _batch(), 1, progress=False),
    ),
    (
        "trainer-schedule_unit-unknown",
        "schedule_unit",
        lambda: train.Trainer(F("lm"), schedule_unit="epoch"),
    ),
    (
        "trainer-schedule_unit-batch-float-lr",
        "schedule_unit",
        lambda: train.Trainer(F("lm"), learning_rate=1e-3, schedule_unit="batch"),
    ),
    (
        "checkpointer-save_interval_s-neg",
        "save_interval_s",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), save_interval_s=-1.0),
    ),
    (
        "checkpointer-data-str",
        "data",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), data="abc"),
    ),
    ("vocabulary-duplicates", "vocab", lambda: _vocab("aab")),
    ("vocabulary-encode-bytes", "text", lambda: _vocab("ab").encode(b"ab")),
    ("vocabulary-decode-range", "ids", lambda: _vocab("ab").decode([0, 2])),
    ("csvwriter-path-int", "path", lambda: _csv(3)),
    ("nnx-recurrent-cell-class", "cell", lambda: _nnx_recurrent(rj.GRU)),
    ("nnx-recurrent-not-a-cell", "cell", lambda: _nnx_recurrent(object())),
]

VALID += [
    ("fit-early-stopping-on-train-loss", lambda: _fit(early_stopping=train.EarlyStopping("loss"))),
    (
        "checkpointer-save_interval_s-none",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), save_interval_s=None),
    ),
    (
        "trainer-schedule_unit-batch",
        lambda: train.Trainer(
            F("lm"),
            learning_rate=train.schedule("constant_schedule", value=1e-3),
            schedule_unit="batch",
        ),
    ),
]


# --------------------------------------------------------------------------- third wave
# Bad calls and user-written cells and layers: unpack bounds and types, contradictory
# ScanConfig fields, another model's params in decoding, one sequence with batch lengths
# in parallel_solve, integer keys, from_torch dtypes, a linen module fed another feature
# size after init, metrics' argument kinds; and valid calls that were refused.


def _packed():
    xs, _, _, index = rj.pack([np.ones((3, 2)), np.ones((4, 2))], 5)  # 2 rows of T = 5
    return xs, index


class _LoopLayer:
    """A user-written layer: init / apply / initial_state only (a Python loop over a cell)."""

    def __init__(self, pytree=False):
        self.cell, self.pytree = rj.GRU(2, 3), pytree

    def init(self, key):
        return self.cell.init(key)

    def initial_state(self):
        return self.cell.initial_state()

    def apply(self, params, xs, length=None, state=None, *, resets=None, key=None):
        s = self.cell.initial_state() if state is None else state
        ys = []
        for t in range(xs.shape[0]):
            s, y = self.cell.step(params, s, xs[t])
            ys.append(y)
        ys = jnp.stack(ys)
        return s, ((ys, ys * ys) if self.pytree else ys)


class _NoInitialState:
    def init(self, key):
        return {}

    def apply(self, params, xs, length=None, state=None, *, resets=None, key=None):
        return None, xs


class _PairState(NamedTuple):
    h: jax.Array


class _PairCell:
    """A user-written cell whose output is a pytree ``(h, [h, sum(h)])``."""

    input_size, hidden_size, output_size = 2, 3, 3

    def init(self, key):
        return {"w": jax.random.normal(key, (2, 3))}

    def initial_state(self, dtype=None):
        return _PairState(jnp.zeros(3, dtype or jnp.float32))

    def step(self, params, state, x):
        h = jnp.tanh(x @ params["w"] + state.h)
        return _PairState(h), (h, [h, jnp.sum(h)])


def _linen_other_feature_size():
    from rnnjax import linen

    m = linen.GRU(hidden_size=3)
    v = m.init(jax.random.key(0), jnp.ones((1, 4, 2)))
    return m.apply(v, jnp.ones((1, 4, 7)))


def _bi_pytree(merge):
    bi = rj.Bidirectional(_PairCell(), merge=merge)
    return bi.apply_batch(bi.init(jax.random.key(0)), F("xsb"), jnp.array([5, 2]))


def _stacked(layers, xs=None):
    net = rj.Stacked(layers)
    return net.apply_batch(net.init(jax.random.key(0)), F("xsb") if xs is None else xs)


_KEY = "jax.random.key"  # an integer key's error must name `key` and show jax.random.key(...)

BAD += [
    # ---- unpack: bounds (never clamped, cut short or emptied) and types
    ("unpack-index-row-out", "index", lambda: rj.unpack(_packed()[0], [(5, 0, 3)])),
    ("unpack-index-past-T", "index", lambda: rj.unpack(_packed()[0], [(0, 4, 3)])),
    ("unpack-index-negative-start", "index", lambda: rj.unpack(_packed()[0], [(0, -2, 2)])),
    ("unpack-index-zero-steps", "index", lambda: rj.unpack(_packed()[0], [(0, 0, 0)])),
    ("unpack-index-ints", "index", lambda: rj.unpack(_packed()[0], [1, 2, 3])),
    ("unpack-index-none", "index", lambda: rj.unpack(_packed()[0], None)),
    ("unpack-index-float", "index", lambda: rj.unpack(_packed()[0], [(0, 0.5, 3)])),
    ("unpack-ys-none", "ys", lambda: rj.unpack(None, _packed()[1])),
    ("unpack-ys-1d", "ys", lambda: rj.unpack(jnp.ones(5), [(0, 0, 3)])),
    # ---- ScanConfig fields that contradict each other (both named)
    ("scanconfig-parallel-remat", "remat", lambda: rj.ScanConfig(method="parallel", remat=2)),
    (
        "scanconfig-parallel-fused",
        "backward",
        lambda: rj.ScanConfig(method="parallel", backward="fused"),
    ),
    ("scanconfig-parallel-unroll", "unroll", lambda: rj.ScanConfig(method="parallel", unroll=4)),
    ("scanconfig-fused-remat", "remat", lambda: rj.ScanConfig(backward="fused", remat=True)),
    (
        "scanconfig-sequential-parallel-options",
        "parallel",
        lambda: rj.ScanConfig(parallel=rj.parallel.ParallelOptions()),
    ),
    # ---- another model's params in decoding and in the models
    ("generate-seq2seq-params", "params", lambda: rj.generate(F("lm"), F("s2s_p"), _tok(2, 3))),
    (
        "greedy-lm-params",
        "params",
        lambda: rj.greedy_decode(F("s2s"), F("lm_p"), _tok(2, 3, hi=5), max_len=2),
    ),
    (
        "beam-lm-params",
        "params",
        lambda: rj.beam_search(F("s2s"), F("lm_p"), _tok(2, 3, hi=5), max_len=2),
    ),
    (
        "s2s-decode_train-lm-params",
        "params",
        lambda: F("s2s").decode_train(F("lm_p"), _tok(4, hi=5), 4, _tok(5, hi=6)),
    ),
    ("lm-apply-s2s-params", "params", lambda: F("lm").apply(F("s2s_p"), _tok(5))),
    ("lm-apply_batch-s2s-params", "params", lambda: F("lm").apply_batch(F("s2s_p"), _tok(2, 5))),
    # ---- parallel_solve: one sequence with batch lengths
    (
        "parallel_solve-one-seq-length-vector",
        "length",
        lambda: rj.parallel_solve(F("gru"), F("gru_p"), F("xs"), length=jnp.array([2, 3])),
    ),
    (
        "parallel_solve-one-seq-length-list",
        "length",
        lambda: rj.parallel_solve(F("gru"), F("gru_p"), F("xs"), length=[2, 3]),
    ),
    # ---- integer keys
    ("gru-init-int-key", _KEY, lambda: F("gru").init(0)),
    ("lstm-init-int-key", _KEY, lambda: rj.LSTM(2, 3).init(123)),
    ("mingru-init-int-key", _KEY, lambda: rj.MinGRU(2, 3).init(0)),
    ("lru-init-int-key", _KEY, lambda: rj.LRU(2, 3).init(0)),
    ("recurrent-init-int-key", _KEY, lambda: F("rec").init(0)),
    ("bidirectional-init-int-key", _KEY, lambda: rj.Bidirectional(F("gru")).init(0)),
    ("stacked-init-int-key", _KEY, lambda: rj.Stacked([F("gru")]).init(0)),
    ("model-init-int-key", _KEY, lambda: F("lm").init(0)),
    ("s2s-init-int-key", _KEY, lambda: F("s2s").init(0)),
    ("apply-int-key", _KEY, lambda: F("rec").apply(F("gru_p"), F("xs"), key=123)),
    ("apply_batch-int-key", _KEY, lambda: F("rec").apply_batch(F("gru_p"), F("xsb"), key=123)),
    ("apply-str-key", "key", lambda: F("rec").apply(F("gru_p"), F("xs"), key="a")),
    (
        "apply_batch-key-batch",
        "key",
        lambda: F("rec").apply_batch(F("gru_p"), F("xsb"), key=jax.random.split(F("k"), 2)),
    ),
    ("model-apply-int-key", _KEY, lambda: F("lm").apply(F("lm_p"), _tok(5), key=3)),
    ("dropout-int-key", _KEY, lambda: rj.dropout(3, jnp.ones(4), 0.5)),
    ("generate-int-key", _KEY, lambda: rj.generate(F("lm"), F("lm_p"), _tok(2, 3), key=123)),
    (
        "s2s-decode_train-int-key",
        _KEY,
        lambda: F("s2s").decode_train(
            F("s2s_p"), _tok(4, hi=5), 4, _tok(5, hi=6), teacher_prob=0.5, key=3
        ),
    ),
    # ---- from_torch dtypes
    (
        "from_torch-int32",
        "dtype",
        lambda: rj.interop.from_torch(__import__("torch").nn.GRU(2, 3), dtype=jnp.int32),
    ),
    (
        "from_torch-dtype-str",
        "dtype",
        lambda: rj.interop.from_torch(__import__("torch").nn.GRU(2, 3), dtype="int8"),
    ),
    # ---- a linen module fed another feature size after init
    ("linen-other-feature-size", "xs", _linen_other_feature_size),
    # ---- user-written cells and layers: what they lack, pytrees where arrays are needed
    ("stacked-layer-no-initial_state", "initial_state", lambda: rj.Stacked([_NoInitialState()])),
    (
        "bidirectional-layer-no-initial_state",
        "initial_state",
        lambda: rj.Bidirectional(_NoInitialState()),
    ),
    ("bidirectional-pytree-concat", "merge", lambda: _bi_pytree("concat")),
    ("stacked-pytree-mid-layer", "layers[0]", lambda: _stacked([_LoopLayer(True), rj.GRU(3, 3)])),
    # ---- Seq2Seq: an empty target, batched
    (
        "s2s-decode_train_batch-empty-tgt",
        "tgt",
        lambda: F("s2s").decode_train_batch(
            F("s2s_p"), _tok(2, 4, hi=5), None, jnp.zeros((2, 0), jnp.int32)
        ),
    ),
    # ---- metrics: argument kinds
    ("accuracy-logits-0d", "logits", lambda: metrics.accuracy(jnp.array(1.0), jnp.array(1))),
    (
        "cross_entropy-logits-int",
        "logits",
        lambda: metrics.cross_entropy(jnp.ones((3, 4), jnp.int32), jnp.ones(3, jnp.int32)),
    ),
    ("accuracy-none", "logits", lambda: metrics.accuracy(None, None)),
    ("mse-none", "predictions", lambda: metrics.mse(None, jnp.ones(2))),
    (
        "masked_mean-mask-weights",
        "mask",
        lambda: metrics.masked_mean(jnp.ones(3), jnp.array([0.5, 1.0, 1.0])),
    ),
    (
        "memory_capacity-mask-weights",
        "mask",
        lambda: metrics.memory_capacity(
            jnp.ones((4, 2)), jnp.ones((4, 2)), jnp.array([0.2, 1.0, 1.0, 1.0])
        ),
    ),
]

VALID += [
    (
        "generate-list-prompt_len",
        lambda: rj.generate(F("lm"), F("lm_p"), _tok(2, 3), [1, 3], max_len=2),
    ),
    ("generate-list-prompt", lambda: rj.generate(F("lm"), F("lm_p"), [[1, 2, 3]], max_len=2)),
    (
        "greedy-list-src_len",
        lambda: rj.greedy_decode(F("s2s"), F("s2s_p"), _tok(2, 3, hi=5), [3, 1], 2),
    ),
    ("parallel_solve-list-xs", lambda: rj.parallel_solve(F("gru"), F("gru_p"), [[1.0, 2.0]] * 3)),
    ("accuracy-lists", lambda: metrics.accuracy([[0.1, 0.9]], [1])),
    ("mse-lists", lambda: metrics.mse([1.0], [2.0])),
    ("masked_mean-int-mask", lambda: metrics.masked_mean(jnp.ones(3), jnp.array([1, 0, 1]))),
    (
        "from_torch-bfloat16",
        lambda: rj.interop.from_torch(__import__("torch").nn.GRU(2, 3), dtype=jnp.bfloat16),
    ),
    (
        "apply-raw-uint32-key",
        lambda: F("rec").apply(F("gru_p"), F("xs"), key=jax.random.PRNGKey(0)),
    ),
    ("stacked-user-layer", lambda: _stacked([_LoopLayer(), rj.GRU(3, 3)])),
    ("bidirectional-user-layer", lambda: _stacked([rj.Bidirectional(_LoopLayer())])),
    (
        "unroll-pytree-output-cell",
        lambda: rj.unroll(_PairCell(), _PairCell().init(F("k")), F("xs"), 3),
    ),
    ("bidirectional-pytree-sum", lambda: _bi_pytree("sum")),
]


# --------------------------------------------------------------------------- checkpoints, processes
# Checkpointer and load_run arguments, mesh arguments of rnnjax.distributed.


def _a_file():
    path = tempfile.mkstemp()[1]
    return path


def _dist_fit(**kw):
    from rnnjax import distributed

    args = dict(trainer=F("tr"), state=F("tr_state"), data=lambda p: _batch(), num_batches=1)
    args.update(kw)
    return distributed.fit(progress=False, **args)


def _make_mesh(**kw):
    from rnnjax import distributed

    return distributed.make_mesh(**kw)


BAD += [
    ("ckpt-directory-file", "directory", lambda: rj.checkpoint.Checkpointer(_a_file())),
    ("ckpt-directory-int", "directory", lambda: rj.checkpoint.Checkpointer(3)),
    (
        "ckpt-config-list",
        "config",
        lambda: rj.checkpoint.Checkpointer(tempfile.mkdtemp(), config=[1]),
    ),
    ("ckpt-save-dict-state", "state", lambda: F("ckpt").save({"a": jnp.ones(2)})),
    (
        "ckpt-save-metrics-str",
        "metrics",
        lambda: F("ckpt").save(F("tr_state"), metrics={"loss": "low"}, force=True),
    ),
    ("ckpt-save-metrics-list", "metrics", lambda: F("ckpt").save(F("tr_state"), metrics=[0.5])),
    (
        "ckpt-save-metrics-array",
        "metrics",
        lambda: F("ckpt").save(F("tr_state"), metrics={"loss": jnp.ones(2)}),
    ),
    (
        # a healthy checkpoint and no target: the target is named, not the checkpoint
        "ckpt-restore-target-none",
        "target",
        lambda: (_save_at(2), F("ckpt").restore(None)),
    ),
    (
        "ckpt-restore-step-neg",
        "step",
        lambda: F("ckpt").restore(F("tr").abstract_state(), step=-1),
    ),
    (
        "ckpt-restore-step-str",
        "step",
        lambda: F("ckpt").restore(F("tr").abstract_state(), step="1"),
    ),
    ("load_run-step-neg", "step", lambda: rj.load_run(tempfile.mkdtemp(), step=-1)),
    ("load_run-step-str", "step", lambda: rj.load_run(tempfile.mkdtemp(), step="3")),
    ("load_run-step-bool", "step", lambda: rj.load_run(tempfile.mkdtemp(), step=True)),
    ("load_run-best-str", "best", lambda: rj.load_run(tempfile.mkdtemp(), best="yes")),
    ("load_run-step-and-best", "best", lambda: rj.load_run(tempfile.mkdtemp(), step=1, best=True)),
    ("load_run-directory-file", "directory", lambda: rj.load_run(_a_file())),
    ("mesh-axis_name-int", "axis_name", lambda: _make_mesh(axis_name=3)),
    ("mesh-axis_name-empty", "axis_name", lambda: _make_mesh(axis_name="")),
    ("mesh-devices-str", "devices", lambda: _make_mesh(devices="cpu")),
    ("mesh-devices-ints", "devices", lambda: _make_mesh(devices=[0, 1])),
    ("mesh-devices-empty", "devices", lambda: _make_mesh(devices=[])),
    ("dist-fit-mesh-str", "mesh", lambda: _dist_fit(mesh="data")),
    ("dist-fit-mesh-devices", "mesh", lambda: _dist_fit(mesh=jax.devices())),
]
VALID += [
    ("mesh-devices-list", lambda: _make_mesh(devices=list(jax.devices()), axis_name="batch")),
    ("load_run-step-np-int", lambda: _load_run_np_step()),
]


def _load_run_np_step():
    """A NumPy integer step is a step (the run directory holds checkpoint 1)."""
    d = tempfile.mkdtemp()
    st = F("tr_state")._replace(position=jnp.asarray(1, jnp.int32))
    with rj.checkpoint.Checkpointer(d, trainer=F("tr"), async_save=False) as ck:
        ck.save(st, force=True)
    assert rj.load_run(d, step=np.int64(1)).step == 1


# --------------------------------------------------------------------------- classify


def classify(name, fn):
    """``("clear"|"obscure"|"silent", message)`` for one malformed call."""
    try:
        fn()
    except (ValueError, TypeError) as e:
        return (
            "clear" if name.lower() in str(e).lower() else "obscure"
        ), f"{type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001 - classification of any failure
        return "obscure", f"{type(e).__name__}: {e}"
    return "silent", ""


@pytest.mark.parametrize("name,fn", [(c[1], c[2]) for c in BAD], ids=[c[0] for c in BAD])
def test_bad_call_raises_naming_the_argument(name, fn):
    with pytest.raises((ValueError, TypeError)) as info:
        fn()
    assert name.lower() in str(info.value).lower(), str(info.value)


@pytest.mark.parametrize("fn", [c[1] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_edge_case_is_accepted(fn):
    fn()


def test_online_readouts_refuse_to_return_a_diverged_or_nan_readout():
    """fit_lms with a NaN target, or a learning rate too large for the features, used to
    return a NaN readout (fit_ridge raised); both raise now, naming the setting."""
    cell, p = F("esn"), F("esn_p")
    u = jnp.sin(jnp.arange(120.0) / 5)[:, None]
    with pytest.raises(FloatingPointError, match="learning_rate"):
        reservoir.fit_lms(cell, p, u[:-1], u[1:].at[10, 0].set(NAN), learning_rate=0.01)
    with pytest.raises(FloatingPointError, match="learning_rate=100"):
        reservoir.fit_lms(cell, p, u[:-1], u[1:], learning_rate=100.0)
    readout, _ = reservoir.fit_lms(cell, p, u[:-1], u[1:], learning_rate=0.01)
    assert np.isfinite(readout["w_out"]).all()


def test_a_diverging_integration_names_the_step():
    with pytest.raises(FloatingPointError, match="h=10"):
        rj.tasks.chaos.rabinovich_fabrikant(50, h=10.0)
    assert np.isfinite(rj.tasks.chaos.rabinovich_fabrikant(50)).all()


def test_battery_is_large_and_ids_unique():
    ids = [c[0] for c in BAD] + [c[0] for c in VALID]
    assert len(set(ids)) == len(ids)
    assert len(BAD) >= 200


if __name__ == "__main__":
    counts = {"clear": 0, "obscure": 0, "silent": 0}
    for cid, name, fn in BAD:
        kind, msg = classify(name, fn)
        counts[kind] += 1
        if kind != "clear" or "-v" in sys.argv:
            print(f"{kind:8s} {cid:45s} {msg.splitlines()[0][:150] if msg else ''}")
    refused = 0
    for cid, fn in VALID:
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            refused += 1
            print(f"refused  {cid:45s} {type(e).__name__}: {str(e).splitlines()[0][:150]}")
    print(f"bad calls {len(BAD)}: {counts}; valid edge cases {len(VALID)}: refused {refused}")


# --------------------------------------------------------------------------- traced values


def test_traced_out_of_range_labels_are_masked_not_wrapped():
    logits = jax.random.normal(jax.random.key(0), (4, 3))
    labels = jnp.array([0, 2, 99, -1])
    got = jax.jit(metrics.cross_entropy)(logits, labels)
    want = metrics.cross_entropy(logits[:2], labels[:2])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert int(jnp.sum(~rj.checks.valid_tokens(labels, 3))) == 2
    acc = jax.jit(metrics.accuracy)(logits, labels)
    np.testing.assert_allclose(acc, metrics.accuracy(logits[:2], labels[:2]))


def test_traced_out_of_range_tokens_get_a_zero_embedding():
    m, p = F("lm"), F("lm_p")
    f = jax.jit(lambda x: m.apply(p, x)[1])
    bad = f(jnp.array([1, 99, 2]))
    zero = m.apply({**p, "embed": p["embed"].at[0].set(0.0)}, jnp.array([1, 0, 2]))[1]
    np.testing.assert_allclose(bad, zero, rtol=1e-6, atol=1e-7)
    assert not np.allclose(bad, f(jnp.array([1, 3, 2])))  # not clamped to the last row


def test_traced_out_of_range_targets_leave_the_seq2seq_loss():
    m, p = F("s2s"), F("s2s_p")
    src, tgt = _tok(4, hi=5), jnp.array([1, 2, 3, 9, 4])
    ce, mask = jax.jit(lambda t: m.token_losses(p, src, 4, t, 5))(tgt)
    assert mask.tolist() == [True, True, True, False, True]
    assert float(ce[3]) == 0.0 and bool(jnp.all(jnp.isfinite(ce)))


def test_train_step_refuses_out_of_range_targets_before_updating():
    tr, st = F("tr"), F("tr_state")
    with pytest.raises(ValueError, match="targets"):
        tr.train_step(st, _batch(targets=jnp.full((2, 5), 99, jnp.int32)))


# --------------------------------------------------------------------------- third wave: messages


def test_wrong_model_params_name_the_model_and_the_missing_keys():
    with pytest.raises(ValueError) as info:
        rj.generate(F("lm"), F("s2s_p"), _tok(2, 3))
    msg = str(info.value)
    assert "SequenceModel" in msg and "missing keys ['embed', 'head', 'layer']" in msg
    with pytest.raises(ValueError, match="params of Seq2Seq.*missing keys"):
        rj.greedy_decode(F("s2s"), F("lm_p"), _tok(2, 3, hi=5), max_len=2)


def test_integer_key_names_key_and_shows_jax_random_key():
    for call in (lambda: F("rec").init(0), lambda: F("rec").apply(F("gru_p"), F("xs"), key=123)):
        with pytest.raises(TypeError) as info:
            call()
        assert str(info.value).startswith("key must be a PRNG key such as jax.random.key(")


def test_contradictory_scan_config_names_both_fields():
    with pytest.raises(ValueError) as info:
        rj.ScanConfig(method="parallel", remat=2)
    assert "remat" in str(info.value) and "method='parallel'" in str(info.value)
    with pytest.raises(ValueError) as info:
        rj.ScanConfig(method="parallel", backward="fused")
    assert "backward='fused'" in str(info.value) and "method='parallel'" in str(info.value)


def test_unpack_valid_index_and_list_prompt_lengths_match_arrays():
    seqs = [np.arange(6.0).reshape(3, 2), np.ones((4, 2)), np.full((2, 2), 7.0)]
    xs, _, _, index = rj.pack(seqs, 5)
    for got, want in zip(rj.unpack(xs, index), seqs):
        np.testing.assert_array_equal(got, want)
    a = rj.generate(F("lm"), F("lm_p"), _tok(2, 3), [1, 3], max_len=3)
    b = rj.generate(F("lm"), F("lm_p"), _tok(2, 3), jnp.array([1, 3]), max_len=3)
    np.testing.assert_array_equal(a.tokens, b.tokens)
