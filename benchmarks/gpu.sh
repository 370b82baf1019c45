#!/usr/bin/env bash
# The GPU rows of benchmarks/RESULTS.md, on one GPU:
#   bash benchmarks/gpu.sh LEAF_FEMNIST_DIR OUT_DIR
# LEAF_FEMNIST_DIR: e.g. ../shared/data/femnist_leaf_niid05 (its digits are the workload).
set -uo pipefail
data=${1:?usage: benchmarks/gpu.sh LEAF_FEMNIST_DIR OUT_DIR}
out=${2:?usage: benchmarks/gpu.sh LEAF_FEMNIST_DIR OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
speed() { python3 -m benchmarks.round_speed --data_dir="$data" --memory_limit_gib=0 \
            --matmul_size=8192 "$@"; }
per_client="--examples_per_client=100"  # 5 batches of 20 per client
# 1000 clients per round: auto (chunks of 128), one vmap, chunks of 32 and 256.
speed --clients=1000 $per_client --rounds=2 --strategies=auto,vmap,chunked \
  --chunk_sizes=32,256 --aggregators=mean --json="$out/gpu_1000.json"
# The same CNN with its convolutions as matrix products (models.create_model("cnn_patches")
# and "cnn_shifted"): under vmap, batched matrix products instead of grouped convolutions.
speed --model=cnn_patches --clients=1000 $per_client --rounds=2 --strategies=auto,vmap \
  --aggregators=mean --json="$out/gpu_patches.json"
speed --model=cnn_shifted --clients=1000 $per_client --rounds=2 \
  --strategies=auto,vmap --aggregators=mean --json="$out/gpu_shifted.json"
# Flax's nn.max_pool (a reduce-window) in place of cnn's reshape-and-max pooling.
speed --model=cnn_reference --clients=1000 $per_client --rounds=2 --strategies=auto \
  --aggregators=mean --json="$out/gpu_reference.json"
# The seed workload: FEMNIST digits' own clients, 10 per round.
speed --clients=10 --rounds=5 --strategies=auto,vmap,sequential --threads=1 \
  --aggregators=mean --json="$out/gpu_seed.json"
# TFF's compression aggregator at 1000 clients; then 100 clients per round.
speed --clients=1000 $per_client --rounds=2 --strategies=auto --aggregators=compression \
  --json="$out/gpu_compression.json"
speed --clients=100 $per_client --rounds=3 --strategies=auto,vmap --aggregators=mean \
  --json="$out/gpu_100.json"
