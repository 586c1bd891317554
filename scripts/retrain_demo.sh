#!/bin/sh
# The edge-retraining scenario of ELearn (paper 000) on Fashion-MNIST, as far as
# edgetrain has it today (no run-time speculation yet: docs/hw.md):
#  1. "cloud": pretrain VGG8 on the first 55000 public training images (cached in
#     cache/vgg8-public.safetensors; a second run skips it);
#  2. deploy with ELearn's precision (policies/elearn-vgg8) and measure accuracy on the
#     public test set and on the device's private data (docs/private-data.md);
#  3. retrain 500 iterations at batch 100 on the 5000 private images with the ELearn
#     precision, modelled live on the elearn processor against the baseline;
#  4. print accuracy before/after and the processor report; out/retrain.json.
set -eu
cd "$(dirname "$0")/.."
sh scripts/deps.sh
make -s -j2 build/edgetrain
ET=./build/edgetrain
mkdir -p cache out
if [ ! -f cache/vgg8-public.safetensors ]; then
    echo "== 1. pretraining VGG8 on 55000 public images (cached for next time)"
    $ET train --model vgg8 --data fmnist --train-limit 55000 --epochs 1 --lr 0.01 --momentum 0.9 \
        --test-limit 0 --save cache/vgg8-public.safetensors
else
    echo "== 1. pretrained VGG8: cache/vgg8-public.safetensors"
fi
[ -f cache/private/t10k-labels-idx1-ubyte.gz ] || $ET private-data --out cache/private --shift lowlight --seed 1
echo "== 2. deployed with policies/elearn-vgg8 (weights INT2-4-8-8-4-8-4-8, features/errors INT8)"
pub=$($ET eval --model vgg8 --checkpoint cache/vgg8-public.safetensors --data fmnist --test-limit 1000 --precision elearn-vgg8)
priv=$($ET eval --model vgg8 --checkpoint cache/vgg8-public.safetensors --data fmnist --data-dir cache/private --precision elearn-vgg8)
echo "   public test set:  $pub"
echo "   private test set: $priv"
echo "== 3. retraining 500 iterations (batch 100) on 5000 private images, ELearn precision, on elearn vs baseline"
$ET train --model vgg8 --init-from cache/vgg8-public.safetensors --data fmnist --data-dir cache/private \
    --steps 500 --batch 100 --lr 0.01 --momentum 0.9 --precision elearn-vgg8 \
    --arch elearn --baseline baseline --json out/retrain.json
/usr/bin/python3 - "$priv" <<'PY'
import json, sys
j = json.load(open("out/retrain.json"))
before = float(sys.argv[1].split()[2])
after = j["test_accuracy"]
r = j["hw"]["ratios"]
print("== 4. private test accuracy %.4f -> %.4f (%+.1f points); paper: +21.9 points (VGG8, CIFAR-100 split)" % (before, after, 100 * (after - before)))
print("   elearn vs baseline: energy efficiency %.2fx, PE utilization %.2fx, speedup %.2fx, computation -%.1f%%, memory access -%.1f%%" % (
    r["energy_efficiency"], r["pe_utilization"], r["speedup"], 100 * r["computation_reduction"], 100 * r["memory_access_reduction"]))
print("   (paper: 3.60x, 1.44x, -63.3%, -85.5%: those need run-time speculation and compression, not in edgetrain yet)")
PY
