"""The real-vs-fake classifier: learns an obvious difference, stays at chance on one set split in two,
is deterministic, and its report arithmetic matches a hand example."""
import json

import numpy as np
import pytest

from vqgan_jax.eval import classifier
from vqgan_jax.errors import UserError


def _noise(n, seed, size=32):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _flat_colours(n, seed, size=32):
    colours = np.random.default_rng(seed).uniform(-1, 1, (n, 1, 1, 3)).astype(np.float32)
    return np.broadcast_to(colours, (n, size, size, 3)).copy()


def test_separates_noise_from_flat_colours():
    r = classifier.real_vs_fake(_noise(200, 0), _flat_colours(200, 1), epochs=5, seed=0)
    assert r["accuracy"] >= 0.9, classifier.format_report(r)
    assert (r["num_per_class"], r["num_train"], r["num_test"], r["epochs"]) == (200, 320, 80, 5)
    assert r["image_size"] == [32, 32] and np.isfinite(r["final_train_loss"])
    assert sum(map(sum, r["confusion"])) == r["num_test"]
    json.dumps(r)  # JSON-ready


def test_balances_and_resizes_to_a_common_size():
    # 120 real at 32x32 and 80 fake at 48x48: 80 of each, the fakes resized to the real images' size.
    r = classifier.real_vs_fake(_noise(120, 2), _flat_colours(80, 3, size=48), epochs=1, seed=0)
    assert r["num_per_class"] == 80 and r["image_size"] == [32, 32]
    assert r["num_test"] == 32 and r["classes"]["real"]["support"] == r["classes"]["fake"]["support"] == 16


def test_chance_on_two_halves_of_one_set_and_deterministic():
    # Both classes come from one distribution, so nothing separates them; a 200-image balanced test set
    # keeps chance accuracy within +-0.15 (4 standard deviations of a fair coin over 200 images).
    one = _noise(400, 4)
    kwargs = dict(test_fraction=0.5, epochs=3, seed=0)
    r = classifier.real_vs_fake(one[:200], one[200:], **kwargs)
    assert r["num_test"] == 200
    assert 0.35 <= r["accuracy"] <= 0.65, classifier.format_report(r)
    again = classifier.real_vs_fake(one[:200], one[200:], **kwargs)
    assert again == r  # same seed, same split, same weights, same predictions and loss


def test_binary_report_hand_example():
    y_true = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    y_pred = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]
    r = classifier.binary_report(y_true, y_pred)
    # rows true real / fake, columns predicted real / fake
    assert r["confusion"] == [[3, 1], [2, 4]]
    assert r["accuracy"] == pytest.approx(0.7)
    real, fake = r["classes"]["real"], r["classes"]["fake"]
    assert (real["precision"], real["recall"], real["support"]) == (pytest.approx(3 / 5), pytest.approx(3 / 4), 4)
    assert real["f1"] == pytest.approx(2 * 0.6 * 0.75 / 1.35)  # 2/3
    assert (fake["precision"], fake["recall"], fake["support"]) == (pytest.approx(4 / 5), pytest.approx(4 / 6), 6)
    assert fake["f1"] == pytest.approx(2 * 0.8 * (4 / 6) / (0.8 + 4 / 6))  # 8/11
    text = classifier.format_report(r)
    assert "0.60      0.75      0.67         4" in text
    assert "macro avg" in text and "true real" in text


def test_binary_report_zero_division_gives_zero():
    r = classifier.binary_report([1, 0], [0, 0])  # nothing predicted real
    assert r["classes"]["real"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["classes"]["fake"]["precision"] == 0.5 and r["classes"]["fake"]["recall"] == 1.0
    with pytest.raises(UserError):
        classifier.binary_report([1, 0], [1])


def test_input_errors():
    with pytest.raises(UserError, match="too small"):
        classifier.real_vs_fake(_noise(4, 0, size=16), _noise(4, 1, size=16))
    with pytest.raises(UserError, match="test_fraction"):
        classifier.real_vs_fake(_noise(4, 0), _noise(4, 1), test_fraction=1.0)
    with pytest.raises(UserError, match=r"\(N, H, W, 1 or 3\)"):
        classifier.real_vs_fake(_noise(4, 0)[..., 0], _noise(4, 1))
    with pytest.raises(UserError, match="same channels"):
        classifier.real_vs_fake(_noise(4, 0)[..., :1], _noise(4, 1))


def test_save_confusion_png(tmp_path):
    r = classifier.binary_report([1, 1, 0, 0], [1, 0, 0, 0])
    path = classifier.save_confusion_png(r, str(tmp_path / "sub" / "confusion.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_init_is_bit_identical_to_an_eager_init():
    """The compiled initialiser must not move a weight by an ulp: the accuracies reported (README, evaluate)
    were measured with the eager init's weights."""
    import jax
    model = classifier.RealFakeCNN()
    key = jax.random.PRNGKey(3)
    eager = model.init(key, np.zeros((1, 32, 32, 3), np.float32), train=False)["params"]
    compiled = classifier.init_params(model, key, (1, 32, 32, 3))
    jax.tree.map(np.testing.assert_array_equal, compiled, eager)
    assert float(np.std(jax.tree.leaves(compiled)[-1])) > 0
