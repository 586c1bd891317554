#!/bin/sh
# Paired accuracy check, edgetrain vs PyTorch: per seed, both sides start from
# the SAME initial weights (PyTorch's He init for that seed, written by
# bench/torch_train.py --save-init and read by edgetrain --init-from) and see
# the images in the SAME order (torch_train.py --order edgetrain), so a seed's
# two accuracies differ only by floating-point summation order. The spread of
# the per-seed differences is far smaller than that of unpaired runs (init
# and order dominate one epoch's end accuracy), so a systematic gap shows up
# with a few seeds. Prints each seed's pair and the mean difference with its
# standard error. Same recipe as make bench (bench/run.sh):
#   PAIRED_MODEL=vgg8 PAIRED_SEEDS="1 2 3 4 5 6 7 8" PAIRED_THREADS=2 sh bench/paired_accuracy.sh
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh python3 python3-torch python3-numpy libopenblas0-openmp
make -s -j2 build/edgetrain
m=${PAIRED_MODEL:-vgg8}
T=${PAIRED_THREADS:-2}
case $m in
    vgg8) lr=0.01; lim=10000 ;;
    *) lr=0.05; lim=60000 ;;
esac
OUT=out/bench/paired
mkdir -p $OUT
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
for s in ${PAIRED_SEEDS:-1 2 3 4 5 6 7 8}; do
    echo "== $m paired seed $s" >&2
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE LD_LIBRARY_PATH=$OPENBLAS_DIR \
        /usr/bin/python3 bench/torch_train.py --model models/$m.et --epochs 1 --batch 100 --lr $lr \
        --momentum 0.9 --threads $T --train-limit $lim --seed $s --order edgetrain \
        --save-init $OUT/$m.init.seed$s.safetensors > $OUT/$m.torch.seed$s.json
    ./build/edgetrain train --model models/$m.et --data fmnist --epochs 1 --batch 100 --lr $lr \
        --momentum 0.9 --threads $T --train-limit $lim --seed $s --init-from $OUT/$m.init.seed$s.safetensors \
        --quiet --json $OUT/$m.edgetrain.seed$s.json >&2
done
/usr/bin/python3 - $OUT $m ${PAIRED_SEEDS:-1 2 3 4 5 6 7 8} <<'PY'
import json, math, sys
out, m, seeds = sys.argv[1], sys.argv[2], sys.argv[3:]
acc = lambda side, s: json.load(open("%s/%s.%s.seed%s.json" % (out, m, side, s)))["test_accuracy"]
d = []
print("seed  edgetrain  PyTorch  difference")
for s in seeds:
    e, t = acc("edgetrain", s), acc("torch", s)
    d.append(e - t)
    print("%4s  %9.4f  %7.4f  %+10.4f" % (s, e, t, e - t))
n = len(d)
mean = sum(d) / n
sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1)) if n > 1 else float("nan")
print("%s, %d paired seeds: mean difference %+.4f, sd %.4f, standard error %.4f" % (m, n, mean, sd, sd / math.sqrt(n)))
PY
