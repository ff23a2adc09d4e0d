"""Small XLA:CPU measurements behind the CPU-speed notes in bench/RESULTS.md (not a benchmark of ours).

    python bench/cpu_probes.py bmm             # batched vs unbatched matmul: time and cpu/wall
    python bench/cpu_probes.py decode          # 256 decode tokens of the flowers64 prior's weight matmuls
    python bench/cpu_probes.py kv_cache        # one decode token's attention over a full KV cache
    python bench/cpu_probes.py conv_wgrad      # a 3x3 conv's weight gradient: XLA's vs written as dots
    python bench/cpu_probes.py page_faults     # x * 2 on 16-256 MB: time and page faults per call
    VQGAN_JAX_HUGE_PAGES=0 python bench/cpu_probes.py page_faults   # the same without malloc's huge pages

Each line: median milliseconds over the timed calls and the process's CPU time / wall time while
they ran (2.0 = both cores of the 2-core sandbox busy, 1.0 = one).
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vqgan_jax.cli import prepare_process  # noqa: E402  (imports no jax)

prepare_process(compilation_cache=False)  # cold compiles (no persistent cache), as RESULTS has them

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

_RNG = np.random.default_rng(0)


def _array(*shape, scale=1.0):
    return jnp.asarray(_RNG.standard_normal(shape).astype(np.float32) * scale)


def _time(name, fn, *args, reps=20):
    fn = jax.jit(fn)
    jax.block_until_ready(fn(*args))
    times = []
    c0, w0 = time.process_time(), time.perf_counter()
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t)
    cpu_wall = (time.process_time() - c0) / (time.perf_counter() - w0)
    print(f"{name:52s} {1000 * np.median(times):9.2f} ms   cpu/wall {cpu_wall:.2f}", flush=True)


def bmm():
    """The prior's attention products (16 x 8 heads, query block 64, 256 keys, head size 32)."""
    q, kt, e, v = _array(128, 64, 32), _array(128, 32, 256), _array(128, 64, 256), _array(128, 256, 32)
    _time("batched (128, 64, 32) x (128, 32, 256)", lambda a, b: jnp.einsum("btd,bds->bts", a, b), q, kt)
    _time("batched (128, 64, 256) x (128, 256, 32)", lambda a, b: jnp.einsum("bts,bsd->btd", a, b), e, v)
    _time("same FLOPs unbatched (8192, 32) x (32, 256)", lambda a, b: a @ b, _array(8192, 32), _array(32, 256))

    def split(n):
        def f(a, b):
            m = a.shape[0] // n
            return jnp.concatenate([jnp.einsum("btd,bds->bts", a[i * m:(i + 1) * m], b[i * m:(i + 1) * m])
                                    for i in range(n)])
        return f
    for n in (2, 4, 8):
        _time(f"batched, as {n} separate dots", split(n), q, kt)


def decode():
    """Only the weight matmuls of the flowers64 prior (8 layers, width 256) for 256 tokens at batch 16."""
    layers = [(_array(256, 768, scale=0.05), _array(256, 256, scale=0.05), _array(256, 1024, scale=0.05),
               _array(1024, 256, scale=0.05)) for _ in range(8)]

    def layer(x, w):
        c_attn, c_proj, c_fc, mlp_proj = w
        x = x + jnp.tanh(x @ c_attn)[:, :256] @ c_proj
        return x + jax.nn.gelu(x @ c_fc) @ mlp_proj

    def one(_, x):
        for w in layers:
            x = layer(x, w)
        return x * 0.5

    def two(_, xs):
        a, b = xs
        for w in layers:
            a, b = layer(a, w), layer(b, w)
        return a * 0.5, b * 0.5

    def reused(n):
        # The same FLOPs with only n distinct layers' weights (3.1 MB each), so they stay in the caches:
        # the gap to the 8-layer chain is the cost of streaming 25 MB of weights per token.
        def body(_, x):
            for w in layers[:n] * (8 // n):
                x = layer(x, w)
            return x * 0.5
        return body

    x = _array(16, 256)
    _time("256 tokens, batch 16", lambda x: jax.lax.fori_loop(0, 256, one, x), x, reps=5)
    _time("256 tokens, two independent chains of 8", lambda x: jax.lax.fori_loop(0, 256, two, (x[:8], x[8:])),
          x, reps=5)
    for n in (1, 2, 4):
        _time(f"256 tokens, batch 16, {n} layer(s) of weights reused", lambda x, n=n: jax.lax.fori_loop(
            0, 256, reused(n), x), x, reps=5)


def kv_cache():
    """One decode token's attention in the 8 layers over a full cache (16 rows x 8 heads x 256 positions x
    32, 8 MB of keys + values per layer, 64 MB in all, more than this machine's caches), with the cache in
    float32 / float16 / bfloat16, as dots and as multiply-reduce fusions; and a 64 MB sum for the memory
    bandwidth it runs against."""
    s = 256
    q = _array(16, 8, 1, 32)
    kv32 = [_array(16, 8, s, 32) for _ in range(16)]
    mask = jnp.arange(s) <= s - 20

    def dots(q, k, v):
        w = jnp.einsum("bhtd,bhsd->bhts", q, k, preferred_element_type=jnp.float32) / np.sqrt(32)
        w = jax.nn.softmax(jnp.where(mask, w, -1e30), -1)
        return jnp.einsum("bhts,bhsd->bhtd", w.astype(v.dtype), v, preferred_element_type=jnp.float32)

    def mult_reduce(q, k, v):
        w = jnp.sum(q * k.astype(jnp.float32), -1)[:, :, None, :] / np.sqrt(32)
        w = jax.nn.softmax(jnp.where(mask, w, -1e30), -1)
        return jnp.sum(w[:, :, 0, :, None] * v.astype(jnp.float32), 2)[:, :, None, :]

    def eight(attend):
        def f(q, *kv):
            for i in range(8):
                q = q + attend(q, kv[2 * i], kv[2 * i + 1])
            return q
        return f

    for dtype in (jnp.float32, jnp.float16, jnp.bfloat16):
        kv = [a.astype(dtype) for a in kv32]
        for name, attend in (("dots", dots), ("multiply-reduce", mult_reduce)):
            _time(f"8 layers, {jnp.dtype(dtype).name} cache, {name}", eight(attend), q, *kv,
                  reps=10 if dtype != jnp.float32 and name == "dots" else 50)
    big = jnp.ones((16 * 2**20,), jnp.float32)
    _time("sum of 64 MB (memory bandwidth)", jnp.sum, big, reps=50)


def conv_wgrad():
    """A 3x3 conv at 16 x 64 x 64 x 64 -> 64 channels: forward, input and weight gradients."""
    n, h, w, c, o = 16, 64, 64, 64, 64
    x, g, k = _array(n, h, w, c), _array(n, h, w, o), _array(3, 3, c, o)
    conv = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    _time("forward", conv, x, k, reps=8)
    _time("input gradient", lambda g, k: jax.vjp(lambda x: conv(x, k), x)[1](g)[0], g, k, reps=8)
    _time("weight gradient (XLA)", lambda x, g: jax.vjp(lambda k: conv(x, k), k)[1](g)[0], x, g, reps=8)

    def taps(x, g):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        return jnp.stack([jnp.stack([jnp.einsum("nhwc,nhwo->co", xp[:, i:i + h, j:j + w], g) for j in range(3)])
                          for i in range(3)])

    def im2col(x, g):
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        p = jnp.concatenate([xp[:, i:i + h, j:j + w] for i in range(3) for j in range(3)], -1).reshape(-1, 9 * c)
        return jax.lax.dot_general(p, g.reshape(-1, o), (((0,), (0,)), ((), ()))).reshape(3, 3, c, o)
    _time("weight gradient as 9 per-tap dots", taps, x, g, reps=8)
    _time("weight gradient as im2col + one dot", im2col, x, g, reps=8)


def page_faults():
    """A new output buffer per call, as XLA:CPU allocates every step's buffers: with 4 KiB pages the
    kernel faults in (and zeroes) every page of it on each call; see `cli.use_huge_pages`."""
    import resource
    print(f"GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
    for mb in (16, 64, 256):
        x = jnp.ones((mb * 2**18,), jnp.float32)
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        _time(f"x * 2, {mb} MB", lambda v: v * 2.0, x)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 21  # the compiling call + 20 timed
        print(f"{'':52s} {faults:9.0f} page faults per call")


if __name__ == "__main__":
    probes = {"bmm": bmm, "decode": decode, "kv_cache": kv_cache, "conv_wgrad": conv_wgrad, "page_faults": page_faults}
    if len(sys.argv) != 2 or sys.argv[1] not in probes:
        sys.exit(f"usage: python bench/cpu_probes.py {{{'|'.join(probes)}}}")
    probes[sys.argv[1]]()
