#!/bin/sh
# The main job: build edgetrain, train LeNet on Fashion-MNIST, print accuracy,
# speed and memory. Writes out/demo.json.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
make -s -j2
mkdir -p out
echo "== edgetrain: LeNet on Fashion-MNIST (60000 training images, 2 epochs, batch 100, SGD lr 0.05 momentum 0.9)"
./build/edgetrain info --model lenet | sed -n '1,2p;/^MACs/p;/^  total/p'
./build/edgetrain train --model lenet --data fmnist --epochs 2 --batch 100 --lr 0.05 --momentum 0.9 \
    --save out/lenet.safetensors --json out/demo.json
echo "summary: out/demo.json, checkpoint: out/lenet.safetensors"
