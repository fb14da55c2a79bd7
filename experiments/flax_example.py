"""rnnjax in Flax: a linen and an NNX text classifier (the README example).

Each model embeds tokens, runs a 2-layer bidirectional rnnjax LSTM over padded
sequences with their lengths, and classifies from the top layer's final states (taken
at each sequence's true length); each is trained a few steps with optax and saved and
restored with orbax. Run: python experiments/flax_example.py
"""

import shutil
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax import nnx

import rnnjax.linen
import rnnjax.nnx

# a toy task: the class of a padded token sequence is its first token mod 2
VOCAB, CLASSES, B, T = 20, 2, 16, 12
k_tok, k_len = jax.random.split(jax.random.key(0))
length = jax.random.randint(k_len, (B,), 3, T + 1)
tokens = jax.random.randint(k_tok, (B, T), 1, VOCAB)
tokens = jnp.where(jnp.arange(T)[None, :] < length[:, None], tokens, 0)  # 0 pads
labels = tokens[:, 0] % CLASSES
tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
ckpt_dir = tempfile.mkdtemp()


# ----------------------------------------------------------------------------- linen
class LinenClassifier(nn.Module):
    @nn.compact
    def __call__(self, tokens, length, deterministic=True):
        x = nn.Embed(VOCAB, 16)(tokens)
        lstm = rnnjax.linen.LSTM(32, num_layers=2, bidirectional=True, dropout=0.1)
        states, ys = lstm(x, length, deterministic=deterministic)  # ys: (B, T, 64)
        top = states[-1]  # BidirectionalState of the top layer, at the true lengths
        return nn.Dense(CLASSES)(jnp.concatenate([top.forward.h, top.backward.h], -1))


model = LinenClassifier()
params = jax.jit(model.init)(jax.random.key(1), tokens, length)["params"]
opt_state = tx.init(params)


@jax.jit
def linen_step(params, opt_state, key):
    def loss_fn(p):
        logits = model.apply({"params": p}, tokens, length, False, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


linen_losses = []
for step in range(20):
    params, opt_state, loss = linen_step(params, opt_state, jax.random.key(100 + step))
    linen_losses.append(float(loss))
print(f"linen loss {linen_losses[0]:.3f} -> {linen_losses[-1]:.3f}")

ckpt = ocp.StandardCheckpointer()
ckpt.save(f"{ckpt_dir}/linen", {"params": params, "opt_state": opt_state})
ckpt.wait_until_finished()
target = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state})
restored = ckpt.restore(f"{ckpt_dir}/linen", target)
predict = jax.jit(lambda p: model.apply({"params": p}, tokens, length))
assert jnp.array_equal(predict(restored["params"]), predict(params))


# ------------------------------------------------------------------------------- NNX
class NNXClassifier(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, 16, rngs=rngs)
        self.lstm = rnnjax.nnx.LSTM(
            16, 32, num_layers=2, bidirectional=True, dropout=0.1, rngs=rngs
        )
        self.head = nnx.Linear(64, CLASSES, rngs=rngs)

    def __call__(self, tokens, length):
        states, ys = self.lstm(self.embed(tokens), length)
        top = states[-1]
        return self.head(jnp.concatenate([top.forward.h, top.backward.h], -1))


model = NNXClassifier(nnx.Rngs(params=1, dropout=2))  # dropout on until model.eval()
optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)


@nnx.jit
def nnx_step(model, optimizer):
    def loss_fn(model):
        logits = model(tokens, length)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


nnx_losses = [float(nnx_step(model, optimizer)) for step in range(20)]
print(f"nnx loss {nnx_losses[0]:.3f} -> {nnx_losses[-1]:.3f}")

model.eval()  # dropout off
ckpt.save(f"{ckpt_dir}/nnx", nnx.state(model))
ckpt.wait_until_finished()
abstract = nnx.eval_shape(lambda: NNXClassifier(nnx.Rngs(params=1, dropout=2)))
abstract.eval()
graphdef, abstract_state = nnx.split(abstract)
restored = nnx.merge(graphdef, ckpt.restore(f"{ckpt_dir}/nnx", abstract_state))
predict = nnx.jit(lambda m: m(tokens, length))
assert jnp.array_equal(predict(restored), predict(model))
ckpt.close()
shutil.rmtree(ckpt_dir)
