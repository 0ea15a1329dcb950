#!/usr/bin/env python3
"""train_tinygrad.py: the tinygrad peer of `kiln bench train`, one training step of the
Fashion-MNIST CNN on tinygrad's CPU device (generated C, like kiln), timed the same way.

Prints: tinygrad step_ms median <m> min <m> samples/s <s> threads <t>
Knobs: THREADS (2), WARMUP (3), STEPS (10), KILN_DATA (data directory).
--epochs E also trains E epochs over the training set and prints the test accuracy.

The step is one TinyJit function: tinygrad captures its kernels on the second call and replays
them after, so WARMUP must be at least 2 for the timed steps to be replays."""
import argparse
import importlib.metadata
import os
import statistics
import sys
import time

import numpy as np

import fashion_data

THREADS = int(os.environ.get("THREADS", "2"))
ACT = os.environ.get("ACT", "gelu")  # the activation, as `kiln bench train --act`
WARMUP = int(os.environ.get("WARMUP", "3"))
STEPS = int(os.environ.get("STEPS", "10"))
BATCH = fashion_data.BATCH

# tinygrad reads its settings from the environment when it is imported: DEV picks the device,
# NUM_CPU_THREADS the number of CPU worker threads a kernel is split over. (It also reads
# THREADS, as "use threads at all", which any value >= 1 leaves on.)
os.environ["DEV"] = "CPU"
os.environ["NUM_CPU_THREADS"] = str(THREADS)
from tinygrad import Device, Tensor, TinyJit, nn  # noqa: E402
from tinygrad.nn.state import get_parameters  # noqa: E402


def note(msg):
    print(f"tinygrad: {msg}", file=sys.stderr)


def training():
    """Training mode: a context variable in recent tinygrad, Tensor.train() in older ones."""
    if hasattr(Tensor, "train"):
        return Tensor.train()
    from tinygrad import Context
    return Context(TRAINING=1)


# ---- data: bench/fashion_data.py ----------------------------------------------------------
def load_data():
    return fashion_data.load_data(np.int32, note)


# ---- model: the CNN of `kiln train fashion-mnist` ---------------------------------------------
class Model:
    def __init__(self):
        self.c1, self.c2 = nn.Conv2d(1, 32, 5), nn.Conv2d(32, 32, 5)
        self.bn1 = nn.BatchNorm2d(32)
        self.c3, self.c4 = nn.Conv2d(32, 64, 3), nn.Conv2d(64, 64, 3)
        self.bn2 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(576, 10)

    def __call__(self, x):
        act = (lambda t: t.gelu()) if ACT == "gelu" else (lambda t: t.relu())
        x = self.bn1(act(self.c2(act(self.c1(x))))).max_pool2d(2)
        x = self.bn2(act(self.c4(act(self.c3(x))))).max_pool2d(2)
        return self.fc(x.flatten(1))


def make_trainer():
    model = Model()
    opt = nn.optim.Adam(get_parameters(model), lr=1e-3)

    @TinyJit
    def step(x, y):
        with training():
            opt.zero_grad()
            loss = model(x).sparse_categorical_crossentropy(y).backward()
            opt.step()
        return loss.realize()

    return model, step


def batches(n, rng):
    """Index arrays of BATCH samples, over a fresh shuffle of n samples, forever."""
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - BATCH + 1, BATCH):
            yield perm[i:i + BATCH]


def run_step(step, x, y):
    loss = step(Tensor(x), Tensor(y))
    Device[Device.DEFAULT].synchronize()
    return loss


def time_steps(step, tx, ty):
    it = batches(len(tx), np.random.default_rng(1))
    times = []
    for i in range(WARMUP + STEPS):
        idx = next(it)
        t0 = time.perf_counter()
        run_step(step, tx[idx], ty[idx])
        if i >= WARMUP:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def train_epochs(step, tx, ty, epochs):
    it = batches(len(tx), np.random.default_rng(2))
    steps = len(tx) // BATCH
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for _ in range(steps):
            idx = next(it)
            total += run_step(step, tx[idx], ty[idx]).item()
        note(f"epoch {epoch + 1}: loss {total / steps:.4f} ({time.perf_counter() - t0:.1f} s)")


def accuracy(model, vx, vy):
    correct = 0
    for i in range(0, len(vx), 1000):
        pred = model(Tensor(vx[i:i + 1000])).argmax(1).numpy()
        correct += int((pred == vy[i:i + 1000]).sum())
    return correct / len(vx)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=0, help="train E epochs, print test accuracy")
    args = ap.parse_args()
    Tensor.manual_seed(0)
    tx, ty, vx, vy, real = load_data()
    dev = Device[Device.DEFAULT]
    note(f"tinygrad {importlib.metadata.version('tinygrad')}, device {Device.DEFAULT} "
         f"({type(dev.renderer).__name__}), python {sys.executable}")

    _, step = make_trainer()
    times = time_steps(step, tx, ty)
    med = statistics.median(times)
    print(f"tinygrad step_ms median {med:.2f} min {min(times):.2f} "
          f"samples/s {BATCH / med * 1e3:.1f} threads {THREADS}", flush=True)

    if args.epochs > 0:
        model, step = make_trainer()  # fresh: the timed steps are not part of the training
        train_epochs(step, tx, ty, args.epochs)
        acc = accuracy(model, vx, vy)
        print(f"tinygrad test_accuracy {acc:.4f} epochs {args.epochs}"
              f"{'' if real else ' (random data)'}")


if __name__ == "__main__":
    main()
