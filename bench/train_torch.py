#!/usr/bin/env python3
"""train_torch.py: the PyTorch peer of `kiln bench train`, one training step of the Fashion-MNIST
CNN on the CPU, timed the same way (warm-up steps, then timed steps, median and min).

Prints: torch step_ms median <m> min <m> samples/s <s> threads <t>
Knobs: THREADS (2), WARMUP (3), STEPS (10), ACT (gelu or relu), KILN_DATA (data directory).
--epochs E also trains E epochs over the training set and prints the test accuracy."""
import argparse
import os
import statistics
import sys
import time

import numpy as np

import fashion_data

THREADS = int(os.environ.get("THREADS", "2"))
WARMUP = int(os.environ.get("WARMUP", "3"))
STEPS = int(os.environ.get("STEPS", "10"))
BATCH = fashion_data.BATCH
ACT = os.environ.get("ACT", "gelu")  # the activation, as `kiln bench train --act`

# Set before torch starts its thread pools.
os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def note(msg):
    print(f"torch: {msg}", file=sys.stderr)


# ---- data: bench/fashion_data.py ----------------------------------------------------------
def load_data():
    return fashion_data.load_data(np.int64, note)


# ---- model: the CNN of `kiln train fashion-mnist` ---------------------------------------------
def make_model():
    def act():  # kiln_gelu is the tanh form
        return nn.GELU(approximate="tanh") if ACT == "gelu" else nn.ReLU()
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), act(), nn.Conv2d(32, 32, 5), act(),
        nn.BatchNorm2d(32), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), act(), nn.Conv2d(64, 64, 3), act(),
        nn.BatchNorm2d(64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(576, 10))


def train_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def batches(n, rng):
    """Index arrays of BATCH samples, over a fresh shuffle of n samples, forever."""
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - BATCH + 1, BATCH):
            yield perm[i:i + BATCH]


def time_steps(model, opt, tx, ty):
    model.train()
    it = batches(len(tx), np.random.default_rng(1))
    times = []
    for step in range(WARMUP + STEPS):
        idx = next(it)
        t0 = time.perf_counter()
        train_step(model, opt, torch.from_numpy(tx[idx]), torch.from_numpy(ty[idx]))
        if step >= WARMUP:
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def train_epochs(model, opt, tx, ty, epochs):
    model.train()
    it = batches(len(tx), np.random.default_rng(2))
    steps = len(tx) // BATCH
    for epoch in range(epochs):
        t0, total = time.perf_counter(), 0.0
        for _ in range(steps):
            idx = next(it)
            total += train_step(model, opt, torch.from_numpy(tx[idx]),
                                torch.from_numpy(ty[idx])).item()
        note(f"epoch {epoch + 1}: loss {total / steps:.4f} ({time.perf_counter() - t0:.1f} s)")


def accuracy(model, vx, vy):
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(vx), 1000):
            pred = model(torch.from_numpy(vx[i:i + 1000])).argmax(1).numpy()
            correct += int((pred == vy[i:i + 1000]).sum())
    return correct / len(vx)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=0, help="train E epochs, print test accuracy")
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    tx, ty, vx, vy, real = load_data()
    note(f"torch {torch.__version__}, python {sys.executable}")

    model = make_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = time_steps(model, opt, tx, ty)
    med = statistics.median(times)
    print(f"torch step_ms median {med:.2f} min {min(times):.2f} "
          f"samples/s {BATCH / med * 1e3:.1f} threads {THREADS}", flush=True)

    if args.epochs > 0:
        model = make_model()  # a fresh model: the timed steps are not part of the training
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        train_epochs(model, opt, tx, ty, args.epochs)
        acc = accuracy(model, vx, vy)
        print(f"torch test_accuracy {acc:.4f} epochs {args.epochs}"
              f"{'' if real else ' (random data)'}")


if __name__ == "__main__":
    main()
