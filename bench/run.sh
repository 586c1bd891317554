#!/bin/sh
# make bench: edgetrain vs PyTorch (Debian's python3-torch with Debian's
# OpenBLAS on its library path), same models, data, recipe and thread count,
# measured in the same run. Writes out/bench/*.json and docs/bench.md.
#   BENCH_MODELS="mlp lenet vgg8"  BENCH_THREADS=2
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
for m in ${BENCH_MODELS:-mlp lenet vgg8}; do
    case $m in
        vgg8) lr=0.01; lim=10000 ;;
        *) lr=0.05; lim=60000 ;;
    esac
    echo "== $m: edgetrain" >&2
    ./build/edgetrain train --model models/$m.et --data fmnist --epochs 1 --batch 100 --lr $lr \
        --momentum 0.9 --threads $T --train-limit $lim --seed 1 --quiet --json $OUT/$m.edgetrain.json >&2
    echo "== $m: PyTorch" >&2
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE LD_LIBRARY_PATH=$OPENBLAS_DIR \
        /usr/bin/python3 bench/torch_train.py --model models/$m.et --epochs 1 --batch 100 --lr $lr \
        --momentum 0.9 --threads $T --train-limit $lim --seed 1 > $OUT/$m.torch.json
done
# Number formats: emulated accumulation and integer policies against FP32, per
# training step (LeNet, 10000 images) and per GEMM (bench_qgemm).
if [ -z "${BENCH_MODELS:-}" ]; then
    for p in fp32 "w=int8,a=int8,e=int8,g=int16" fp16 e6m5-sr13; do
        f=$OUT/precision-$(printf %s "$p" | tr -c 'a-zA-Z0-9_-' _).json
        if [ "$p" = fp32 ]; then pp=""; else pp="--precision $p"; fi
        echo "== lenet precision $p" >&2
        ./build/edgetrain train --model models/lenet.et --data fmnist --train-limit 10000 --lr 0.05 --threads $T \
            --quiet --test-limit 0 --traffic-every 0 $pp --json "$f" >&2
    done
    ./build/bench/bench_qgemm --threads 1 > $OUT/qgemm.txt
fi
[ -n "${BENCH_MODELS:-}" ] || OUT=$OUT sh bench/sparsity.sh >&2 # run-time sparsity: none vs skip vs speculate
/usr/bin/python3 bench/report.py $OUT docs/bench.md
