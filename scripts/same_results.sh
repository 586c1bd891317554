#!/bin/sh
# Two builds give the same training results: final loss, MAC counts (total and
# per layer; not macs_cpu, which a faster kernel lowers) and speculation statistics of short VGG8 runs, for speculate at
# B = 2/4/8/exp/32 (with checks), none, skip, int8 and int8 + speculate, at 1
# and 2 threads. Run from the repository root (needs the data and the cached
# model of scripts/vgg8_pretrained.sh):
#   sh scripts/same_results.sh OLD_EDGETRAIN NEW_EDGETRAIN [STEPS]
# Exit status 0 when every pair matches.
set -u
A=$1; B=$2; S=${3:-4}
INIT=${INIT:-cache/vgg8-fmnist-fp32-12000.safetensors}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
C="train --model vgg8 --data fmnist --init-from $INIT --steps $S --batch 100 --lr 0.01 --momentum 0.9 --seed 2 --quiet --test-limit 0 --traffic-every 0"
fail=0
run() { # tag, then the mode's options
    tag=$1; shift
    "$A" $C "$@" --json "$T/a.json" >/dev/null 2>&1 || { echo "$tag: $A failed"; fail=1; return; }
    "$B" $C "$@" --json "$T/b.json" >/dev/null 2>&1 || { echo "$tag: $B failed"; fail=1; return; }
    python3 - "$tag" "$T/a.json" "$T/b.json" <<'PY' || fail=1
import json, sys
def key(p):
    d = json.load(open(p))
    return (d['final_loss'], d['macs_executed'], d['macs_dense'],
            json.dumps(d.get('sparsity', {}).get('speculation'), sort_keys=True),
            [(l.get('macs_executed'), l.get('macs_dense')) for l in d['layers']])
a, b = key(sys.argv[2]), key(sys.argv[3])
print(sys.argv[1], 'same' if a == b else 'DIFFERENT', a[0], b[0])
sys.exit(a != b)
PY
}
for t in 1 2; do
    for bits in 2 4 8 exp 32; do
        run "speculate B=$bits t=$t" --threads $t --sparsity speculate --spec-bits $bits --spec-check-every 3
    done
    run "speculate B=4 no checks t=$t" --threads $t --sparsity speculate --spec-check-every 0
    run "none t=$t" --threads $t --sparsity none
    run "skip t=$t" --threads $t --sparsity skip
    run "int8 t=$t" --threads $t --precision int8
    run "int8 speculate t=$t" --threads $t --precision int8 --sparsity speculate --spec-check-every 2
done
exit $fail
