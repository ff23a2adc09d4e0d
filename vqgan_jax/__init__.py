"""vqgan_jax: a VQGAN image tokenizer and a GPT-2 prior over its tokens, in JAX/Flax."""

__version__ = "0.1.0"
