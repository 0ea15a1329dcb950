#!/usr/bin/env python3
"""train_recipes.py: which optimizer settings reach the Fashion-MNIST targets with the CNN of
`kiln train fashion-mnist`? Trains the PyTorch peer (bench/train_torch.py: same model, batch
512, Adam) for 3 epochs per recipe and prints the test accuracy after each epoch: recipes are
tried there, several seeds at once, before the one chosen gets a full kiln run.

  /usr/bin/python3 bench/train_recipes.py NAME:LR:WARMUP:SCHEDULE:SMOOTHING[:ARCH[:AUG[:EMA[:WD]]]] ...
  e.g. base:1e-3:0:const:0 cos5:5e-3:30:cos:0.1 bnall:1e-2:30:cos:0.1:bnall:flip

SCHEDULE is const, or cos (linear warmup over WARMUP steps, then cosine decay to 0 at the end
of the run, as `kiln train --schedule cosine`); SMOOTHING is the label smoothing of the loss.
ARCH is `base` (the CNN of `kiln train`) or `bnall` (the same convolutions, each followed by
batchnorm before its relu); AUG is `none` or `flip` (random horizontal flips of training
images). EMA (default 0: off) is the decay of an exponential moving average of the weights,
evaluated beside the trained weights; WD (default 0) is AdamW's decoupled weight decay.
AUG may also be `shift` (random moves of up to 2 pixels) or `flipshift`. Optional key=value
fields after those: epochs=N (3), tta=1 (also report the accuracy of the mean logits over each
test image and its mirror; tta=shift: over the image and its four one-pixel shifts), b2=B
(Adam's beta2, 0.999), b1=B (beta1, 0.9), seed=S (42: the torch seed of the initial weights;
the batch order and flips change with it too), act=relu|gelu|silu (the activation), bs=N (the
batch size, 512), pbn=1 (batchnorm statistics recomputed before each evaluation: see
precise_bn), white=1|frozen (conv1 starts as patch-whitening filters: see whiten_init;
frozen: its weights stay there), head=S (the classifier's initial weights times S). SCHEDULE may also be `lin` (linear warmup, then linear decay to 0).
THREADS (default 2) sets the torch threads."""
import math
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("THREADS", "2"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import train_torch as tt  # noqa: E402


def make_act(act):
    if act == "gelu":
        return torch.nn.GELU(approximate="tanh")  # kiln_gelu's form
    return {"relu": torch.nn.ReLU, "silu": torch.nn.SiLU}[act]()


def precise_bn(model, tx, batches=20):
    """Batchnorm running statistics recomputed with the current weights: the plain average of
    the batch statistics over `batches` training batches (instead of the decayed average of
    statistics taken while the weights moved)."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    rng = np.random.default_rng(5)
    with torch.no_grad():
        for _ in range(batches):
            model(torch.from_numpy(tx[rng.choice(len(tx), 512, replace=False)]))
    for m, mom in zip(bns, saved):
        m.momentum = mom


def with_act(model, act):
    """The model with each activation replaced by act."""
    for i, m in enumerate(model):
        if isinstance(m, (torch.nn.ReLU, torch.nn.GELU, torch.nn.SiLU)):
            model[i] = make_act(act)
    return model


def whiten_init(conv, tx, eps=5e-4, samples=5000):
    """conv (1 input channel, k x k, 2m outputs) set to the patch-whitening filters of the
    training images: the m top eigenvectors of the k x k patch covariance, each scaled by
    1/sqrt(eigenvalue + eps), and their negatives; the bias set so each filter's mean output is 0."""
    k, m = conv.kernel_size[0], conv.out_channels // 2
    x = torch.from_numpy(tx[:samples])
    patches = F.unfold(x, k).transpose(1, 2).reshape(-1, k * k).double()
    mean = patches.mean(0)
    cov = torch.cov((patches - mean).T)
    val, vec = torch.linalg.eigh(cov)  # ascending
    val, vec = val.flip(0)[:m], vec.flip(1)[:, :m]
    w = (vec / torch.sqrt(val + eps)).T  # (m, k*k)
    w = torch.cat([w, -w]).float()
    with torch.no_grad():
        conv.weight.copy_(w.reshape(2 * m, 1, k, k))
        if conv.bias is not None:
            conv.bias.copy_(-(w @ mean.float()))


def make_bnall():
    nn = torch.nn

    def block(cin, cout, k):
        return [nn.Conv2d(cin, cout, k, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*block(1, 32, 5), *block(32, 32, 5), nn.MaxPool2d(2),
                         *block(32, 64, 3), *block(64, 64, 3), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(576, 10))


def shifted(xb, rng, pad=2):
    """Each image moved by a random offset of up to pad pixels in x and y (zeros shifted in)."""
    n = len(xb)
    big = np.full((n, 1, 28 + 2 * pad, 28 + 2 * pad), xb.min(), np.float32)
    big[:, :, pad:pad + 28, pad:pad + 28] = xb
    dy, dx = rng.integers(0, 2 * pad + 1, n), rng.integers(0, 2 * pad + 1, n)
    return np.stack([big[i, :, dy[i]:dy[i] + 28, dx[i]:dx[i] + 28] for i in range(n)])


def shift1(x, dy, dx):
    """x moved by (dy, dx) pixels, the background value shifted in."""
    out = torch.full_like(x, float(x.min()))
    h, w = x.shape[2], x.shape[3]
    out[:, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[:, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def accuracy_tta(model, vx, vy, kind="1"):
    """Test accuracy of the mean logits over each image and its horizontal mirror (kind 1), or
    over the image and its four one-pixel shifts (kind shift)."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(vx), 1000):
            x = torch.from_numpy(vx[i:i + 1000])
            if kind == "shift":
                logits = model(x) + sum(model(shift1(x, dy, dx))
                                        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)))
            else:
                logits = model(x) + model(x.flip(3))
            pred = logits.argmax(1).numpy()
            correct += int((pred == vy[i:i + 1000]).sum())
    return correct / len(vx)


def run(name, lr, warm, sched, smoothing, tx, ty, vx, vy, arch="base", aug="none", ema="0",
        wd="0", epochs=3, tta="0", b2="0.999", b1="0.9", seed="42", act="relu", bs="512",
        pbn="0", white="0", head="1"):
    seed = int(seed)
    torch.manual_seed(seed)
    model = with_act(tt.make_model() if arch == "base" else make_bnall(), act)
    if white != "0":
        whiten_init(model[0], tx)
        if white == "frozen":
            model[0].weight.requires_grad_(False)
    if head != "1":  # the classifier's initial weights scaled (0: zero)
        with torch.no_grad():
            model[-1].weight.mul_(float(head))
    flip_rng = np.random.default_rng(3 if seed == 42 else (seed, 3))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=float(wd),
                            betas=(float(b1), float(b2)))
    tt.BATCH = int(bs)
    epochs = int(epochs)
    decay = float(ema)
    avg = torch.optim.swa_utils.AveragedModel(
        model, avg_fn=lambda a, p, n: decay * a + (1 - decay) * p) if decay > 0 else None
    ema_accs, tta_accs = [], []
    steps = len(tx) // tt.BATCH
    total = steps * epochs
    it = tt.batches(len(tx), np.random.default_rng(2 if seed == 42 else (seed, 2)))
    accs, step = [], 0
    for _ in range(epochs):
        model.train()
        for _ in range(steps):
            cur = lr
            if sched in ("cos", "lin"):
                frac = (step - warm) / max(1, total - warm)
                cur = lr * (step + 1) / warm if step < warm else \
                    0.5 * lr * (1 + math.cos(math.pi * frac)) if sched == "cos" else lr * (1 - frac)
            for g in opt.param_groups:
                g["lr"] = cur
            idx = next(it)
            opt.zero_grad()
            xb = tx[idx]
            if "flip" in aug:
                flip = flip_rng.random(len(idx)) < 0.5
                xb = xb.copy()
                xb[flip] = xb[flip][..., ::-1]
            if "shift" in aug:
                xb = shifted(xb, flip_rng)
            loss = F.cross_entropy(model(torch.from_numpy(xb)), torch.from_numpy(ty[idx]),
                                   label_smoothing=smoothing)
            loss.backward()
            opt.step()
            if avg is not None:
                avg.update_parameters(model)
            step += 1
        if pbn != "0":
            precise_bn(model, tx)
        accs.append(tt.accuracy(model, vx, vy))
        if tta != "0":
            tta_accs.append(accuracy_tta(model, vx, vy, tta))
        if avg is not None:  # the averaged weights with the live batchnorm statistics
            for a, b in zip(avg.module.buffers(), model.buffers()):
                a.copy_(b)
            if pbn != "0":  # or with their own
                precise_bn(avg.module, tx)
            ema_accs.append(tt.accuracy(avg.module, vx, vy))
    extra = " | ema " + " ".join(f"{a * 100:.2f}" for a in ema_accs) if ema_accs else ""
    extra += " | tta " + " ".join(f"{a * 100:.2f}" for a in tta_accs) if tta_accs else ""
    print(name, " ".join(f"{a * 100:.2f}" for a in accs) + extra, flush=True)


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    tx, ty, vx, vy, real = tt.load_data()
    if not real:
        sys.exit("train_recipes.py: Fashion-MNIST is needed (scripts/fetch-data)")
    for spec in sys.argv[1:]:
        name, lr, warm, sched, smoothing, *rest = spec.split(":")
        pos = [r for r in rest if "=" not in r]
        kw = dict(r.split("=", 1) for r in rest if "=" in r)
        run(name, float(lr), int(warm), sched, float(smoothing), tx, ty, vx, vy, *pos, **kw)


if __name__ == "__main__":
    main()
