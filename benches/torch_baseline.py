#!/usr/bin/env python3
"""PyTorch eager baseline for `probescope bench train` on the same GPU.

The same network as the `mnist-convnet` preset (TensorFlow's MNIST tutorial convnet: conv 5x5x32
SAME, ReLU, max-pool 2, conv 5x5x64, ReLU, max-pool 2, fc 512, ReLU, fc 10; He-normal init, zero
biases), the same training (minibatches of 64 from a per-epoch permutation, SGD momentum 0.9,
lr 0.01, L2 5e-4 on the weights), the same pixels ((p - 127.5) / 255; the last 10,000 training
images held out) and the same probe procedure:

* online probes on the 10 taps: per minibatch, running (EMA 0.05) mean and variance
  standardisation, softmax regression with L2 1e-4 on the standardised weights, one Adam step
  (lr 1e-3), the minibatch error and loss read once per step for all probes;
* a converged snapshot: every tap's features on the first N training images and the 10,000 test
  images, standardised with the training mean and standard deviation, each probe fitted by
  full-batch L-BFGS (history 10, strong-Wolfe line search, at most 300 iterations, gradient
  tolerance 1e-5), then its train and test error. probescope also early-stops on a validation
  split; this baseline does not, which only makes it do more iterations, never fewer.

Timings synchronise the GPU before every clock read, after an untimed warm-up. Runs of the two
training loops alternate (rounds), and the medians are printed.

With `--rmsprop-only` it trains `--steps` steps once and times the paper's procedure on a
snapshot of `--probe-samples` images instead (see `rmsprop_snapshot`), the baseline that
`probescope bench train` runs in Rust; `--flush-denormal` sets `torch.set_flush_denormal(True)`.

usage: python3 benches/torch_baseline.py DATA_DIR [--steps 781] [--rounds 3] [--probe-samples 10000]
       [--rmsprop-only [--flush-denormal]]
"""

import argparse
import gzip
import os
import statistics
import struct
import time

import numpy as np
import torch
import torch.nn.functional as F


# The taps of `Net.forward(taps=True)`, in its order: the presets' names for them.
TAPS = ["input", "conv1_preact", "conv1_postact", "pool1", "conv2_preact",
        "conv2_postact", "pool2", "fc1_preact", "fc1_postact", "logits"]


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(data_dir, dev):
    d = os.path.join(data_dir, "mnist")
    tx = idx(os.path.join(d, "train-images-idx3-ubyte.gz"))
    ty = idx(os.path.join(d, "train-labels-idx1-ubyte.gz"))
    ex = idx(os.path.join(d, "t10k-images-idx3-ubyte.gz"))
    ey = idx(os.path.join(d, "t10k-labels-idx1-ubyte.gz"))
    px = lambda a: torch.tensor((a.astype(np.float32) - 127.5) / 255.0, device=dev).unsqueeze(1)
    lab = lambda a: torch.tensor(a.astype(np.int64), device=dev)
    n = len(tx) - 10_000
    return px(tx[:n]), lab(ty[:n]), px(ex), lab(ey)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = torch.nn.Linear(3136, 512)
        self.fc2 = torch.nn.Linear(512, 10)
        for m in [self.conv1, self.conv2, self.fc1]:
            torch.nn.init.kaiming_normal_(m.weight)
            torch.nn.init.zeros_(m.bias)
        torch.nn.init.xavier_normal_(self.fc2.weight)
        torch.nn.init.zeros_(self.fc2.bias)

    def forward(self, x, taps=False):
        c1 = self.conv1(x)
        r1 = F.relu(c1)
        p1 = F.max_pool2d(r1, 2)
        c2 = self.conv2(p1)
        r2 = F.relu(c2)
        p2 = F.max_pool2d(r2, 2)
        f1 = self.fc1(p2.flatten(1))
        r3 = F.relu(f1)
        out = self.fc2(r3)
        if taps:
            return out, [x, c1, r1, p1, c2, r2, p2, f1, r3, out]
        return out


def optimiser(net):
    weights = [p for n, p in net.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in net.named_parameters() if n.endswith("bias")]
    return torch.optim.SGD(
        [{"params": weights, "weight_decay": 5e-4}, {"params": biases, "weight_decay": 0.0}],
        lr=0.01,
        momentum=0.9,
    )


class OnlineProbes:
    """The online probes of probescope's `OnlineProbes`, one per tap."""

    def __init__(self, widths, dev, classes=10):
        self.w = [torch.zeros(d + 1, classes, device=dev, requires_grad=True) for d in widths]
        self.opt = torch.optim.Adam(self.w, lr=1e-3)
        self.mean = [None] * len(widths)
        self.var = [None] * len(widths)
        self.smoothed = [None] * len(widths)

    def update(self, taps, y):
        self.opt.zero_grad(set_to_none=True)
        measured = []
        total = 0.0
        for i, t in enumerate(taps):
            x = t.detach().flatten(1)
            bm = x.mean(0, keepdim=True)
            bv = ((x - bm) ** 2).mean(0, keepdim=True)
            if self.mean[i] is None:
                self.mean[i], self.var[i] = bm, bv
            else:
                self.mean[i] = 0.95 * self.mean[i] + 0.05 * bm
                self.var[i] = 0.95 * self.var[i] + 0.05 * bv
            std = self.var[i].sqrt()
            std = torch.where(std > std.max() * 1e-6 + 1e-30, std, torch.ones_like(std))
            z = torch.cat([(x - self.mean[i]) / std, torch.ones(len(x), 1, device=x.device)], 1)
            logits = z @ self.w[i]
            loss = F.cross_entropy(logits, y)
            total = total + loss + 0.5e-4 * (self.w[i][:-1] ** 2).sum()
            measured.append((logits.argmax(1) != y).float().mean())
            measured.append(loss.detach())
        total.backward()
        self.opt.step()
        vals = torch.stack(measured).tolist()  # one read per step, as probescope does
        for i in range(len(taps)):
            e = vals[2 * i]
            self.smoothed[i] = e if self.smoothed[i] is None else 0.95 * self.smoothed[i] + 0.05 * e
        return vals


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def train(net, opt, x, y, steps, seed, probes=None, sync_every_step=True):
    g = torch.Generator(device="cpu").manual_seed(seed)
    per_epoch = len(x) // 64
    order = None
    sync()
    t0 = time.perf_counter()
    probe_s = 0.0
    for step in range(steps):
        k = step % per_epoch
        if k == 0:
            order = torch.randperm(len(x), generator=g).to(x.device)
        idx = order[k * 64 : (k + 1) * 64]
        xb, yb = x[idx], y[idx]
        out, taps = net(xb, taps=True)
        loss = F.cross_entropy(out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sync_every_step:
            loss.item()
        if probes is not None:
            t = time.perf_counter()
            probes.update(taps, yb)
            probe_s += time.perf_counter() - t
    sync()
    return time.perf_counter() - t0, probe_s, loss.item()


def features(net, x, bs=1000):
    parts = None
    with torch.no_grad():
        for a in range(0, len(x), bs):
            _, taps = net(x[a : a + bs], taps=True)
            taps = [t.flatten(1) for t in taps]
            parts = [[t] for t in taps] if parts is None else [p + [t] for p, t in zip(parts, taps)]
    return [torch.cat(p) for p in parts]


def converged(net, x, y, xt, yt):
    ftr, fte = features(net, x), features(net, xt)
    rows = []
    for name, a, b in zip(TAPS, ftr, fte):
        m, s = a.mean(0, keepdim=True), a.std(0, unbiased=False, keepdim=True)
        s = torch.where(s > s.max() * 1e-6 + 1e-30, s, torch.ones_like(s))
        za, zb = (a - m) / s, (b - m) / s
        w = torch.zeros(a.shape[1], 10, device=a.device, requires_grad=True)
        bias = torch.zeros(10, device=a.device, requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], max_iter=300, history_size=10,
                                line_search_fn="strong_wolfe", tolerance_grad=1e-5,
                                tolerance_change=1e-7)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(za @ w + bias, y) + 0.5e-4 * (w ** 2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            tr = ((za @ w + bias).argmax(1) != y).float().mean().item()
            te = ((zb @ w + bias).argmax(1) != yt).float().mean().item()
        rows.append((name, a.shape[1], tr, te, opt.state[opt._params[0]]["n_iter"]))
    return rows


def rmsprop_snapshot(net, x, y, xt, yt, epochs=8, batch=100, lr=1e-3, seed=0):
    """The paper's procedure on every tap, as `probescope bench train` runs it for its baseline:
    the taps' features on the training images (kept in bfloat16 past 1,024 features, as
    probescope's default keeps them, else f32), standardised with their training mean and
    standard deviation a minibatch at a time, a zero-initialised probe per tap trained by
    minibatch RMSProp (PyTorch's defaults: alpha 0.99, eps 1e-8) for `epochs` passes in a fresh
    random order each, no penalty; then its test error. Returns the rows and the seconds."""
    t0 = time.perf_counter()
    keep = lambda t: t.to(torch.bfloat16) if t.shape[1] > 1024 else t
    with torch.no_grad():
        # Converted a forward batch at a time: the f32 features of 50,000 images would take
        # 17 GB.
        parts = []
        for s in range(0, len(x), 1000):
            _, taps = net(x[s : s + 1000], taps=True)
            parts.append([keep(t.flatten(1)) for t in taps])
        ftr = [torch.cat(p) for p in zip(*parts)]
        del parts
    g = torch.Generator(device="cpu").manual_seed(seed)
    rows = []
    for i, (name, a) in enumerate(zip(TAPS, ftr)):
        n, d = a.shape
        af = lambda r: a[r].float()
        with torch.no_grad():
            m = sum(af(slice(s, s + 4096)).sum(0) for s in range(0, n, 4096)) / n
            v = sum(((af(slice(s, s + 4096)) - m) ** 2).sum(0) for s in range(0, n, 4096)) / n
            inv = 1.0 / v.sqrt().clamp_min(1e-30)
        w = torch.zeros(d, 10, requires_grad=True)
        b = torch.zeros(10, requires_grad=True)
        opt = torch.optim.RMSprop([w, b], lr=lr)
        for _ in range(epochs):
            order = torch.randperm(n, generator=g)
            for s in range(0, n, batch):
                idx = order[s : s + batch]
                z = (a[idx].float() - m) * inv
                loss = F.cross_entropy(z @ w + b, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        ftr[i] = None
        with torch.no_grad():
            tr = sum(((((af(slice(s, s + 4096)) - m) * inv) @ w + b).argmax(1)
                      != y[s : s + 4096]).sum().item() for s in range(0, n, 4096)) / n
            rows.append((name, d, tr, (w, b, m, inv)))
    # The test images a forward batch at a time, every probe scored on each.
    wrong = [0] * len(rows)
    with torch.no_grad():
        for s in range(0, len(xt), 1000):
            _, taps = net(xt[s : s + 1000], taps=True)
            for i, ((_, _, _, (w, b, m, inv)), t) in enumerate(zip(rows, taps)):
                lg = ((t.flatten(1) - m) * inv) @ w + b
                wrong[i] += (lg.argmax(1) != yt[s : s + 1000]).sum().item()
    out = [(name, d, tr, e / len(xt)) for (name, d, tr, _), e in zip(rows, wrong)]
    return out, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir")
    ap.add_argument("--steps", type=int, default=781)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probe-samples", type=int, default=10_000)
    ap.add_argument("--rmsprop-only", action="store_true",
                    help="only train --steps steps, then time the paper's RMSProp procedure on "
                    "a snapshot of --probe-samples images (probescope's bench train baseline)")
    ap.add_argument("--flush-denormal", action="store_true",
                    help="torch.set_flush_denormal(True): subnormal numbers count as 0 (on "
                    "Intel CPUs they take a microcode assist in every product)")
    a = ap.parse_args()
    if a.flush_denormal:
        torch.set_flush_denormal(True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x, y, xt, yt = load(a.data_dir, dev)
    if a.rmsprop_only:
        torch.manual_seed(0)
        net = Net().to(dev)
        train(net, optimiser(net), x, y, a.steps, 0)
        n = a.probe_samples
        rows, secs = rmsprop_snapshot(net, x[:n], y[:n], xt, yt)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, flush_denormal "
              f"{a.flush_denormal}: the paper's RMSProp procedure (8 epochs, batch 100, lr 1e-3) "
              f"on a {a.steps}-step model's snapshot, {n} train / {len(xt)} test samples: "
              f"{secs:.1f} s")
        print(f"  {'probe':<15} {'features':>8} {'train err':>10} {'test err':>10}")
        for name, d, tr, te in rows:
            print(f"  {name:<15} {d:>8} {tr:>10.4f} {te:>10.4f}")
        return
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {name}; "
          f"cudnn {torch.backends.cudnn.version()}, defaults (cudnn.benchmark "
          f"{torch.backends.cudnn.benchmark}, conv tf32 {torch.backends.cudnn.allow_tf32}, "
          f"matmul tf32 {torch.backends.cuda.matmul.allow_tf32})")
    torch.manual_seed(0)
    widths = [784, 25088, 25088, 6272, 12544, 12544, 3136, 512, 512, 10]
    # Warm-up: kernels, cuDNN heuristics, cuBLAS handles.
    net = Net().to(dev)
    train(net, optimiser(net), x, y, 20, 1)
    train(net, optimiser(net), x, y, 20, 1, OnlineProbes(widths, dev))
    runs = {"plain, no sync": [], "plain, loss.item() each step": [], "with probes": []}
    probe_share = []
    trained = None
    for r in range(a.rounds):
        kinds = list(runs)
        if r % 2:
            kinds.reverse()
        for kind in kinds:
            torch.manual_seed(0)
            net = Net().to(dev)
            opt = optimiser(net)
            if kind == "with probes":
                t, p, _ = train(net, opt, x, y, a.steps, 0, OnlineProbes(widths, dev))
                probe_share.append(p / t)
                trained = net
            else:
                t, _, _ = train(net, opt, x, y, a.steps, 0,
                                sync_every_step=kind != "plain, no sync")
            runs[kind].append(t)
    print(f"{a.steps} training steps each run, {a.rounds} rounds in alternating order (medians)")
    for kind, ts in runs.items():
        t = statistics.median(ts)
        print(f"  {kind:<30} {1e3 * t / a.steps:8.2f} ms/step, {t * 781 / a.steps:7.2f} s/epoch")
    print(f"  probe updates: {100 * statistics.median(probe_share):.1f}% of a step with probes")
    n = a.probe_samples
    sync()
    t0 = time.perf_counter()
    rows = converged(trained, x[:n], y[:n], xt, yt)
    sync()
    print(f"converged snapshot, 10 probes on {n} train / {len(xt)} test samples: "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"  {'probe':<15} {'features':>8} {'train err':>10} {'test err':>10} {'iters':>6}")
    for name, d, tr, te, it in rows:
        print(f"  {name:<15} {d:>8} {tr:>10.4f} {te:>10.4f} {it:>6}")


if __name__ == "__main__":
    main()
