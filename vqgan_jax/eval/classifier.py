"""The real-vs-fake test of the Keras CNN study: can a small CNN tell generated images from real ones?

A classifier is trained on a balanced set of real (label 1) and generated (label 0) images and scored
on held-out images of both. Test accuracy near 50% means it cannot tell them apart (the generator is
good); that study's VQ-VAE fakes were caught 97% of the time. The network is that study's Keras model in
Flax: three 3x3 'valid' convolutions with ReLU, each followed by 2x2 max-pooling, a ReLU dense layer,
dropout 0.3, one logit; binary cross-entropy, Adam lr 1e-4.

`real_vs_fake` returns a JSON-ready dict; `format_report` and `save_confusion_png` present it.
"""
from __future__ import annotations

import functools
import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

from vqgan_jax.errors import UserError
from vqgan_jax.train import parallel

CLASS_NAMES = ("real", "fake")  # row / column order of the confusion matrix; labels 1 and 0


class RealFakeCNN(nn.Module):
    """Images float (B, H, W, C) in [-1, 1], any C (1 or 3) -> float32 logits (B,); sigmoid(logit) = P(real)."""
    widths: Sequence[int] = (32, 64, 128)
    hidden: int = 128
    dropout: float = 0.3

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        for width in self.widths:
            # 'VALID' like Keras' Conv2D default, which the study used: (H, W) -> (H - 2, W - 2) -> halved.
            x = nn.relu(nn.Conv(width, (3, 3), padding="VALID")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)  # (B, h * w * widths[-1])
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return nn.Dense(1)(x)[:, 0]


def _feature_side(side: int, layers: int) -> int:
    """Spatial size left after `layers` valid 3x3 convolutions each followed by 2x2 pooling."""
    for _ in range(layers):
        side = (side - 2) // 2
    return side


@functools.lru_cache(maxsize=None)
def _steps(learning_rate: float):
    """(model, tx, train_step, predict), built once per learning rate so that repeated calls with the same
    shapes reuse the compiled steps (jit caches per function object)."""
    model = RealFakeCNN()
    tx = optax.adam(learning_rate)

    @jax.jit
    def train_step(state, x, y, mask, rng):
        """x float32 (B, H, W, 3), y float32 (B,) labels, mask float32 (B,): 0 marks padding rows, which
        fill the last batch of an epoch so every batch has one shape and the step compiles once."""
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, x, train=True, rngs={"dropout": rng})
            per_image = optax.sigmoid_binary_cross_entropy(logits, y)  # (B,)
            return jnp.sum(per_image * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    @jax.jit
    def predict(params, x):
        """x float32 (B, H, W, 3) -> int32 (B,) predicted labels (1 = real): sigmoid(logit) > 0.5."""
        return (model.apply({"params": params}, x, train=False) > 0).astype(jnp.int32)

    return model, tx, train_step, predict


def _padded_batches(n: int, batch_size: int, order: np.ndarray):
    """Yields (indices int (batch_size,), mask float32 (batch_size,)) covering order[:n] once."""
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        mask = np.zeros(batch_size, np.float32)
        mask[: len(idx)] = 1.0
        yield np.pad(idx, (0, batch_size - len(idx))), mask  # padding repeats image order[0]; masked out


def _common_size(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float (N, H, W, 3) -> float32 (N, size[0], size[1], 3); antialiased bilinear when shrinking."""
    images = np.asarray(images, np.float32)
    if images.shape[1:3] == tuple(size):
        return images
    return np.asarray(jax.image.resize(images, (images.shape[0], *size, images.shape[3]), method="linear"))


def binary_report(y_true, y_pred) -> dict:
    """Accuracy, per-class precision / recall / F1 / support and the confusion matrix of a binary task.

    Args:
      y_true, y_pred: int (N,) labels, 1 = real, 0 = fake.
    Returns:
      JSON-ready dict: 'accuracy' float; 'classes' {'real': {...}, 'fake': {...}}, each with 'precision',
      'recall', 'f1' (floats, 0.0 where the denominator is 0, as sklearn's zero_division=0) and 'support'
      (int, true images of that class); 'confusion' [[real->real, real->fake], [fake->real, fake->fake]]
      (rows = true class, columns = predicted, in CLASS_NAMES order); 'labels' CLASS_NAMES.
    """
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise UserError(f"binary_report needs two label arrays of one non-zero length; got {y_true.size} and "
                        f"{y_pred.size}")
    labels = (1, 0)  # CLASS_NAMES order
    confusion = [[int(np.sum((y_true == t) & (y_pred == p))) for p in labels] for t in labels]

    def ratio(a, b):
        return float(a / b) if b else 0.0

    classes = {}
    for i, name in enumerate(CLASS_NAMES):
        tp = confusion[i][i]
        predicted = confusion[0][i] + confusion[1][i]  # column sum
        support = confusion[i][0] + confusion[i][1]  # row sum
        precision, recall = ratio(tp, predicted), ratio(tp, support)
        classes[name] = {"precision": precision, "recall": recall,
                         "f1": ratio(2 * precision * recall, precision + recall), "support": support}
    return {"accuracy": ratio(confusion[0][0] + confusion[1][1], y_true.size), "classes": classes,
            "confusion": confusion, "labels": list(CLASS_NAMES)}


def init_params(model: nn.Module, key: jax.Array, input_shape: tuple) -> dict:
    """The classifier's params for float32 inputs of input_shape (B, H, W, C), in one compiled program:
    eagerly, every random draw compiles on its own (most of the classifier's start on a CPU). Default
    compiler options keep the weights bit-identical to an eager `model.init` (XLA:CPU's one-off init options
    change some by an ulp, and so the accuracies reported)."""
    return parallel.run_once_jitted(functools.partial(model.init, train=False), key,
                                    jnp.zeros(input_shape, jnp.float32))["params"]


def real_vs_fake(real, fake, *, image_size: int | None = None, test_fraction: float = 0.2, epochs: int = 10,
                 batch_size: int = 32, learning_rate: float = 1e-4, seed: int = 0) -> dict:
    """Trains the real-vs-fake CNN on a balanced, seeded split and scores it on the held-out part.

    Args:
      real: float (N_r, H, W, C) real images in [-1, 1], C = 1 (grayscale) or 3.
      fake: float (N_f, H', W', C) generated images in [-1, 1], the same C.
      image_size: side both sets are resized to; None keeps the real images' (H, W) and resizes the fakes
        to it only if they differ (a real-vs-fake test must not see a size difference).
      test_fraction: share of each class held out for testing (stratified, so the test set is balanced and
        50% accuracy is chance).
      epochs, batch_size, learning_rate: training settings (the study's: Adam lr 1e-4, batch 32).
      seed: fixes the class balancing, the split, the shuffling, the initial weights and dropout.
    Returns:
      JSON-ready dict: everything of `binary_report` on the test set, plus 'num_train', 'num_test',
      'num_per_class' (images of each class used, min(N_r, N_f)), 'epochs', 'final_train_loss' (mean
      loss over the last epoch), 'image_size' [H, W], 'seed'.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    for name, a in (("real", real), ("fake", fake)):
        if a.ndim != 4 or a.shape[-1] not in (1, 3):
            raise UserError(f"{name} images must be an array (N, H, W, 1 or 3); got shape {a.shape}")
    if real.shape[-1] != fake.shape[-1]:
        raise UserError(f"real and fake images must have the same channels; got {real.shape[-1]} and {fake.shape[-1]}")
    if not 0.0 < test_fraction < 1.0:
        raise UserError(f"test_fraction must lie strictly between 0 and 1; got {test_fraction}")
    size = (image_size, image_size) if image_size else tuple(real.shape[1:3])
    if _feature_side(min(size), len(RealFakeCNN.widths)) < 1:
        raise UserError(f"images of {size[0]}x{size[1]} are too small for the classifier; use at least 22x22")

    rng = np.random.default_rng(seed)
    # Balance the classes with a random subset of the larger one, so accuracy is not skewed by base rates.
    n = min(len(real), len(fake))
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise UserError(f"{n} images per class are too few to hold out a test set and still train; need >= 2")
    real = _common_size(real[np.sort(rng.permutation(len(real))[:n])], size)
    fake = _common_size(fake[np.sort(rng.permutation(len(fake))[:n])], size)
    # Stratified split: each class gives the same number of test images.
    perm_r, perm_f = rng.permutation(n), rng.permutation(n)
    x_train = np.concatenate([real[perm_r[n_test:]], fake[perm_f[n_test:]]])  # (2 (n - n_test), H, W, 3)
    y_train = np.concatenate([np.ones(n - n_test), np.zeros(n - n_test)]).astype(np.float32)
    x_test = np.concatenate([real[perm_r[:n_test]], fake[perm_f[:n_test]]])  # (2 n_test, H, W, 3)
    y_test = np.concatenate([np.ones(n_test), np.zeros(n_test)]).astype(np.int32)

    model, tx, train_step, predict = _steps(float(learning_rate))
    key = jax.random.PRNGKey(seed)
    init_key, dropout_key = jax.random.split(key)
    params = init_params(model, init_key, (1, *size, real.shape[-1]))
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    step, final_loss = 0, float("nan")
    for _ in range(epochs):
        losses, weights = [], []
        for idx, mask in _padded_batches(len(x_train), batch_size, rng.permutation(len(x_train))):
            # fold_in(step): a fresh dropout mask every step, reproducible from the seed alone.
            state, loss = train_step(state, x_train[idx], y_train[idx], mask, jax.random.fold_in(dropout_key, step))
            losses.append(loss)
            weights.append(mask.sum())
            step += 1
        # Pulled to the host once per epoch, so the device never waits on the host between steps.
        final_loss = float(np.average(np.asarray(jax.device_get(losses)), weights=weights))

    y_pred = np.zeros(len(x_test), np.int32)
    for idx, mask in _padded_batches(len(x_test), batch_size, np.arange(len(x_test))):
        keep = mask > 0
        y_pred[idx[keep]] = np.asarray(predict(state.params, x_test[idx]))[keep]

    result = binary_report(y_test, y_pred)
    result.update({"num_train": int(len(x_train)), "num_test": int(len(x_test)), "num_per_class": int(n),
                   "epochs": int(epochs), "final_train_loss": final_loss, "image_size": list(size),
                   "seed": int(seed)})
    return result


def format_report(result: dict) -> str:
    """Text table like sklearn's classification_report, then the confusion matrix, from `binary_report`
    or `real_vs_fake` output."""
    classes, conf = result["classes"], result["confusion"]
    total = sum(c["support"] for c in classes.values())
    lines = [f"{'':>12} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}", ""]
    for name in CLASS_NAMES:
        c = classes[name]
        lines.append(f"{name:>12} {c['precision']:9.2f} {c['recall']:9.2f} {c['f1']:9.2f} {c['support']:9d}")
    lines += ["", f"{'accuracy':>12} {'':9} {'':9} {result['accuracy']:9.2f} {total:9d}"]
    for label, weight in (("macro avg", lambda c: 1.0 / len(classes)),
                          ("weighted avg", lambda c: c["support"] / total if total else 0.0)):
        avg = [sum(weight(c) * c[k] for c in classes.values()) for k in ("precision", "recall", "f1")]
        lines.append(f"{label:>12} {avg[0]:9.2f} {avg[1]:9.2f} {avg[2]:9.2f} {total:9d}")
    lines += ["", "confusion matrix (rows: true class, columns: predicted)",
              f"{'':>12} {'pred real':>10} {'pred fake':>10}"]
    for name, row in zip(CLASS_NAMES, conf):
        lines.append(f"{'true ' + name:>12} {row[0]:10d} {row[1]:10d}")
    return "\n".join(lines)


def save_confusion_png(result: dict, path: str) -> str:
    """Writes the 2x2 confusion matrix of `result` as a PNG picture at `path` (parents created). Returns path."""
    import matplotlib  # lazily: only this picture needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conf = np.asarray(result["confusion"])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(conf, cmap="Blues", vmin=0, vmax=max(int(conf.max()), 1))
    for (i, j), v in np.ndenumerate(conf):
        # Dark text on light cells, white on dark ones, so every count stays readable.
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > conf.max() / 2 else "black")
    ax.set_xticks([0, 1], [f"pred {c}" for c in CLASS_NAMES])
    ax.set_yticks([0, 1], [f"true {c}" for c in CLASS_NAMES])
    ax.set_title(f"real vs fake: accuracy {result['accuracy']:.1%}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
