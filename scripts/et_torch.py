"""PyTorch-side helpers for edgetrain: the reference the C library is tested
and benchmarked against.

Only torch, numpy and the standard library are used (no `safetensors`
package: the format is implemented here in pure Python).

    parse_spec(path)            -> nn.Sequential equivalent of a models/*.et file
    parse_spec_text(text)       -> same, from a string
    he_init_(model, generator)  -> He-normal init (fan_in, ReLU gain), zero biases
    save_safetensors(path, tensors, metadata=None)
    load_safetensors(path)      -> (dict name -> torch.Tensor, metadata dict)
    load_idx(path)              -> numpy array (IDX file, gzipped or plain)
    et_shuffle(seed, epoch, n)  -> the image order of edgetrain's train --seed

The model returned by parse_spec has three extra attributes:
`input_shape` (tuple, per image: (C, H, W) or (F,)), `output_shape` (tuple)
and `spec_path` (str or None).

See docs/model-spec.md for the spec format and the naming convention.
"""

import gzip
import json
import math
import struct
import sys

import numpy as np
import torch
from torch import nn

__all__ = [
    "Residual", "parse_spec", "parse_spec_text", "he_init_",
    "save_safetensors", "load_safetensors", "load_idx", "SAFETENSORS_DTYPES",
]


# --------------------------------------------------------------------------
# Model spec
# --------------------------------------------------------------------------

class Residual(nn.Module):
    """body(x) + shortcut(x); an empty shortcut Sequential is the identity."""

    def __init__(self, body, shortcut):
        super().__init__()
        self.body = nn.Sequential(*body)
        self.shortcut = nn.Sequential(*shortcut)   # empty Sequential = identity

    def forward(self, x):
        return self.body(x) + self.shortcut(x)


# Options accepted per layer and their kinds.  Defaults live in the builder.
_OPTIONS = {
    "conv": {"k": "pair", "s": "pair", "p": "pair", "bias": "bool"},
    "linear": {"bias": "bool"},
    "relu": {},
    "maxpool": {"k": "pair", "s": "pair", "p": "pair"},
    "avgpool": {"k": "pair", "s": "pair", "p": "pair"},
    "bn": {"eps": "float", "momentum": "float"},
    "flatten": {},
    "dropout": {"p": "float"},
    "residual": {},
    "shortcut": {},
    "end": {},
}


class _SpecError(ValueError):
    pass


def _err(lineno, msg):
    return _SpecError("line %d: %s" % (lineno, msg))


def _parse_int(tok, lineno, what):
    try:
        v = int(tok, 10)
    except ValueError:
        raise _err(lineno, "%s: %r is not an integer" % (what, tok)) from None
    return v


def _parse_value(kind, key, val, lineno):
    if kind == "pair":
        parts = val.split("x")
        if len(parts) == 1:
            a = _parse_int(parts[0], lineno, key)
            return (a, a)
        if len(parts) == 2:
            return (_parse_int(parts[0], lineno, key), _parse_int(parts[1], lineno, key))
        raise _err(lineno, "%s=%s: expected A or AxB" % (key, val))
    if kind == "bool":
        if val not in ("0", "1"):
            raise _err(lineno, "%s=%s: expected 0 or 1" % (key, val))
        return val == "1"
    if kind == "float":
        try:
            v = float(val)
        except ValueError:
            raise _err(lineno, "%s=%s: not a number" % (key, val)) from None
        if not math.isfinite(v):
            raise _err(lineno, "%s=%s: not finite" % (key, val))
        return v
    raise AssertionError(kind)


def _pool_out(n, k, s, p):
    return (n + 2 * p - k) // s + 1


class _Frame:
    """One nn.Sequential under construction (top level, a body or a shortcut)."""

    def __init__(self, kind, shape, lineno):
        self.kind = kind          # "top", "body", "shortcut"
        self.layers = []
        self.shape = shape
        self.lineno = lineno
        self.body = None          # for "shortcut": the finished body frame
        self.entry_shape = shape  # shape entering the residual block


def parse_spec_text(text, path=None):
    """Build the nn.Sequential for spec `text`.  Raises ValueError (message
    starting with "line N:") on any unknown layer, unknown/duplicate/bad
    option or shape inconsistency."""
    input_shape = None
    stack = []

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        toks = line.split()
        name, args = toks[0], toks[1:]

        if input_shape is None:
            if name != "input":
                raise _err(lineno, "the first line must be 'input C H W' or 'input F'")
            if len(args) not in (1, 3):
                raise _err(lineno, "input takes 1 (F) or 3 (C H W) sizes")
            dims = tuple(_parse_int(a, lineno, "input") for a in args)
            if any(d <= 0 for d in dims):
                raise _err(lineno, "input sizes must be positive")
            input_shape = dims
            stack.append(_Frame("top", dims, lineno))
            continue
        if name == "input":
            raise _err(lineno, "'input' may only appear once, on the first line")
        if name not in _OPTIONS:
            raise _err(lineno, "unknown layer %r" % name)

        # positional args and key=value options
        positional, opts = [], {}
        for a in args:
            if "=" in a:
                key, val = a.split("=", 1)
                if key not in _OPTIONS[name]:
                    raise _err(lineno, "unknown option %r for %s" % (key, name))
                if key in opts:
                    raise _err(lineno, "option %r given twice" % key)
                opts[key] = _parse_value(_OPTIONS[name][key], key, val, lineno)
            else:
                positional.append(a)

        frame = stack[-1]
        shape = frame.shape

        def need_chw():
            if len(shape) != 3:
                raise _err(lineno, "%s needs a C H W input, got %s" % (name, shape))
            return shape

        def no_positional():
            if positional:
                raise _err(lineno, "unexpected argument %r for %s" % (positional[0], name))

        if name == "conv":
            if len(positional) != 1:
                raise _err(lineno, "conv takes exactly one positional argument OUT")
            out = _parse_int(positional[0], lineno, "conv OUT")
            if "k" not in opts:
                raise _err(lineno, "conv needs k=")
            c, h, w = need_chw()
            k, s, p = opts["k"], opts.get("s", (1, 1)), opts.get("p", (0, 0))
            bias = opts.get("bias", True)
            if out <= 0 or min(k) <= 0 or min(s) <= 0 or min(p) < 0:
                raise _err(lineno, "conv sizes must be positive (p >= 0)")
            ho, wo = _pool_out(h, k[0], s[0], p[0]), _pool_out(w, k[1], s[1], p[1])
            if ho <= 0 or wo <= 0:
                raise _err(lineno, "conv output would be empty (%dx%d)" % (ho, wo))
            frame.layers.append(nn.Conv2d(c, out, k, s, p, bias=bias))
            frame.shape = (out, ho, wo)
        elif name == "linear":
            if len(positional) != 1:
                raise _err(lineno, "linear takes exactly one positional argument OUT")
            out = _parse_int(positional[0], lineno, "linear OUT")
            if out <= 0:
                raise _err(lineno, "linear OUT must be positive")
            if len(shape) != 1:
                raise _err(lineno, "linear needs a flat input (add 'flatten'), got %s" % (shape,))
            frame.layers.append(nn.Linear(shape[0], out, bias=opts.get("bias", True)))
            frame.shape = (out,)
        elif name == "relu":
            no_positional()
            frame.layers.append(nn.ReLU())
        elif name in ("maxpool", "avgpool"):
            if name == "avgpool" and positional == ["global"]:
                if opts:
                    raise _err(lineno, "avgpool global takes no options")
                c, h, w = need_chw()
                frame.layers.append(nn.AdaptiveAvgPool2d(1))
                frame.shape = (c, 1, 1)
                continue
            no_positional()
            if "k" not in opts:
                raise _err(lineno, "%s needs k= (or 'global' for avgpool)" % name)
            c, h, w = need_chw()
            k = opts["k"]
            s = opts.get("s", k)
            p = opts.get("p", (0, 0))
            if min(k) <= 0 or min(s) <= 0 or min(p) < 0:
                raise _err(lineno, "%s sizes must be positive (p >= 0)" % name)
            if 2 * p[0] > k[0] or 2 * p[1] > k[1]:
                raise _err(lineno, "%s padding must be at most half the kernel" % name)
            ho, wo = _pool_out(h, k[0], s[0], p[0]), _pool_out(w, k[1], s[1], p[1])
            if ho <= 0 or wo <= 0:
                raise _err(lineno, "%s output would be empty (%dx%d)" % (name, ho, wo))
            if name == "maxpool":
                frame.layers.append(nn.MaxPool2d(k, s, p))
            else:
                frame.layers.append(nn.AvgPool2d(k, s, p, count_include_pad=True))
            frame.shape = (c, ho, wo)
        elif name == "bn":
            no_positional()
            c, h, w = need_chw()
            eps = opts.get("eps", 1e-5)
            mom = opts.get("momentum", 0.1)
            if eps <= 0 or not (0.0 <= mom <= 1.0):
                raise _err(lineno, "bn needs eps > 0 and 0 <= momentum <= 1")
            frame.layers.append(nn.BatchNorm2d(c, eps=eps, momentum=mom))
        elif name == "flatten":
            no_positional()
            n = 1
            for d in shape:
                n *= d
            frame.layers.append(nn.Flatten())
            frame.shape = (n,)
        elif name == "dropout":
            no_positional()
            p = opts.get("p", 0.5)
            if not (0.0 <= p < 1.0):
                raise _err(lineno, "dropout p must be in [0, 1)")
            frame.layers.append(nn.Dropout(p))
        elif name == "residual":
            no_positional()
            stack.append(_Frame("body", shape, lineno))
        elif name == "shortcut":
            no_positional()
            if frame.kind != "body":
                raise _err(lineno, "'shortcut' outside a residual block (or given twice)")
            stack.pop()
            sc = _Frame("shortcut", frame.entry_shape, lineno)
            sc.body = frame
            sc.entry_shape = frame.entry_shape
            stack.append(sc)
        elif name == "end":
            no_positional()
            if frame.kind == "body":
                body, short = frame, None
            elif frame.kind == "shortcut":
                body, short = frame.body, frame
            else:
                raise _err(lineno, "'end' without 'residual'")
            stack.pop()
            out_shape = short.shape if short is not None else body.entry_shape
            if body.shape != out_shape:
                raise _err(lineno, "residual branches disagree: body gives %s, shortcut gives %s"
                           % (body.shape, out_shape))
            parent = stack[-1]
            parent.layers.append(Residual(body.layers, short.layers if short else []))
            parent.shape = body.shape

    if input_shape is None:
        raise ValueError("line 1: empty spec (no 'input' line)")
    if len(stack) != 1:
        raise _err(stack[-1].lineno, "'residual' without 'end'")
    model = nn.Sequential(*stack[0].layers)
    model.input_shape = input_shape
    model.output_shape = stack[0].shape
    model.spec_path = path
    return model


def parse_spec(path):
    """Build the exact PyTorch equivalent of the spec file at `path`
    (an nn.Sequential with .input_shape, .output_shape and .spec_path)."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    return parse_spec_text(text, path=str(path))


def he_init_(model, generator=None):
    """He-normal init in module order: conv/linear weights ~ N(0, 2/fan_in)
    (kaiming_normal_, mode fan_in, ReLU gain), biases 0; BatchNorm weight 1,
    bias 0, running stats reset.  `generator` is a torch.Generator (or None
    for the global RNG).  Returns the model."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                w = m.weight
                fan_in = w[0].numel()                # Cin*kh*kw or in_features
                std = math.sqrt(2.0 / fan_in)
                w.normal_(0.0, std, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_running_stats()
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model


# --------------------------------------------------------------------------
# safetensors (pure Python)
# --------------------------------------------------------------------------
#
# File: u64 little-endian N | N bytes of UTF-8 JSON header (starts with '{',
# padded with trailing spaces; we pad to a multiple of 8 like the reference
# writer) | byte buffer.  Header: {"__metadata__": {str: str}, NAME:
# {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...};
# offsets are relative to the byte buffer, the tensors must cover it
# contiguously without holes or overlap.  Data is little-endian, row-major.

# name -> (torch dtype, element size)
SAFETENSORS_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_TORCH_TO_ST = {v[0]: k for k, v in SAFETENSORS_DTYPES.items()}
_MAX_HEADER = 100 * 1000 * 1000


def _to_le_bytes(t):
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        a = t.view(torch.int16).numpy()
    else:
        a = t.numpy()
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and sys.byteorder == "big"):
        a = a.byteswap()
    return a.tobytes()


def save_safetensors(path, tensors, metadata=None):
    """Write `tensors` (dict name -> torch.Tensor or numpy array) to `path`.
    `metadata` is an optional dict of str -> str stored as "__metadata__".
    Tensors are laid out by decreasing element size, then by name (the
    reference writer's order), so every tensor is naturally aligned."""
    items = []
    for name, t in tensors.items():
        if not isinstance(name, str) or name == "__metadata__" or not name:
            raise ValueError("bad tensor name %r" % (name,))
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.ascontiguousarray(t))
        if not isinstance(t, torch.Tensor):
            raise TypeError("%s: not a tensor" % name)
        if t.dtype not in _TORCH_TO_ST:
            raise TypeError("%s: dtype %s not supported" % (name, t.dtype))
        items.append((name, t))
    items.sort(key=lambda it: (-SAFETENSORS_DTYPES[_TORCH_TO_ST[it[1].dtype]][1], it[0]))

    header = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError("metadata must map str to str (%r: %r)" % (k, v))
        header["__metadata__"] = dict(metadata)
    blobs, off = [], 0
    for name, t in items:
        b = _to_le_bytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)


def _no_dup_pairs(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError("safetensors: duplicate key %r in header" % k)
        d[k] = v
    return d


def load_safetensors(path):
    """Read a safetensors file.  Returns (dict name -> torch.Tensor, metadata
    dict; {} when the file has no "__metadata__").  Validates the header the
    way the reference reader does (dtype, shape/size agreement, offsets
    covering the buffer contiguously)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError("safetensors: file too short")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise ValueError("safetensors: bad header length %d" % n)
    hb = data[8:8 + n]
    if not hb.startswith(b"{"):
        raise ValueError("safetensors: header does not start with '{'")
    header = json.loads(hb.decode("utf-8"), object_pairs_hook=_no_dup_pairs)
    if not isinstance(header, dict):
        raise ValueError("safetensors: header is not an object")
    buf = memoryview(data)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise ValueError("safetensors: __metadata__ must map str to str")

    spans, out = [], {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
            raise ValueError("safetensors: bad entry for %r" % name)
        dt = info.get("dtype")
        if dt not in SAFETENSORS_DTYPES:
            raise ValueError("safetensors: %r: unsupported dtype %r" % (name, dt))
        shape, offs = info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) for o in offs)):
            raise ValueError("safetensors: %r: bad shape or data_offsets" % name)
        tdt, size = SAFETENSORS_DTYPES[dt]
        nel = 1
        for d in shape:
            nel *= d
        b, e = offs
        if b < 0 or e < b or e > len(buf) or e - b != nel * size:
            raise ValueError("safetensors: %r: data_offsets %s do not match shape %s %s"
                             % (name, offs, shape, dt))
        spans.append((b, e, name))
        raw = bytearray(buf[b:e])
        if tdt == torch.bfloat16:
            a = np.frombuffer(raw, dtype="<i2").astype(np.int16)
            t = torch.from_numpy(a.copy()).view(torch.bfloat16)
        elif tdt == torch.bool:
            a = np.frombuffer(raw, dtype=np.uint8)
            if a.size and a.max() > 1:
                raise ValueError("safetensors: %r: BOOL value not 0/1" % name)
            t = torch.from_numpy(a.astype(np.bool_))
        else:
            npdt = np.dtype(str(tdt).replace("torch.", "")).newbyteorder("<")
            a = np.frombuffer(raw, dtype=npdt).astype(npdt.newbyteorder("="))
            t = torch.from_numpy(a.copy())
        out[name] = t.reshape(shape)
    spans.sort()
    pos = 0
    for b, e, name in spans:
        if b != pos:
            raise ValueError("safetensors: %r: data not contiguous (starts at %d, expected %d)"
                             % (name, b, pos))
        pos = e
    if pos != len(buf):
        raise ValueError("safetensors: %d trailing bytes not covered by any tensor"
                         % (len(buf) - pos))
    return out, meta


# --------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)
# --------------------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


# edgetrain's shuffle (src/core/rng.c): SplitMix64's finaliser over counters
_M64 = (1 << 64) - 1


def _mix64(z):
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & _M64
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & _M64
    return z ^ (z >> 31)


def et_shuffle(seed, epoch, n):
    """The permutation edgetrain's `train --seed SEED` uses in epoch `epoch`
    (0-based) of n images: et_shuffle(seed, epoch, n, perm), a Fisher-Yates
    shuffle drawing et_rand64(seed, (ET_STREAM_SHUFFLE << 48) ^ epoch, i)."""
    stream = (2 << 48) ^ epoch
    prefix = _mix64(_mix64((seed + 0x9e3779b97f4a7c15) & _M64) ^ ((stream * 0xd1b54a32d192ed03) & _M64))
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        j = _mix64(prefix ^ ((i + 0x632be59bd9b4e019) & _M64)) % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def load_idx(path):
    """Read an IDX file (gzipped or plain, detected by magic) into a numpy
    array of its shape; ubyte data (all of MNIST/Fashion-MNIST) gives uint8."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise ValueError("%s: not an IDX file" % path)
    ndim = data[3]
    dims = struct.unpack(">%dI" % ndim, data[4:4 + 4 * ndim])
    dt = np.dtype(_IDX_TYPES[data[2]])
    n = 1
    for d in dims:
        n *= d
    start = 4 + 4 * ndim
    if len(data) - start != n * dt.itemsize:
        raise ValueError("%s: size mismatch (%d bytes for shape %s)"
                         % (path, len(data) - start, dims))
    a = np.frombuffer(data, dtype=dt, count=n, offset=start)
    return a.astype(dt.newbyteorder("=")).reshape(dims)
