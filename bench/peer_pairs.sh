#!/usr/bin/env bash
# Pairs against the PyTorch peer, one program after the other on a quiet machine (never at the same time):
# the flowers64 stage-1 step (perceptual loss off, discriminator on), the prior's train step and cached
# sampling of 16 x 256 tokens. Each line is one program's JSON; compare the lines of one round.
#
#   PEER_PY=/tmp/peer-venv/bin/python PEER_DIR=../shared/bench-peer bench/peer_pairs.sh [ROUNDS] > pairs.jsonl
#
# The peer's virtualenv is set up as ../shared/bench-peer/README.md says (torch CPU, taming-transformers).
# PY and PEER_PY may carry an environment, e.g. huge pages for both sides (bench/README.md):
#   PY="env GLIBC_TUNABLES=glibc.malloc.hugetlb=1 .venv/bin/python" PEER_PY="env GLIBC_TUNABLES=... /tmp/peer-venv/bin/python"
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
PY=${PY:-.venv/bin/python}
PEER_PY=${PEER_PY:-/tmp/peer-venv/bin/python}
PEER_DIR=${PEER_DIR:-../shared/bench-peer}
tmp=$(mktemp -d)
for round in $(seq 1 "$ROUNDS"); do
  echo "{\"round\": $round}"
  $PY bench/train_step.py --config configs/flowers64.py --config.loss.perceptual_weight=0 --steps 8 2>/dev/null
  $PEER_PY "$PEER_DIR/taming_vqgan.py" throughput --phase on --warmup 2 --steps 6 --out "$tmp/vq.json" >/dev/null 2>&1
  cat "$tmp/vq.json"; echo
  $PY bench/prior.py --config configs/flowers64.py --config.prior.dropout=0.0 --steps 8 --sample_reps 3 \
      --no_cache_reps 0 2>/dev/null
  $PEER_PY "$PEER_DIR/taming_gpt.py" --only hf_train,hf_cached --warmup 3 --steps 10 --cached-reps 3 \
      --out "$tmp/gpt.json" >/dev/null 2>&1
  cat "$tmp/gpt.json"; echo
done
rm -rf "$tmp"
