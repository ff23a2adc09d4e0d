"""train.setups: one VQGANSetup / PriorSetup per (config, mesh) in a process."""
from configs import demo
from vqgan_jax.data.tokens import PriorTokens
from vqgan_jax.train import parallel, setups
from vqgan_jax.trainers.ar_prior import PriorSetup, make_gpt2_config
from vqgan_jax.trainers.vqgan import VQGANSetup


def test_vqgan_setup_is_shared_across_train_settings_only():
    setups.clear()
    a = demo.get_config("tiny")
    b = demo.get_config("tiny")
    b.train.num_steps, b.train.seed = 99, 5          # the loop's settings: same compiled step
    c = demo.get_config("tiny")
    c.model.ch = 16                                  # another model
    d = demo.get_config("tiny")
    d.ops = "plain"                                  # other layers
    assert VQGANSetup.shared(a) is VQGANSetup.shared(b)
    assert VQGANSetup.shared(c) is not VQGANSetup.shared(a)
    assert VQGANSetup.shared(d) is not VQGANSetup.shared(a)
    one = parallel.make_mesh(parallel.make_mesh().devices.flat[:1])
    assert VQGANSetup.shared(a, one) is not VQGANSetup.shared(a)   # another mesh


def test_prior_setup_key_includes_the_schedule_and_old_setups_are_dropped():
    setups.clear()
    p = demo.get_config("tiny").prior
    tok = PriorTokens(num_codes=32, num_classes=0)
    gcfg = make_gpt2_config(p, tok, 17)
    first = PriorSetup.shared(p, tok, gcfg)
    assert PriorSetup.shared(p, tok, gcfg) is first
    q = demo.get_config("tiny").prior
    q.num_steps = p.num_steps + 10                   # the cosine schedule spans num_steps
    assert PriorSetup.shared(q, tok, gcfg) is not first
    for n in range(setups.MAX_SETUPS):               # newer setups push the oldest out
        r = demo.get_config("tiny").prior
        r.seed = 100 + n
        PriorSetup.shared(r, tok, gcfg)
    assert PriorSetup.shared(p, tok, gcfg) is not first
    setups.clear()
