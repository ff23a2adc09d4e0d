"""FID / KID / IS: statistics against scipy and hand values, pytorch-fid's Inception on random weights,
the npz loader's errors, the state-dict converter (without torch), clean-fid's resize, and parity with
pytorch-fid's network on a committed fixture (tests/fixtures/make_inception_fixture.py)."""
import importlib.util
import os

import numpy as np
import pytest
import scipy.linalg
from flax import traverse_util

from vqgan_jax.eval import fid
from vqgan_jax.interop import inception_weights as inception
from vqgan_jax.cli import run_cli
from vqgan_jax.errors import UserError


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    """An npz of random Inception weights (about 95 MB), written once for the module."""
    return inception.make_random_weights(tmp_path_factory.mktemp("inception") / "random.npz", seed=0)


@pytest.fixture(scope="module")
def features(weights_file):
    """InceptionFeatures with batch 2: every forward below reuses its one compiled (2, 299, 299, 3) apply."""
    return fid.InceptionFeatures(inception.load_inception_params(weights_file), batch_size=2)


# ---------------------------------------------------------------- statistics


def _random_gaussian(rng, d):
    a = rng.standard_normal((d, d))
    return rng.standard_normal(d), a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    (mu1, s1), (mu2, s2) = _random_gaussian(rng, 32), _random_gaussian(rng, 32)
    want = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(scipy.linalg.sqrtm(s1 @ s2).real)
    assert fid.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(want, rel=1e-9)


def test_frechet_distance_diagonal_closed_form():
    # For diagonal covariances tr((S1 S2)^(1/2)) = sum sqrt(a_i b_i), so FID = |dmu|^2 + sum (sqrt a - sqrt b)^2.
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 50), rng.uniform(0.1, 3.0, 50)
    mu1, mu2 = rng.standard_normal(50), rng.standard_normal(50)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)
    # 1-d hand value: N(0, 4) vs N(1, 1) -> 1 + (2 - 1)^2 = 2.
    assert fid.frechet_distance([0.0], [[4.0]], [1.0], [[1.0]]) == pytest.approx(2.0, abs=1e-12)


def test_frechet_distance_of_identical_stats_is_zero():
    # Fewer samples than dimensions: a singular covariance, as with small FID sets.
    feats = np.random.default_rng(2).standard_normal((100, 256)) ** 2
    mu, sigma = fid.feature_stats(feats)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert mu.dtype == sigma.dtype == np.float64 and sigma.shape == (256, 256)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False))
    np.testing.assert_allclose(mu, feats.mean(axis=0))


def _unbiased_mmd_double_loop(x, y):
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written as the textbook sums."""
    m, d = len(x), x.shape[1]
    k = lambda a, b: (np.dot(a, b) / d + 1.0) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_double_loop():
    # With as many rows as the (clipped) subset size, every subset is a permutation of the whole set, and
    # MMD^2 does not depend on the order: every subset gives the double loop's value.
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((10, 6)), rng.standard_normal((10, 6)) + 0.5
    mean, std = fid.kernel_inception_distance(x, y, num_subsets=5, subset_size=1000)
    assert mean == pytest.approx(_unbiased_mmd_double_loop(x, y), rel=1e-10)
    assert std < 1e-10
    # Unequal sizes clip the subset to the smaller set; the estimate stays finite.
    mean, _ = fid.kernel_inception_distance(rng.standard_normal((30, 6)), y, num_subsets=4)
    assert np.isfinite(mean)


def test_kid_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((400, 32)), rng.standard_normal((400, 32))
    shifted = rng.standard_normal((400, 32)) + 0.3
    same, same_std = fid.kernel_inception_distance(a, b, num_subsets=10, subset_size=200)
    diff, _ = fid.kernel_inception_distance(a, shifted, num_subsets=10, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert diff > 0.1 and diff > 20 * abs(same)


def test_inception_score_hand_values():
    assert fid.inception_score(np.zeros((20, 1008)), splits=2) == pytest.approx((1.0, 0.0))
    # Confident predictions spread evenly over C classes in each split: IS = C.
    onehot = 1e4 * np.eye(1008)[np.arange(2016) % 1008]
    mean, std = fid.inception_score(onehot, splits=2)
    assert mean == pytest.approx(1008.0, rel=1e-9) and std < 1e-6
    ten = 1e4 * np.eye(1008)[np.arange(100) % 10]
    assert fid.inception_score(ten, splits=10)[0] == pytest.approx(10.0, rel=1e-9)
    # p(y|x) = (3/4, 1/4) and (1/4, 3/4): p(y) = (1/2, 1/2), KL = 3/4 ln 3/2 + 1/4 ln 1/2.
    logits = np.log([[0.75, 0.25], [0.25, 0.75]])
    assert fid.inception_score(logits, splits=1)[0] == pytest.approx(np.exp(0.75 * np.log(1.5) + 0.25 * np.log(0.5)))


def test_cached_real_stats(tmp_path):
    calls = []
    feats = np.random.default_rng(5).standard_normal((8, 4))

    def compute():
        calls.append(1)
        return feats

    path = tmp_path / "cache" / "real.npz"
    first = fid.cached_real_stats(path, "key-a", compute)
    again = fid.cached_real_stats(path, "key-a", compute)
    assert len(calls) == 1
    for name in ("mu", "sigma", "features"):
        np.testing.assert_array_equal(first[name], again[name])
    np.testing.assert_allclose(first["sigma"], np.cov(feats, rowvar=False))
    fid.cached_real_stats(path, "key-b", compute)  # another key: recomputed
    assert len(calls) == 2
    path.write_bytes(b"not a zip")  # an unreadable cache is recomputed too
    fid.cached_real_stats(path, "key-b", compute)
    assert len(calls) == 3
    assert fid.cache_key("a", "b") != fid.cache_key("ab")


# ---------------------------------------------------------------- clean-fid resize


def test_clean_resize_same_size_is_identity_and_upscale_range():
    rng = np.random.default_rng(6)
    images = rng.integers(0, 256, (2, 299, 299, 3), dtype=np.uint8)
    out = fid.clean_resize(images)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, images.astype(np.float32))
    small = rng.integers(0, 256, (3, 32, 24, 3), dtype=np.uint8)
    up = fid.clean_resize(small)
    assert up.shape == (3, 299, 299, 3) and up.min() >= 0 and up.max() <= 255
    assert up.max() > 250 and up.min() < 5  # bicubic overshoot is clipped, not squashed
    flat = fid.clean_resize(np.full((1, 16, 16, 3), 77, np.uint8))
    np.testing.assert_allclose(flat, 77.0, atol=1e-3)


def test_float_images_are_quantised_like_uint8():
    np.testing.assert_array_equal(fid.quantize_to_uint8(np.array([-1.0, 0.0, 1.0, 2.0, -0.999])), [0, 128, 255, 255, 0])
    x = np.random.default_rng(7).uniform(-1, 1, (2, 20, 20, 3)).astype(np.float32)
    np.testing.assert_array_equal(fid.clean_resize(x), fid.clean_resize(fid.quantize_to_uint8(x)))
    with pytest.raises(UserError, match="uint8"):
        fid.clean_resize(np.zeros((1, 8, 8, 3), np.int32))
    with pytest.raises(UserError, match="RGB"):
        fid.clean_resize(np.zeros((1, 8, 8), np.uint8))


# ---------------------------------------------------------------- the network


def test_inception_param_count():
    # torchvision's inception_v3 has 27,161,264 parameters; without AuxLogits (3,326,696) and with a
    # 1008-way fc (+8 x 2049) that is 23,850,960. 94 convs, each with its BatchNorm.
    shapes = inception.expected_shapes()
    assert sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith("params/")) == 23_850_960
    assert sum(k.endswith("conv/kernel") for k in shapes) == 94
    assert shapes["params/Conv2d_1a_3x3/conv/kernel"] == (3, 3, 3, 32)
    assert shapes["params/Mixed_7c/branch_pool/conv/kernel"] == (1, 1, 2048, 192)
    assert shapes["params/fc/kernel"] == (2048, 1008)


def test_inception_shapes_and_padding(features):
    rng = np.random.default_rng(8)
    images = rng.uniform(0, 255, (2, 299, 299, 3)).astype(np.float32)
    pool3, logits = features(images)
    assert pool3.shape == (2, 2048) and pool3.dtype == np.float64
    assert logits.shape == (2, 1008) and logits.dtype == np.float32
    assert np.all(np.isfinite(pool3)) and np.all(np.isfinite(logits)) and pool3.min() >= 0  # mean of ReLUs
    assert not np.allclose(pool3[0], pool3[1])
    # Default logits are pool3 @ fc.kernel (no bias), the original Inception Score's logits.
    kernel = np.asarray(features.variables["params"]["fc"]["kernel"], np.float64)
    np.testing.assert_allclose(logits, pool3 @ kernel, rtol=1e-4, atol=1e-4)
    # One image alone is zero-padded to the compiled batch and gives the same features.
    alone, _ = features(images[1:])
    np.testing.assert_allclose(alone[0], pool3[1], rtol=1e-5, atol=1e-5)
    # from_images resizes small uint8 images; 3 images -> one full batch and one padded batch.
    small = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    p3, lg3 = features.from_images(small)
    assert p3.shape == (3, 2048) and lg3.shape == (3, 1008)
    with pytest.raises(UserError, match="299"):
        features(np.zeros((1, 64, 64, 3), np.float32))


# ---------------------------------------------------------------- weights files


def test_load_round_trip(weights_file, features):
    with np.load(weights_file) as z:
        written = {k: z[k] for k in z.files}
    loaded = traverse_util.flatten_dict(features.variables, sep="/")
    assert set(loaded) == set(written) == set(inception.expected_shapes())
    for key in ("params/Mixed_6b/branch7x7_2/conv/kernel", "batch_stats/Mixed_5b/branch_pool/bn/var"):
        np.testing.assert_array_equal(np.asarray(loaded[key]), written[key])
    assert np.all(written["batch_stats/Mixed_5b/branch_pool/bn/var"] == 1.0)


@pytest.mark.parametrize("damage, message", [
    ("shape", "has shape .* expected"),
    ("missing", "lacks Inception weight"),
    ("extra", "unexpected key"),
])
def test_load_errors(weights_file, tmp_path, damage, message):
    with np.load(weights_file) as z:
        flat = {k: z[k] for k in z.files}
    if damage == "shape":
        flat["params/Mixed_6a/branch3x3/conv/kernel"] = np.zeros((3, 3, 288, 383), np.float32)
    elif damage == "missing":
        del flat["batch_stats/Mixed_7b/branch1x1/bn/mean"]
    else:
        flat["params/AuxLogits/fc/kernel"] = np.zeros((768, 1000), np.float32)
    path = inception.save_npz(tmp_path / "bad.npz", flat)
    with pytest.raises(UserError, match=message) as info:
        inception.load_inception_params(path)
    assert "python -m vqgan_jax.inception" in str(info.value) and "\n" not in str(info.value)


def test_load_missing_or_unreadable_file(tmp_path):
    with pytest.raises(UserError, match="not found.*python -m vqgan_jax.inception download"):
        inception.load_inception_params(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(UserError, match="cannot read"):
        inception.load_inception_params(tmp_path / "junk.npz")


def _torch_key(flat_key):
    """Our 'params/Mixed_5b/branch1x1/conv/kernel' -> pytorch-fid's 'Mixed_5b.branch1x1.conv.weight'."""
    collection, *modules, leaf = flat_key.split("/")
    name = {"kernel": "weight", "scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}[leaf]
    return ".".join([*modules, name])


def _fake_state_dict(rng):
    """A pytorch-fid-shaped state dict of numpy arrays: OIHW convs, (out, in) fc, num_batches_tracked."""
    state = {}
    for key, shape in inception.expected_shapes().items():
        torch_shape = shape[::-1] if key == "params/fc/kernel" else (
            (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape)
        state[_torch_key(key)] = rng.standard_normal(torch_shape).astype(np.float32)
        if key.endswith("bn/mean"):
            state[_torch_key(key).replace("running_mean", "num_batches_tracked")] = np.array(0, np.int64)
    return state


def test_converter_maps_every_key_without_torch():
    state = _fake_state_dict(np.random.default_rng(9))
    assert state["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert state["fc.weight"].shape == (1008, 2048) and "Mixed_5b.branch1x1.bn.running_mean" in state
    flat = inception.torch_state_dict_to_npz_dict(state)
    want = inception.expected_shapes()
    assert set(flat) == set(want)
    assert all(flat[k].shape == want[k] and flat[k].dtype == np.float32 for k in want)
    # OIHW -> HWIO: kernel[h, w, i, o] == weight[o, i, h, w]; fc transposed; BatchNorm copied.
    w = state["Mixed_6b.branch7x7_2.conv.weight"]  # (128, 128, 1, 7)
    np.testing.assert_array_equal(flat["params/Mixed_6b/branch7x7_2/conv/kernel"], w.transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat["params/fc/kernel"], state["fc.weight"].T)
    np.testing.assert_array_equal(flat["params/fc/bias"], state["fc.bias"])
    np.testing.assert_array_equal(flat["batch_stats/Mixed_7c/branch_pool/bn/var"],
                                  state["Mixed_7c.branch_pool.bn.running_var"])
    np.testing.assert_array_equal(flat["params/Conv2d_4a_3x3/bn/scale"], state["Conv2d_4a_3x3.bn.weight"])
    # A foreign key or a wrong shape is refused, never half-converted.
    with pytest.raises(UserError, match="AuxLogits.conv0.conv.weight"):
        inception.torch_state_dict_to_npz_dict({**state, "AuxLogits.conv0.conv.weight": np.zeros((128, 768, 1, 1))})
    with pytest.raises(UserError, match="shape"):
        inception.torch_state_dict_to_npz_dict({**state, "fc.weight": np.zeros((1000, 2048), np.float32)})


def test_converter_refuses_a_file_with_another_hash(tmp_path, monkeypatch, capsys):
    fake = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    fake.write_bytes(b"definitely not the weights")
    with pytest.raises(UserError, match="sha256"):
        inception.convert_pytorch_fid(fake, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()
    with pytest.raises(UserError, match="not found"):
        inception.convert_pytorch_fid(tmp_path / "absent.pth", tmp_path / "out.npz")
    # The CLI turns the refusal into one line and exit status 2.
    argv = ["convert", "--pth", str(fake), "--out", str(tmp_path / "out.npz")]
    assert run_cli(lambda: inception.main(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "sha256" in err and err.count("\n") == 1
    # With a matching hash the converter goes on to torch, which this environment may lack; without torch
    # the download refuses before it touches the network.
    if importlib.util.find_spec("torch") is None:
        monkeypatch.setattr(inception, "PTH_SHA256_PREFIX", inception.file_sha256(fake)[:8])
        with pytest.raises(UserError, match="needs torch: pip install torch"):
            inception.convert_pytorch_fid(fake, tmp_path / "out.npz")
        monkeypatch.setattr(inception.urllib.request, "urlopen", lambda *a, **k: pytest.fail("downloaded"))
        with pytest.raises(UserError, match="needs torch"):
            inception.download_pytorch_fid(tmp_path / "dl")
    assert os.listdir(tmp_path) == [fake.name]


# ---------------------------------------------------------------- parity with pytorch-fid


def _fixture_script():
    """tests/fixtures/make_inception_fixture.py as a module (it imports only numpy at the top, no torch)."""
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "make_inception_fixture.py")
    spec = importlib.util.spec_from_file_location("make_inception_fixture", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inception_matches_pytorch_fid_fixture(weights_file):
    # inception_parity.npz holds pytorch-fid 0.3.0's InceptionV3 (pool3) and fid_inception_v3 (logits) outputs
    # on weights and images rebuilt here from seeds; make_inception_fixture.py says how it was made.
    script = _fixture_script()
    with np.load(script.OUT, allow_pickle=False) as z:
        ref = {k: z[k] for k in z.files}
    images = script.make_images()
    assert script.array_digest({"images": images}) == str(ref["images_sha256"]), "make_images drifted"
    with np.load(weights_file) as z:  # make_random_weights(seed=0), shared with the tests above
        flat = script.perturb({k: z[k] for k in z.files})
    assert script.array_digest(flat) == str(ref["weights_sha256"]), "make_random_weights or perturb drifted"
    inception.check_flat_weights(flat, "the perturbed weights")
    variables = traverse_util.unflatten_dict({k: np.asarray(v) for k, v in flat.items()}, sep="/")
    # Same shapes as the `features` fixture's batch-2 apply; the persistent XLA cache serves the compile.
    pool3, logits = fid.InceptionFeatures(variables, batch_size=2)(images.astype(np.float32))
    # The torch float32 forward itself is within ~4e-6 of float64 (meta); |pool3| reaches ~13, |logits| ~7.
    np.testing.assert_allclose(pool3, ref["pool3"], rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(logits, ref["logits"], rtol=1e-5, atol=5e-5)
    np.testing.assert_allclose(logits + flat["params/fc/bias"], ref["logits_bias"], rtol=1e-5, atol=5e-5)
    assert np.abs(ref["pool3"][0] - ref["pool3"][1]).max() > 0.1  # the two images give different features
