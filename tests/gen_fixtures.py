#!/usr/bin/python3
"""Generates the PyTorch golden fixtures in tests/fixtures/ (one safetensors
file per case).  Run from anywhere:

    /usr/bin/python3 tests/gen_fixtures.py

Conventions (see tests/fixtures/README.md for the full list):
  * every stored floating tensor is F32, labels and num_batches_tracked are I64;
  * inputs and parameters are drawn in float32 from fixed seeds; the layer,
    loss, optimizer and model references are then computed by PyTorch in
    float64 from those exact float32 values and rounded to float32 once, so the
    references carry no float32 accumulation error of their own (the
    torch_state_dict_logits case is the exception: float32, eval mode,
    exactly what PyTorch outputs);
  * activations are NCHW or [N, F]; parameters in PyTorch layouts
    (conv weight [OUT, C, KH, KW], linear weight [OUT, IN]);
  * metadata values are strings; sizes use the spec's option names, pairs
    are written "AxB" (k=3x3), the input shape "in=N,C,H,W" (or "in=N,F").
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import et_torch  # noqa: E402

OUT = os.path.join(ROOT, "tests", "fixtures")

TINY_RESNET = """\
# tiny_resnet: test model for tests/fixtures/model_tiny_resnet.safetensors
# (conv+bn+relu stem, one identity block, one strided block with a
# conv 1x1 s2 + bn shortcut, global average pool, linear).
input 3 8 8
conv 8 k=3 p=1 bias=0
bn
relu
residual
  conv 8 k=3 p=1 bias=0
  bn
  relu
  conv 8 k=3 p=1 bias=0
  bn
end
relu
residual
  conv 16 k=3 s=2 p=1 bias=0
  bn
  relu
  conv 16 k=3 p=1 bias=0
  bn
shortcut
  conv 16 k=1 s=2 bias=0
  bn
end
relu
avgpool global
flatten
linear 10
"""

written = []


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(g, *shape, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).float()


def pair(v):
    a, b = v
    return "%dx%d" % (a, b)


def shape_str(t):
    return ",".join(str(d) for d in t.shape)


def f32(t):
    t = t.detach()
    return t.float().contiguous() if t.is_floating_point() else t.contiguous()


def save(name, tensors, meta):
    meta = {k: str(v) for k, v in meta.items()}
    meta.setdefault("generator", "tests/gen_fixtures.py")
    meta.setdefault("torch_version", torch.__version__)
    path = os.path.join(OUT, name + ".safetensors")
    et_torch.save_safetensors(path, {k: f32(v) for k, v in tensors.items()}, meta)
    back, m2 = et_torch.load_safetensors(path)        # self-check of the writer
    assert m2 == meta and set(back) == set(tensors), name
    for k, v in tensors.items():
        assert torch.equal(back[k], f32(v)), (name, k)
    written.append(path)


def d(t, grad=False):
    """float64 copy (exact) of a float32 tensor, optionally a leaf needing grad."""
    return t.detach().double().clone().requires_grad_(grad)


# --------------------------------------------------------------------- conv

def conv_case(name, seed, n, c, h, w, out, k, s, p, bias):
    g = gen(seed)
    x = randn(g, n, c, h, w)
    fan_in = c * k[0] * k[1]
    weight = randn(g, out, c, k[0], k[1], scale=math.sqrt(2.0 / fan_in))
    b = randn(g, out, scale=0.1) if bias else None
    xd, wd = d(x, True), d(weight, True)
    bd = d(b, True) if bias else None
    y = F.conv2d(xd, wd, bd, stride=s, padding=p)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    t = {"x": x, "weight": weight, "y": y, "dy": dy, "dx": xd.grad, "dweight": wd.grad}
    if bias:
        t["bias"] = b
        t["dbias"] = bd.grad
    save(name, t, {"layer": "conv", "in": shape_str(x), "out": out, "k": pair(k),
                   "s": pair(s), "p": pair(p), "bias": int(bias)})


def conv_cases():
    conv_case("conv_k3_s1_p1_bias", 101, 2, 3, 8, 8, 4, (3, 3), (1, 1), (1, 1), True)
    conv_case("conv_k5_s2_p2_nobias", 102, 2, 2, 9, 9, 3, (5, 5), (2, 2), (2, 2), False)
    conv_case("conv_k1_s1_p0", 103, 2, 4, 5, 5, 6, (1, 1), (1, 1), (0, 0), True)
    conv_case("conv_k3x2_s2x1_p1x0", 104, 2, 3, 7, 6, 4, (3, 2), (2, 1), (1, 0), True)
    # H=7 is odd (windows still cover every row), W=10: the last column is
    # never read (dx there must be 0).
    conv_case("conv_k3_s2_p0_odd", 105, 2, 3, 7, 10, 5, (3, 3), (2, 2), (0, 0), True)
    conv_case("conv_cin1_k3_s1_p0", 106, 3, 1, 6, 6, 2, (3, 3), (1, 1), (0, 0), True)


# ------------------------------------------------------------------- linear

def linear_case(name, seed, n, fin, out, bias):
    g = gen(seed)
    x = randn(g, n, fin)
    weight = randn(g, out, fin, scale=math.sqrt(2.0 / fin))
    b = randn(g, out, scale=0.1) if bias else None
    xd, wd = d(x, True), d(weight, True)
    bd = d(b, True) if bias else None
    y = F.linear(xd, wd, bd)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    t = {"x": x, "weight": weight, "y": y, "dy": dy, "dx": xd.grad, "dweight": wd.grad}
    if bias:
        t["bias"] = b
        t["dbias"] = bd.grad
    save(name, t, {"layer": "linear", "in": shape_str(x), "out": out, "bias": int(bias)})


# --------------------------------------------------------- parameterless ops

def relu_case():
    g = gen(201)
    x = randn(g, 2, 3, 4, 5)
    # keep every value at least 0.01 away from 0: dReLU(0) is a subgradient
    # choice (PyTorch and edgetrain use 0), which this fixture does not test.
    x = torch.sign(x) * (x.abs() + 0.01)
    assert (x != 0).all()
    xd = d(x, True)
    y = F.relu(xd)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    save("relu", {"x": x, "y": y, "dy": dy, "dx": xd.grad},
         {"layer": "relu", "in": shape_str(x), "subgradient_at_0": "0"})


def distinct(g, *shape):
    """Values all distinct (no ties for max pooling), exactly representable."""
    n = 1
    for s in shape:
        n *= s
    perm = torch.randperm(n, generator=g).double()
    return ((perm - n / 2) / 16.0).float().reshape(shape)


def maxpool_case(name, seed, shape, k, s, p):
    g = gen(seed)
    x = distinct(g, *shape)
    xd = d(x, True)
    y = F.max_pool2d(xd, k, s, p)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    save(name, {"x": x, "y": y, "dy": dy, "dx": xd.grad},
         {"layer": "maxpool", "in": shape_str(x), "k": pair(k), "s": pair(s), "p": pair(p)})


def avgpool_case(name, seed, shape, k, s, p):
    g = gen(seed)
    x = randn(g, *shape)
    xd = d(x, True)
    y = F.avg_pool2d(xd, k, s, p, count_include_pad=True)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    save(name, {"x": x, "y": y, "dy": dy, "dx": xd.grad},
         {"layer": "avgpool", "in": shape_str(x), "k": pair(k), "s": pair(s), "p": pair(p)})


def avgpool_global_case():
    g = gen(313)
    x = randn(g, 2, 3, 5, 5)
    xd = d(x, True)
    y = F.adaptive_avg_pool2d(xd, 1)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    save("avgpool_global", {"x": x, "y": y, "dy": dy, "dx": xd.grad},
         {"layer": "avgpool", "in": shape_str(x), "global": "1"})


def flatten_case():
    g = gen(401)
    x = randn(g, 2, 3, 4, 5)
    xd = d(x, True)
    y = torch.flatten(xd, 1)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    save("flatten", {"x": x, "y": y, "dy": dy, "dx": xd.grad},
         {"layer": "flatten", "in": shape_str(x)})


def add_case():
    g = gen(402)
    x = randn(g, 2, 3, 4, 4)
    x2 = randn(g, 2, 3, 4, 4)
    xd, x2d = d(x, True), d(x2, True)
    y = xd + x2d
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    save("add", {"x": x, "x2": x2, "y": y, "dy": dy, "dx": xd.grad, "dx2": x2d.grad},
         {"layer": "add", "in": shape_str(x)})


# ------------------------------------------------------------------ batchnorm

def bn_case(name, seed, train, eps, momentum):
    g = gen(seed)
    n, c, h, w = 4, 3, 5, 5
    x = (torch.randn(n, c, h, w, generator=g) * torch.tensor([2.0, 0.5, 1.0]).view(1, c, 1, 1)
         + torch.tensor([0.5, -1.0, 3.0]).view(1, c, 1, 1)).float()
    weight = (1.0 + 0.3 * torch.randn(c, generator=g)).float()
    bias = randn(g, c, scale=0.2)
    rm_in = randn(g, c, scale=0.5)
    rv_in = (0.5 + torch.rand(c, generator=g)).float()
    xd, wd, bd = d(x, True), d(weight, True), d(bias, True)
    rm, rv = d(rm_in), d(rv_in)
    y = F.batch_norm(xd, rm, rv, wd, bd, training=train, momentum=momentum, eps=eps)
    dy = randn(g, *y.shape)
    y.backward(d(dy))
    t = {"x": x, "weight": weight, "bias": bias, "running_mean_in": rm_in,
         "running_var_in": rv_in, "y": y, "dy": dy, "dx": xd.grad, "dweight": wd.grad,
         "dbias": bd.grad, "running_mean": rm, "running_var": rv}
    if train:
        xx = x.double()
        t["batch_mean"] = xx.mean(dim=(0, 2, 3))
        t["batch_var"] = xx.var(dim=(0, 2, 3), unbiased=False)
        # PyTorch's running update: biased variance normalises, the running
        # variance is updated with the unbiased one (times m/(m-1)).
        m = n * h * w
        exp_rv = (1 - momentum) * rv_in.double() + momentum * t["batch_var"] * m / (m - 1)
        assert torch.allclose(rv, exp_rv, rtol=1e-12, atol=0)
    else:
        assert torch.equal(rm, d(rm_in)) and torch.equal(rv, d(rv_in))
    save(name, t, {"layer": "bn", "in": shape_str(x), "mode": "train" if train else "eval",
                   "eps": repr(eps), "momentum": repr(momentum)})


# ----------------------------------------------------------------------- loss

def loss_case(name, seed, n, scale):
    g = gen(seed)
    x = randn(g, n, 10, scale=scale)
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.int64)
    xd = d(x, True)
    loss = F.cross_entropy(xd, labels, reduction="mean")
    loss.backward()
    save(name, {"x": x, "labels": labels, "loss": loss.reshape(1), "dx": xd.grad},
         {"layer": "loss", "in": shape_str(x), "loss": "softmax_cross_entropy",
          "reduction": "mean"})


# --------------------------------------------------------------------- models

def model_case(name, spec_path, spec_text, batch, seed, bn_stats_seed=None):
    model = et_torch.parse_spec_text(spec_text, path=spec_path)
    g = gen(seed)
    et_torch.he_init_(model, g)
    if bn_stats_seed is not None:
        # non-trivial running statistics so the momentum update is tested
        gs = gen(bn_stats_seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=gs) * 0.1)
                    m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gs))
    sd0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    x = torch.rand(batch, *model.input_shape, generator=g).float()
    labels = torch.randint(0, 10, (batch,), generator=g, dtype=torch.int64)

    model.double().train()
    logits = model(d(x))
    loss = F.cross_entropy(logits, labels, reduction="mean")
    loss.backward()

    t = {"param." + k: v for k, v in sd0.items()}
    t.update({"x": x, "labels": labels, "logits": logits, "loss": loss.reshape(1)})
    for k, p in model.named_parameters():
        t["grad." + k] = p.grad
    has_bn = False
    for k, v in model.state_dict().items():
        if "running_" in k or "num_batches_tracked" in k:
            has_bn = True
            t["after." + k] = v
    meta = {"layer": "model", "spec": spec_path, "spec_text": spec_text,
            "in": shape_str(x), "batch": batch, "seed": seed, "init": "he_normal",
            "mode": "train", "loss": "softmax_cross_entropy", "reduction": "mean"}
    if has_bn:
        meta["bn_stats_seed"] = bn_stats_seed
    save(name, t, meta)


def state_dict_case():
    spec = os.path.join(ROOT, "models", "lenet.et")
    model = et_torch.parse_spec(spec)
    et_torch.he_init_(model, gen(0))
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = {"spec": "models/lenet.et", "seed": "0", "init": "he_normal"}
    save("torch_state_dict", sd, meta)
    model.eval()
    x = torch.rand(2, 1, 28, 28, generator=gen(7)).float()
    with torch.no_grad():
        logits = model(x)                       # float32, exactly PyTorch's output
    save("torch_state_dict_logits", {"x": x, "logits": logits},
         {"spec": "models/lenet.et", "state_dict": "torch_state_dict.safetensors",
          "mode": "eval", "compute": "float32", "in": shape_str(x)})


# ----------------------------------------------------------------- optimizers

def optim_case(name, make, meta, seed=601):
    g = gen(seed)
    p0 = randn(g, 5, 7)
    gs = [randn(g, 5, 7) for _ in range(3)]
    p = d(p0, True)
    opt = make([p])
    t = {"p0": p0}
    for i, gi in enumerate(gs, 1):
        p.grad = d(gi)
        opt.step()
        t["g%d" % i] = gi
        t["p%d" % i] = p.detach().clone()
    meta = dict(meta)
    meta.update({"layer": "optimizer", "steps": "3"})
    save(name, t, meta)


def optim_cases():
    optim_case("optim_sgd_momentum",
               lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4,
                                          nesterov=False),
               {"optimizer": "sgd", "lr": "0.1", "momentum": "0.9", "weight_decay": "0.0001",
                "nesterov": "0", "dampening": "0"})
    optim_case("optim_sgd_nesterov",
               lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-4,
                                          nesterov=True),
               {"optimizer": "sgd", "lr": "0.1", "momentum": "0.9", "weight_decay": "0.0001",
                "nesterov": "1", "dampening": "0"})
    optim_case("optim_sgd_plain",
               lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.0),
               {"optimizer": "sgd", "lr": "0.1", "momentum": "0", "weight_decay": "0",
                "nesterov": "0", "dampening": "0"})
    optim_case("optim_adam",
               lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=0),
               {"optimizer": "adam", "lr": "0.001", "beta1": "0.9", "beta2": "0.999",
                "eps": "1e-08", "weight_decay": "0", "amsgrad": "0"})


def lr_case(name, make, meta, base=0.1, epochs=10):
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])    # lr used during this epoch
        opt.step()
        sched.step()
    lr = torch.tensor(lrs, dtype=torch.float64)
    meta = dict(meta)
    meta.update({"layer": "lr_schedule", "base_lr": repr(base), "epochs": str(epochs)})
    save(name, {"lr": lr}, meta)
    return lr


def lr_cases():
    lr = lr_case("lr_step", lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.1),
                 {"schedule": "step", "step_size": "3", "gamma": "0.1"})
    exp = torch.tensor([0.1 * 0.1 ** (e // 3) for e in range(10)], dtype=torch.float64)
    assert torch.allclose(lr, exp, rtol=1e-12)
    lr = lr_case("lr_cosine", lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10),
                 {"schedule": "cosine", "t_max": "10", "eta_min": "0"})
    exp = torch.tensor([0.05 * (1 + math.cos(math.pi * e / 10)) for e in range(10)],
                       dtype=torch.float64)
    assert torch.allclose(lr, exp, rtol=1e-9, atol=1e-15)


# -------------------------------------------------------- safetensors dtypes

def dtypes_case():
    """One small tensor of each dtype, for the C reader's tests."""
    t = {
        "f64": torch.tensor([1.5, -2.25, 1e300], dtype=torch.float64),
        "f32": torch.tensor([[1.0, -0.5], [3.25, 1e-30]], dtype=torch.float32),
        "i64": torch.tensor([-1, 2 ** 40, 7], dtype=torch.int64),
        "i32": torch.tensor([-7, 65536], dtype=torch.int32),
        "u8": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(42.0, dtype=torch.float32),
    }
    path = os.path.join(OUT, "dtypes.safetensors")
    et_torch.save_safetensors(path, t, {"layer": "dtypes", "note": "one tensor per dtype"})
    back, _ = et_torch.load_safetensors(path)
    for k, v in t.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    written.append(path)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(1)
    conv_cases()
    linear_case("linear_bias", 111, 4, 12, 5, True)
    linear_case("linear_nobias", 112, 3, 7, 6, False)
    relu_case()
    maxpool_case("maxpool_k2_s2", 301, (2, 3, 6, 6), (2, 2), (2, 2), (0, 0))
    maxpool_case("maxpool_k3_s2_p1", 302, (2, 3, 7, 7), (3, 3), (2, 2), (1, 1))
    avgpool_case("avgpool_k2_s2", 311, (2, 3, 6, 6), (2, 2), (2, 2), (0, 0))
    avgpool_case("avgpool_k3_s1_p1", 312, (2, 3, 5, 5), (3, 3), (1, 1), (1, 1))
    avgpool_global_case()
    bn_case("bn_train", 501, True, 1e-5, 0.1)
    bn_case("bn_eval", 502, False, 1e-3, 0.1)
    flatten_case()
    add_case()
    loss_case("loss", 701, 6, 1.0)
    loss_case("loss_large_logits", 702, 4, 40.0)    # tests the max-subtraction
    with open(os.path.join(ROOT, "models", "lenet.et")) as f:
        lenet = f.read()
    model_case("model_lenet", "models/lenet.et", lenet, 4, 1)
    with open(os.path.join(OUT, "tiny_resnet.et"), "w") as f:
        f.write(TINY_RESNET)
    model_case("model_tiny_resnet", "tests/fixtures/tiny_resnet.et", TINY_RESNET, 4, 2,
               bn_stats_seed=3)
    optim_cases()
    lr_cases()
    state_dict_case()
    dtypes_case()
    total = sum(os.path.getsize(p) for p in written)
    print("wrote %d files, %d bytes, to %s" % (len(written), total, os.path.relpath(OUT, ROOT)))


if __name__ == "__main__":
    main()
