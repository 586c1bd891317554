#!/bin/sh
# Run-time sparsity cost on the CPU, in issue 4's scenario: VGG8 pretrained in
# fp32 (scripts/vgg8_pretrained.sh, cached) retrained on Fashion-MNIST for
# SPARSITY_STEPS steps (batch 100, lr 0.01, momentum 0.9, seed 2; traffic and
# speculation checks sampled every 5 steps, as scripts/sparsity_results.sh) under
# --sparsity none, skip, prune (50%) and speculate (B = 4). The modes run
# SPARSITY_REPEAT times, interleaved, so all see the same machine; each mode's
# median run is kept (out/bench/sparsity-MODE.json; the others stay as .runK).
# Called by bench/run.sh; alone: sh bench/sparsity.sh
#   BENCH_THREADS=2  SPARSITY_STEPS=60  SPARSITY_REPEAT=5 (60 steps: as sparsity_results.sh, longer
#   than this machine's slow spells)
set -eu
cd "$(dirname "$0")/.."
make -s -j2 build/edgetrain
OUT=${OUT:-out/bench}
mkdir -p $OUT
T=${BENCH_THREADS:-2}
S=${SPARSITY_STEPS:-60}
R=${SPARSITY_REPEAT:-5}
CK=$(THREADS=$T sh scripts/vgg8_pretrained.sh)
MODES="none skip prune50 spec4"
rm -f $OUT/sparsity-*.json
i=1
while [ $i -le $R ]; do
    for m in $MODES; do
        case $m in
            spec4) args="speculate --spec-bits 4" ;;
            prune50) args="prune --prune-target 0.5 --prune-every $(( S / 10 > 0 ? S / 10 : 1 ))" ;;
            *) args=$m ;;
        esac
        echo "== sparsity $m (run $i of $R)" >&2
        # shellcheck disable=SC2086
        ./build/edgetrain train --model vgg8 --data fmnist --init-from $CK --steps $S --batch 100 --lr 0.01 \
            --momentum 0.9 --seed 2 --threads $T --quiet --test-limit 0 --traffic-every 5 --spec-check-every 5 \
            --sparsity $args --json $OUT/sparsity-$m.run$i.json > /dev/null
    done
    i=$((i + 1))
done
/usr/bin/python3 - $OUT $MODES <<'PY'
import json, os, shutil, sys
out, modes = sys.argv[1], sys.argv[2:]
for m in modes:
    runs = sorted((f for f in os.listdir(out) if f.startswith("sparsity-%s.run" % m)),
                  key=lambda f: json.load(open(os.path.join(out, f)))["train_images_per_second"])
    shutil.copyfile(os.path.join(out, runs[len(runs) // 2]), os.path.join(out, "sparsity-%s.json" % m))
base = json.load(open(os.path.join(out, "sparsity-none.json")))["train_images_per_second"]
def rounds(m):  # images/s of each round, in round order
    fs = sorted((f for f in os.listdir(out) if f.startswith("sparsity-%s.run" % m)),
                key=lambda f: int(f.rsplit("run", 1)[1].split(".")[0]))
    return [json.load(open(os.path.join(out, f)))["train_images_per_second"] for f in fs]
def median(v):
    v = sorted(v)
    return (v[(len(v) - 1) // 2] + v[len(v) // 2]) / 2
nr = rounds("none")
for m in modes:
    j = json.load(open(os.path.join(out, "sparsity-%s.json" % m)))
    ips = j["train_images_per_second"]
    paired = median([a / b for a, b in zip(rounds(m), nr)])  # each round's ratio to none's run next to it
    print("sparsity %-8s %8.0f img/s  %.2fx vs none (paired by round: %.2fx)  executed MACs %5.1f%%  CPU MACs %5.1f%% of dense" % (
        m, ips, ips / base, paired, 100 * j["sparsity"]["executed_fraction"]["total"], 100 * j["sparsity"]["cpu_fraction"]["total"]))
PY
