#!/bin/sh
# make bench: edgetrain vs PyTorch (Debian's python3-torch with Debian's
# OpenBLAS on its library path), same models, data, recipe and thread count,
# measured in the same run. Writes out/bench/*.json and docs/bench.md.
#   BENCH_MODELS="mlp lenet vgg8"  BENCH_THREADS=2  BENCH_REPEAT=3  BENCH_SEEDS="2 3 4 5"
#   BENCH_PAIRED_SEEDS="1 2 3 4 5 6 7 8" (vgg8's paired accuracy runs, bench/paired_accuracy.sh)
#   BENCH_VGG8_SEEDS="2 3 4 5" (vgg8's extra unpaired accuracy seeds; default: BENCH_SEEDS
#   when that is set, else these; see below)
#   BENCH_MODELS=none: only the number-format section (no PyTorch runs)
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh python3 python3-torch python3-numpy libopenblas0-openmp
make -s -j2 build/edgetrain build/bench/bench_gemm build/bench/bench_qgemm
OUT=out/bench
mkdir -p $OUT
T=${BENCH_THREADS:-2}
OPENBLAS_DIR=/usr/lib/x86_64-linux-gnu/openblas-openmp
# Machine peak (FP32 FMA throughput on T threads), measured here.
./build/bench/bench_gemm --peak-json > $OUT/peak.json
# Each model runs BENCH_REPEAT times (default 3), edgetrain and PyTorch
# alternating, so both sides see the same machine; the run with the median
# images/s of each side is the one reported (the others stay in out/bench).
R=${BENCH_REPEAT:-3}
median_json() { # $1: output file, rest: candidate JSON files
    out=$1; shift
    /usr/bin/python3 - "$out" "$@" <<'PY'
import json, shutil, sys
out, files = sys.argv[1], sys.argv[2:]
def ips(f):  # edgetrain's summary and torch_train.py name it differently
    j = json.load(open(f))
    return j.get("train_images_per_second", j.get("images_per_second"))
runs = sorted(files, key=ips)
shutil.copyfile(runs[len(runs) // 2], out)
PY
}
for m in ${BENCH_MODELS:-mlp lenet vgg8}; do
    [ "$m" = none ] && continue
    case $m in
        vgg8) lr=0.01; lim=10000 ;;
        *) lr=0.05; lim=60000 ;;
    esac
    rm -f $OUT/$m.edgetrain.run*.json $OUT/$m.torch.run*.json
    i=1
    while [ $i -le $R ]; do
        echo "== $m: edgetrain (run $i of $R)" >&2
        ./build/edgetrain train --model models/$m.et --data fmnist --epochs 1 --batch 100 --lr $lr \
            --momentum 0.9 --threads $T --train-limit $lim --seed 1 --quiet --json $OUT/$m.edgetrain.run$i.json >&2
        echo "== $m: PyTorch (run $i of $R)" >&2
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE LD_LIBRARY_PATH=$OPENBLAS_DIR \
            /usr/bin/python3 bench/torch_train.py --model models/$m.et --epochs 1 --batch 100 --lr $lr \
            --momentum 0.9 --threads $T --train-limit $lim --seed 1 > $OUT/$m.torch.run$i.json
        i=$((i + 1))
    done
    median_json $OUT/$m.edgetrain.json $OUT/$m.edgetrain.run*.json
    median_json $OUT/$m.torch.json $OUT/$m.torch.run*.json
    # Accuracy over seeds: one seed's test accuracy moves by about a point
    # (LeNet seeds 1-5: 0.857-0.875 on either side), so the accuracy target
    # is checked on the mean over seed 1 (above) and BENCH_SEEDS. vgg8's
    # single seeds spread by about 3 points on each side (16 seeds: sd 0.028
    # and 0.029): unpaired means of a few seeds cannot resolve a point, so
    # vgg8 is also run paired (bench/paired_accuracy.sh: per seed, the same
    # initial weights and image order on both sides), whose mean difference
    # has a standard error of about half a point with 8 seeds.
    rm -f $OUT/$m.edgetrain.seed*.json $OUT/$m.torch.seed*.json
    if [ $m = vgg8 ]; then seeds=${BENCH_VGG8_SEEDS-${BENCH_SEEDS-2 3 4 5}}; else seeds=${BENCH_SEEDS-2 3 4 5}; fi
    for s in $seeds; do
        echo "== $m: accuracy, seed $s" >&2
        ./build/edgetrain train --model models/$m.et --data fmnist --epochs 1 --batch 100 --lr $lr \
            --momentum 0.9 --threads $T --train-limit $lim --seed $s --quiet --json $OUT/$m.edgetrain.seed$s.json >&2
        env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE LD_LIBRARY_PATH=$OPENBLAS_DIR \
            /usr/bin/python3 bench/torch_train.py --model models/$m.et --epochs 1 --batch 100 --lr $lr \
            --momentum 0.9 --threads $T --train-limit $lim --seed $s > $OUT/$m.torch.seed$s.json
    done
    if [ $m = vgg8 ]; then
        rm -rf $OUT/paired
        PAIRED_MODEL=vgg8 PAIRED_THREADS=$T PAIRED_SEEDS="${BENCH_PAIRED_SEEDS-1 2 3 4 5 6 7 8}" \
            sh bench/paired_accuracy.sh >&2
    fi
done
# Number formats: emulated accumulation and integer policies against FP32, per
# training step (LeNet, 10000 images; VGG8 fp32 vs the int8 path, 2000 images)
# and per GEMM (bench_qgemm). Every policy runs R times, the policies taking
# turns, and the run with the median images/s is the one reported.
if [ -z "${BENCH_MODELS:-}" ] || [ "$BENCH_MODELS" = none ]; then
    rm -f $OUT/precision-*.run*.json
    i=1
    while [ $i -le $R ]; do
        for p in fp32 "w=int8,a=int8,e=int8,g=int16" int8 fp16 e6m5-sr13 vgg8:fp32 vgg8:int8; do
            m=lenet lim=10000
            case $p in vgg8:*) m=vgg8 lim=2000 p=${p#vgg8:} ;; esac
            f=$OUT/precision-$([ $m = vgg8 ] && echo vgg8-)$(printf %s "$p" | tr -c 'a-zA-Z0-9_-' _)
            if [ "$p" = fp32 ]; then pp=""; else pp="--precision $p"; fi
            echo "== $m precision $p (run $i of $R)" >&2
            ./build/edgetrain train --model models/$m.et --data fmnist --train-limit $lim --lr 0.05 --threads $T \
                --quiet --test-limit 0 --traffic-every 0 $pp --json "$f.run$i.json" >&2
            [ $i -lt $R ] || median_json "$f.json" "$f".run*.json
        done
        i=$((i + 1))
    done
    ./build/bench/bench_qgemm --threads 1 > $OUT/qgemm.txt
fi
[ -n "${BENCH_MODELS:-}" ] || OUT=$OUT sh bench/sparsity.sh >&2 # run-time sparsity: none vs skip vs speculate
/usr/bin/python3 bench/report.py $OUT docs/bench.md
