"""PyTorch as the bench's peer: the same model, weights and batch as ours, timed on request.

Run by bench/torch-peer.ts as a long-lived child (`python3 bench/torch_peer.py`): it reads one JSON
command per line on stdin and answers one JSON line on stdout, so that the node side interleaves
our repeats with PyTorch's (one repeat per command) and the medians come from the same minutes.

Models arrive as a JSON header plus raw little-endian float64/float32 files, in Keras layouts
(activations NHWC, Conv2D kernels HWIO, Dense kernels [in, out]); they are converted once, at
load, to PyTorch's (NCHW, OIHW, Linear [out, in]). Flatten flattens in NHWC order, as Keras does:
the activation is permuted to NHWC before it is flattened. Dropout runs in inference mode
(identity), as our bench cases do. The model is written functionally (F.conv2d, F.linear...) over a
tuple of parameter tensors, so that the same function serves the training step (autograd) and
functorch.jacrev w.r.t. the input or the weights.

Commands (each answers {"ok": true, ...} or {"ok": false, "error": "..."}):
  {"cmd": "hello"}                       -> torch version, threads, functorch availability
  {"cmd": "load", "name", "header"}      -> loads a model + batch (header: path of the JSON header)
  {"cmd": "grads", "name", "out"}        -> loss, and dLoss/dW in Keras layouts written to out/<k>.bin (float64)
  {"cmd": "step", "name", "threads"}     -> ms of one training step (forward, loss, backward; no update)
  {"cmd": "jac", "name", "wrt", "threads", "out"?} -> ms of one jacrev of the model's output w.r.t.
                                            "input" or "weights"; with "out", the Jacobians in Keras
                                            layout [B, ...out, ...in] written there (float64)
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

try:
    from functorch import jacrev
except ImportError:  # functorch ships with torch 1.13; without it, the autograd API (vectorized)
    jacrev = None

EPS = 1e-7
DTYPES = {"float64": torch.float64, "float32": torch.float32}
MODELS = {}


def read_tensor(path, shape, dtype):
    with open(path, "rb") as f:
        buf = bytearray(f.read())
    t = torch.frombuffer(buf, dtype=DTYPES[dtype])
    n = 1
    for d in shape:
        n *= d
    if t.numel() != n:
        raise ValueError(f"{path}: expected {n} {dtype} values for shape {shape}, received {t.numel()}")
    return t.reshape(shape).clone()


def write_tensor(path, t):
    with open(path, "wb") as f:
        f.write(t.detach().to(torch.float64).contiguous().numpy().tobytes())


def act(name, h):
    if name in (None, "linear"):
        return h
    if name == "relu":
        return F.relu(h)
    if name == "sigmoid":
        return torch.sigmoid(h)
    if name == "tanh":
        return torch.tanh(h)
    raise ValueError(f"torch peer: activation {name!r} is not supported (expected linear, relu, sigmoid, tanh)")


def pair(v):
    return tuple(v) if isinstance(v, (list, tuple)) else (v, v)


class Model:
    """A Keras-described Sequential, run functionally in NCHW over a tuple of parameters."""

    def __init__(self, header):
        self.dtype = DTYPES[header["dtype"]]
        self.layers = header["layers"]
        self.loss = header.get("loss")
        params = []
        self.slots = []  # per layer: indices of its parameters in `params`
        for layer in self.layers:
            idx = []
            for w in layer["weights"]:
                t = read_tensor(w["file"], w["shape"], header["dtype"])
                if layer["class"] == "Conv2D" and w["name"] == "kernel":
                    t = t.permute(3, 2, 0, 1)  # HWIO -> OIHW
                elif layer["class"] == "Dense" and w["name"] == "kernel":
                    t = t.t()  # [in, out] -> [out, in]
                idx.append(len(params))
                params.append(t.contiguous())
            self.slots.append(idx)
        self.params = tuple(params)
        x = read_tensor(header["x"]["file"], header["x"]["shape"], header["dtype"])
        self.x = x.permute(0, 3, 1, 2).contiguous() if x.dim() == 4 else x  # NHWC -> NCHW, once
        self.y = read_tensor(header["y"]["file"], header["y"]["shape"], header["dtype"]) if header.get("y") else None

    def forward(self, params, x):
        h = x
        for layer, idx in zip(self.layers, self.slots):
            c, cfg = layer["class"], layer["config"]
            if c == "Conv2D":
                pad = cfg.get("padding", "valid")
                if pad not in ("valid", "same"):
                    raise ValueError(f"torch peer: Conv2D padding {pad!r} is not supported")
                h = F.conv2d(h, params[idx[0]], params[idx[1]] if len(idx) > 1 else None, stride=pair(cfg.get("strides", 1)), padding=pad)
                h = act(cfg.get("activation"), h)
            elif c == "Dense":
                h = act(cfg.get("activation"), F.linear(h, params[idx[0]], params[idx[1]] if len(idx) > 1 else None))
            elif c == "Activation":
                h = act(cfg["activation"], h)
            elif c == "MaxPooling2D":
                pool = pair(cfg.get("pool_size", 2))
                h = F.max_pool2d(h, pool, stride=pair(cfg.get("strides") or pool))
            elif c == "Flatten":
                h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1) if h.dim() == 4 else h.reshape(h.shape[0], -1)
            elif c == "Dropout":
                pass  # inference mode: identity
            else:
                raise ValueError(f"torch peer: layer {c} is not supported")
        return h

    def loss_of(self, out):
        if self.loss == "binary_crossentropy":
            q = out.clamp(EPS, 1 - EPS)
            return -(self.y * torch.log(q) + (1 - self.y) * torch.log(1 - q)).mean(dim=-1).mean()
        if self.loss == "mse":
            return ((out - self.y) ** 2).mean(dim=-1).mean()
        raise ValueError(f"torch peer: loss {self.loss!r} is not supported")

    def step(self):
        params = [p.detach().requires_grad_(True) for p in self.params]
        loss = self.loss_of(self.forward(params, self.x))
        grads = torch.autograd.grad(loss, params)
        return loss, grads

    def keras_grads(self):
        """dLoss/dW in Keras layouts, per parameter, in Keras order."""
        loss, grads = self.step()
        out = []
        for layer, idx in zip(self.layers, self.slots):
            for w, k in zip(layer["weights"], idx):
                g = grads[k]
                if layer["class"] == "Conv2D" and w["name"] == "kernel":
                    g = g.permute(2, 3, 1, 0)
                elif layer["class"] == "Dense" and w["name"] == "kernel":
                    g = g.t()
                out.append(g)
        return loss, out

    def out_to_keras(self, J, lead):
        """Moves a Jacobian's output axes (NCHW, starting at axis `lead`) to NHWC."""
        if J.dim() >= lead + 4 and self.out_dim == 4:
            perm = list(range(J.dim()))
            perm[lead : lead + 4] = [lead, lead + 2, lead + 3, lead + 1]
            J = J.permute(perm)
        return J

    def jacobian(self, wrt):
        if wrt == "input":
            f = lambda x: self.forward(self.params, x)
            return jacrev(f)(self.x) if jacrev else torch.autograd.functional.jacobian(f, self.x, vectorize=True)
        f = lambda *ps: self.forward(ps, self.x)
        if jacrev:
            return jacrev(f, argnums=tuple(range(len(self.params))))(*self.params)
        return torch.autograd.functional.jacobian(f, self.params, vectorize=True)

    def keras_jacobians(self, wrt):
        """The Jacobians in our layout: [B, ...out, ...in] (input), [B, ...out, ...param] (weights)."""
        out = self.forward(self.params, self.x)
        self.out_dim = out.dim()
        J = self.jacobian(wrt)
        B = self.x.shape[0]
        res = []
        if wrt == "input":
            if B != 1:
                raise ValueError("torch peer: the input Jacobian is compared at batch 1")
            J = J[(slice(None),) * out.dim() + (0,)]  # the one sample's block: [B, ...out, C, H, W]
            J = self.out_to_keras(J, 0)
            if self.x.dim() == 4:
                n = J.dim()
                J = J.permute(list(range(n - 3)) + [n - 2, n - 1, n - 3])  # CHW -> HWC
            res.append(J)
            return res
        for layer, idx in zip(self.layers, self.slots):
            for w, k in zip(layer["weights"], idx):
                Jk = self.out_to_keras(J[k], 0)
                n = Jk.dim()
                if layer["class"] == "Conv2D" and w["name"] == "kernel":
                    Jk = Jk.permute(list(range(n - 4)) + [n - 2, n - 1, n - 3, n - 4])  # OIHW -> HWIO
                elif layer["class"] == "Dense" and w["name"] == "kernel":
                    Jk = Jk.permute(list(range(n - 2)) + [n - 1, n - 2])
                res.append(Jk)
        return res


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def handle(cmd):
    c = cmd["cmd"]
    if "threads" in cmd:
        torch.set_num_threads(int(cmd["threads"]))
    if c == "hello":
        return {"torch": torch.__version__, "threads": torch.get_num_threads(), "jacrev": "functorch.jacrev" if jacrev else "torch.autograd.functional.jacobian(vectorize=True)", "python": sys.version.split()[0], "mkldnn": torch.backends.mkldnn.is_available()}
    m = MODELS.get(cmd.get("name"))
    if c == "load":
        with open(cmd["header"]) as f:
            MODELS[cmd["name"]] = Model(json.load(f))
        return {}
    if m is None:
        raise ValueError(f"torch peer: no model named {cmd.get('name')!r} loaded")
    if c == "grads":
        loss, grads = m.keras_grads()
        files = []
        for k, g in enumerate(grads):
            p = os.path.join(cmd["out"], f"grad{k}.bin")
            write_tensor(p, g)
            files.append({"file": p, "shape": list(g.shape)})
        return {"loss": loss.item(), "grads": files}
    if c == "step":
        return {"ms": timed(m.step)}
    if c == "jac":
        if "out" in cmd:
            js = m.keras_jacobians(cmd["wrt"])
            files = []
            for k, J in enumerate(js):
                p = os.path.join(cmd["out"], f"jac-{cmd['wrt']}{k}.bin")
                write_tensor(p, J)
                files.append({"file": p, "shape": list(J.shape)})
            return {"jacobians": files}
        return {"ms": timed(lambda: m.jacobian(cmd["wrt"]))}
    raise ValueError(f"torch peer: unknown command {c!r}")


def main():
    torch.set_num_threads(1)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            res = {"ok": True, **handle(json.loads(line))}
        except Exception as e:  # the node side reports it and fails loudly
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
