"""Hugging Face's PyTorch GPT-2 at the flowers64 prior's size, for side-by-side figures on any device.

    python bench/hf_gpt2_torch.py [--device cuda] [--steps 10] [--cached_reps 3] [--plain_reps 1] [--bf16]

Needs torch, which vqgan_jax does not: run it in the peer's virtualenv (../shared/bench-peer) or on a
GPU host that has torch. On a CPU the peer's own `taming_gpt.py` is the reference; this script mirrors its
HF settings (8 layers, 8 heads, width 256, vocabulary 512 codes + 1 start token, dropout 0, AdamW; 16
sequences of 256 tokens; `generate(do_sample=True, top_k=100)` with and without the cache) on a device of
your choice, so `bench/prior.py` on a GPU has a peer. Prints one JSON line.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, reps, warmup, device):
    for _ in range(warmup):
        fn()
    sync(device)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n_layer", type=int, default=8)
    ap.add_argument("--n_head", type=int, default=8)
    ap.add_argument("--n_embd", type=int, default=256)
    ap.add_argument("--num_codes", type=int, default=512)
    ap.add_argument("--seq_len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cached_reps", type=int, default=3)
    ap.add_argument("--plain_reps", type=int, default=1)
    ap.add_argument("--top_k", type=int, default=100)
    ap.add_argument("--bf16", action="store_true", help="autocast the train step to bfloat16")
    args = ap.parse_args()
    device = torch.device(args.device)
    start = args.num_codes  # the start token, as in vqgan_jax's unconditional prior
    cfg = GPT2Config(vocab_size=args.num_codes + 1, n_positions=args.seq_len + 1, n_embd=args.n_embd,
                     n_layer=args.n_layer, n_head=args.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     bos_token_id=start, eos_token_id=None, pad_token_id=start)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.num_codes, (args.batch, args.seq_len), generator=g)
    seq = torch.cat([torch.full((args.batch, 1), start), ids], 1).to(device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            logits = model(input_ids=seq[:, :-1]).logits
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), seq[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    train = timed(train_step, args.steps, 2, device)
    model.eval()
    prompt = torch.full((args.batch, 1), start, device=device)

    def sample(use_cache):
        with torch.no_grad():
            out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, top_k=args.top_k, max_new_tokens=args.seq_len,
                                 min_new_tokens=args.seq_len, use_cache=use_cache, pad_token_id=start)
        assert out.shape == (args.batch, args.seq_len + 1), out.shape

    cached = timed(lambda: sample(True), args.cached_reps, 1, device) if args.cached_reps > 0 else []
    plain = timed(lambda: sample(False), args.plain_reps, 1, device) if args.plain_reps > 0 else []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    med = statistics.median
    print(json.dumps({
        "system": "hf_gpt2_torch", "device": f"{device.type}:{name}", "torch": torch.__version__,
        "bf16": args.bf16, "n_layer": args.n_layer, "n_embd": args.n_embd, "batch_size": args.batch,
        "seq_len": args.seq_len, "train_step_s": round(med(train), 4),
        "train_tokens_per_sec": round(args.batch * args.seq_len / med(train), 1),
        "sample_cached_s": round(med(cached), 3) if cached else None, "sample_no_cache_s": round(med(plain), 3) if plain else None,
    }))


if __name__ == "__main__":
    main()
