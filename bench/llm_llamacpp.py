#!/usr/bin/env python3
"""llm_llamacpp.py: the llama.cpp peer of `kiln bench llm`, through llama-cpp-python's low-level
API, timed the same way: prompt processing of N token ids (i*7919+13) % n_vocab in one batch, then
N greedy tokens one at a time (argmax of the last logits, ties to the lowest id); one warm-up run,
then R timed runs, each starting from an empty KV cache.

Prints: llama.cpp <version>, the settings, then
        pp<N>: X tok/s (median of R)
        tg<N>: Y tok/s (median of R)
Usage: llm_llamacpp.py -m MODEL.gguf [-p N] [-n N] [--runs R] [--threads T] [--kv f16|f32]
The KV cache is llama.cpp's default f16 unless --kv f32 (kiln keeps it in f32); flash attention
is off (the package's default). Exits 77 when llama_cpp is not importable."""
import argparse
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", required=True, help="GGUF model file")
    ap.add_argument("-p", type=int, default=64, help="prompt tokens (64)")
    ap.add_argument("-n", type=int, default=64, help="generated tokens (64)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs after one warm-up (5)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                    help="n_threads and n_threads_batch (all cores)")
    ap.add_argument("--kv", choices=("f16", "f32"), default="f16", help="KV cache type (f16)")
    a = ap.parse_args()
    if a.p < 1 or a.n < 0 or a.runs < 1 or a.threads < 1:
        ap.error(f"want -p >= 1, -n >= 0, --runs >= 1, --threads >= 1; got -p {a.p} -n {a.n} "
                 f"--runs {a.runs} --threads {a.threads}")
    if not os.path.isfile(a.model):
        print(f"llama.cpp: no model file {a.model}", file=sys.stderr)
        return 1

    try:
        import numpy as np
        import llama_cpp
    except ImportError as e:
        print(f"llama.cpp: llama-cpp-python not importable ({e}); run scripts/setup-bench",
              file=sys.stderr)
        return 77

    kv_type = {"f16": llama_cpp.GGML_TYPE_F16, "f32": llama_cpp.GGML_TYPE_F32}[a.kv]
    n_ctx = a.p + a.n + 1
    llm = llama_cpp.Llama(
        model_path=a.model, n_ctx=n_ctx, n_batch=a.p, n_ubatch=a.p, n_threads=a.threads,
        n_threads_batch=a.threads, n_gpu_layers=0, type_k=kv_type, type_v=kv_type,
        logits_all=False, verbose=False)
    V = llm.n_vocab()
    ids = [(i * 7919 + 13) % V for i in range(a.p)]

    def last_logits():
        # Llama.eval keeps no logits without logits_all; read the context's last output row.
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(V,))

    def run():
        llm.reset()  # n_tokens = 0: the next eval drops every cached position
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        for _ in range(a.n):
            best = int(np.argmax(last_logits()))  # greedy, so every run does the same work
            llm.eval([best])
        t2 = time.perf_counter()
        return a.p / (t1 - t0), (a.n / (t2 - t1) if a.n else 0.0)

    run()  # warm-up
    pp, tg = zip(*(run() for _ in range(a.runs)))
    print(f"llama.cpp {llama_cpp.__version__}: {a.threads} threads, KV cache {a.kv}, "
          f"n_ctx {n_ctx}, n_batch {a.p}, flash attention off")
    print(f"pp{a.p}: {statistics.median(pp):.2f} tok/s (median of {a.runs})")
    print(f"tg{a.n}: {statistics.median(tg):.2f} tok/s (median of {a.runs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
