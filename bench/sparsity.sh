#!/bin/sh
# Run-time sparsity cost on the CPU: VGG8 training steps under --sparsity none,
# skip and speculate (B = 4), back to back in the same run at the same thread
# count; prints images/s and the ratio to none, writes out/bench/sparsity-*.json.
# Called by bench/run.sh; alone: sh bench/sparsity.sh
#   BENCH_THREADS=2  SPARSITY_STEPS=10
set -eu
cd "$(dirname "$0")/.."
make -s -j2 build/edgetrain
OUT=${OUT:-out/bench}
mkdir -p $OUT
T=${BENCH_THREADS:-2}
S=${SPARSITY_STEPS:-10}
for m in none skip spec4; do
    case $m in
        spec4) args="speculate --spec-bits 4" ;;
        *) args=$m ;;
    esac
    # shellcheck disable=SC2086
    ./build/edgetrain train --model models/vgg8.et --data fmnist --steps $S --batch 100 --lr 0.01 --momentum 0.9 \
        --threads $T --train-limit 2000 --test-limit 0 --traffic-every 0 --spec-check-every 0 --seed 1 --quiet \
        --sparsity $args --json $OUT/sparsity-$m.json > /dev/null
done
/usr/bin/python3 - $OUT <<'PY'
import json, os, sys
out = sys.argv[1]
base = json.load(open(os.path.join(out, "sparsity-none.json")))["train_images_per_second"]
for m in ("none", "skip", "spec4"):
    j = json.load(open(os.path.join(out, "sparsity-%s.json" % m)))
    ips = j["train_images_per_second"]
    print("sparsity %-6s %8.0f img/s  %.2fx vs none  executed MACs %5.1f%%  CPU MACs %5.1f%% of dense" % (
        m, ips, ips / base, 100 * j["sparsity"]["executed_fraction"]["total"], 100 * j["sparsity"]["cpu_fraction"]["total"]))
PY
