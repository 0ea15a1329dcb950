"""fashion_data.py: the Fashion-MNIST reader both training peers use (gzip IDX files from the
Debian package dataset-fashion-mnist, or KILN_DATA), normalized as kiln normalizes them."""
import gzip
import os

import numpy as np

BATCH = 512
MEAN, STD = 0.2860, 0.3530  # of the training pixels, on the [0,1] scale
DATA_DIR = os.environ.get("KILN_DATA") or "/usr/share/datasets/fashion-mnist"


def read_idx(path, ndim):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(np.int64)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(prefix, label_dtype):
    x = read_idx(os.path.join(DATA_DIR, f"{prefix}-images-idx3-ubyte.gz"), 3)
    y = read_idx(os.path.join(DATA_DIR, f"{prefix}-labels-idx1-ubyte.gz"), 1)
    x = ((x.astype(np.float32) / 255.0 - MEAN) / STD).reshape(-1, 1, 28, 28)
    return x, y.astype(label_dtype)


def load_data(label_dtype, note):
    """(train_x, train_y, test_x, test_y, real): normalized float32 NCHW images and labels;
    random data (and a note saying so) when the dataset is absent."""
    if os.path.exists(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz")):
        tx, ty = load_split("train", label_dtype)
        vx, vy = load_split("t10k", label_dtype)
        note(f"data: Fashion-MNIST from {DATA_DIR} ({len(tx)} train, {len(vx)} test)")
        return tx, ty, vx, vy, True
    note(f"data: Fashion-MNIST not found in {DATA_DIR}; timing on random data "
         "(get it with scripts/fetch-data)")
    rng = np.random.default_rng(0)
    x = ((rng.integers(0, 256, (8 * BATCH, 1, 28, 28)) / 255.0 - MEAN) / STD).astype(np.float32)
    y = rng.integers(0, 10, 8 * BATCH).astype(label_dtype)
    return x, y, x[:BATCH], y[:BATCH], False
