#!/usr/bin/python3
"""PyTorch peer of edgetrain's training benchmark.

Builds a model from a spec file (scripts/et_torch.parse_spec) with He-normal
init, trains it on Fashion-MNIST with SGD (momentum) + softmax cross-entropy
and prints ONE line of JSON:

  {"images_per_second", "train_seconds", "test_accuracy", "final_loss",
   "peak_rss_bytes", "torch_version", "blas", ...}

Timing covers only the training loop (every epoch: shuffling, batch slicing,
forward, backward, optimizer step).  Before it, one untimed warm-up step
(forward + backward on the first batch) is run on a throw-away copy of the
model, so thread pools and allocator caches are warm while the trained
model and the data order are unaffected; --no-warmup disables it.  Data
loading, model construction and the test-set evaluation are not timed.

Pixels are scaled by 1/255, nothing else.  The training set (the first
--train-limit images, all 60000 by default) is shuffled every epoch with a
permutation drawn from a torch.Generator seeded with --seed (--order
edgetrain: edgetrain's permutation for that seed; with --init-from the same
initial weights as an edgetrain run, a paired run that differs from it only
in floating-point summation order); the last,
smaller batch of an epoch is kept.  "final_loss" is the mean training loss
over the last epoch (weighted by batch size).

"blas" is what torch.__config__ reports (BLAS_INFO, "generic" for Debian's
build: torch calls whatever libblas.so.3 the loader finds, for nn.Linear and
for the im2col convolutions); "blas_loaded" lists the BLAS libraries actually
mapped into the process, which is what decides the speed.

Run with /usr/bin/python3 (Debian's python3-torch).  Choosing the BLAS:
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp   OpenBLAS
    LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/blas:/usr/lib/x86_64-linux-gnu/lapack
                                                                reference BLAS
Without LD_LIBRARY_PATH the libblas.so.3 alternative decides (once
libopenblas0-openmp is installed, Debian's alternatives point to OpenBLAS).
Timings need an otherwise idle machine: with OpenMP threads competing for
cores, throughput drops by 10x or more.
"""

import argparse
import json
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Prints one line of JSON.",
        epilog="Timing: only the training loop is timed; one untimed warm-up step "
               "(forward+backward of the first batch on a throw-away copy of the model) "
               "runs before it unless --no-warmup is given.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", required=True, help="model spec file (models/*.et)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads; also OMP_NUM_THREADS/OPENBLAS_NUM_THREADS "
                         "when those are not set")
    ap.add_argument("--train-limit", type=int, default=0,
                    help="train on the first N training images (0: all 60000)")
    ap.add_argument("--seed", type=int, default=0, help="init and shuffle seed")
    ap.add_argument("--data", default=DEFAULT_DATA, help="Fashion-MNIST directory")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up step")
    ap.add_argument("--init-from", metavar="F",
                    help="initial weights from a safetensors state dict (a PyTorch-named "
                         "checkpoint, e.g. another run's --save-init) instead of He init")
    ap.add_argument("--save-init", metavar="F", help="write the initial weights to F (safetensors)")
    ap.add_argument("--order", choices=("torch", "edgetrain"), default="torch",
                    help="image order per epoch: a torch.randperm seeded with --seed, or "
                         "edgetrain's permutation for the same --seed (paired runs)")
    a = ap.parse_args(argv)
    if a.epochs < 1 or a.batch < 1 or a.threads < 1 or a.train_limit < 0:
        ap.error("epochs, batch and threads must be >= 1, train-limit >= 0")
    return a


def find_file(d, name):
    for n in (name, name + ".gz"):
        p = os.path.join(d, n)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(d, name) + "[.gz]")


def blas_info(torch):
    m = re.search(r"BLAS_INFO=([^,\s]+)", torch.__config__.show())
    info = m.group(1) if m else "unknown"
    loaded = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()[-1] if len(line.split()) >= 6 else ""
                b = os.path.basename(p)
                if b.startswith(("libblas", "libopenblas", "libmkl", "libblis", "libcblas")):
                    loaded.add(os.path.realpath(p))
    except OSError:
        pass
    return info, sorted(loaded)


def main(argv=None):
    a = parse_args(argv)
    # must be set before torch (and its BLAS/OpenMP) is loaded
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(a.threads))

    import resource
    import numpy as np
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    import et_torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)      # dropout masks

    model = et_torch.parse_spec(a.model)
    et_torch.he_init_(model, torch.Generator().manual_seed(a.seed))
    if a.init_from:
        tensors, _ = et_torch.load_safetensors(a.init_from)
        sd = model.state_dict()
        model.load_state_dict({k: tensors[k].to(sd[k].dtype).reshape(sd[k].shape) for k in sd})
    if a.save_init:
        et_torch.save_safetensors(a.save_init, {k: v.contiguous() for k, v in model.state_dict().items()})
    shape = model.input_shape

    def load(split, limit):
        x = et_torch.load_idx(find_file(a.data, split + "-images-idx3-ubyte"))
        y = et_torch.load_idx(find_file(a.data, split + "-labels-idx1-ubyte"))
        if limit:
            x, y = x[:limit], y[:limit]
        x = torch.from_numpy(x.astype(np.float32) / np.float32(255.0))
        x = x.reshape(x.shape[0], *shape)
        return x.contiguous(), torch.from_numpy(y.astype(np.int64))

    xtr, ytr = load("train", a.train_limit)
    xte, yte = load("t10k", 0)
    n = xtr.shape[0]

    opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=a.momentum)

    if not a.no_warmup:
        import copy
        tmp = copy.deepcopy(model).train()
        F.cross_entropy(tmp(xtr[:a.batch]), ytr[:a.batch]).backward()
        del tmp

    gen = torch.Generator().manual_seed(a.seed)
    model.train()
    final_loss = float("nan")
    t0 = time.perf_counter()
    for _epoch in range(a.epochs):
        if a.order == "edgetrain":
            perm = torch.tensor(et_torch.et_shuffle(a.seed, _epoch, n), dtype=torch.int64)
        else:
            perm = torch.randperm(n, generator=gen)
        tot, cnt = 0.0, 0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            xb, yb = xtr[idx], ytr[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            tot += loss.item() * idx.numel()
            cnt += idx.numel()
        final_loss = tot / cnt
    train_seconds = time.perf_counter() - t0

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, xte.shape[0], 1000):
            correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()

    info, loaded = blas_info(torch)
    out = {
        "images_per_second": n * a.epochs / train_seconds,
        "train_seconds": train_seconds,
        "test_accuracy": correct / xte.shape[0],
        "final_loss": final_loss,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "torch_version": torch.__version__,
        "blas": info,
        "blas_loaded": loaded,
        # convolutions go to oneDNN (mkldnn) when torch has it, not to the BLAS
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "model": os.path.basename(a.model),
        "epochs": a.epochs,
        "batch": a.batch,
        "lr": a.lr,
        "momentum": a.momentum,
        "threads": a.threads,
        "train_images": n,
        "seed": a.seed,
        "warmup_steps": 0 if a.no_warmup else 1,
        "init_from": a.init_from,
        "order": a.order,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
