#!/bin/sh
# Prints the path of a VGG8 pretrained in fp32 for 1 epoch on the first
# PRETRAIN_LIMIT (default 12000) Fashion-MNIST training images (batch 100, SGD
# lr 0.01, momentum 0.9, seed 1), training it into cache/ first if it is not
# there. Shared by scripts/sparsity_results.sh and bench/sparsity.sh, which
# retrain from it. Progress goes to stderr.
set -eu
cd "$(dirname "$0")/.."
PL=${PRETRAIN_LIMIT:-12000}
T=${THREADS:-2}
CK=cache/vgg8-fmnist-fp32-$PL.safetensors
mkdir -p cache
if [ ! -f $CK ]; then
    make -s -j2 build/edgetrain >&2
    echo "pretraining VGG8 (fp32, 1 epoch on $PL images) -> $CK" >&2
    ./build/edgetrain train --model vgg8 --data fmnist --epochs 1 --train-limit $PL --lr 0.01 --momentum 0.9 \
        --seed 1 --threads $T --quiet --test-limit 0 --traffic-every 0 --save $CK > /dev/null
fi
echo $CK
