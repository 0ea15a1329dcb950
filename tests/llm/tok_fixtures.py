#!/usr/bin/env python3
"""Writes tests/llm/tok_smollm2.txt: the token ids llama.cpp gives for each line of
tests/llm/tok_corpus.txt with the SmolLM2-135M-Instruct vocabulary, the reference that
tests/llm/test_tokenizer.c compares kiln's tokenizer with.

Usage: tok_fixtures.py MODEL.gguf   (needs: pip install llama-cpp-python)
Corpus lines are escaped: \\n newline, \\t tab, \\r carriage return, \\\\ backslash.
Output: per corpus line two lines, "N ids..." (special tokens not parsed) and "S ids..."
(parsed); then the same for the whole corpus unescaped and joined by newlines ("NA", "SA")."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def unescape(s):
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s):
            out.append({"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}.get(s[i + 1], "\\" + s[i + 1]))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def corpus_lines():
    with open(os.path.join(HERE, "tok_corpus.txt"), encoding="utf-8") as f:
        return [unescape(line.rstrip("\n")) for line in f]


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    import llama_cpp

    llm = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
    lines = corpus_lines()
    out = []
    for text in lines:
        b = text.encode("utf-8")
        for tag, special in (("N", False), ("S", True)):
            ids = llm.tokenize(b, add_bos=False, special=special)
            out.append(tag + "".join(" %d" % i for i in ids))
    whole = "\n".join(lines).encode("utf-8")
    for tag, special in (("NA", False), ("SA", True)):
        ids = llm.tokenize(whole, add_bos=False, special=special)
        out.append(tag + "".join(" %d" % i for i in ids))
    with open(os.path.join(HERE, "tok_smollm2.txt"), "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
