#!/usr/bin/env python3
"""Independent references for tests/llm/test_tokenizer.c, computed when the test runs.

  tok_check.py split PRE      byte lengths of the pre-tokens of each line of tok_corpus.txt, by
                              the pre-tokenizer's published regex run with Python's `regex`
  tok_check.py spm DIR        trains a small SentencePiece BPE model on the corpus, exports it to
                              DIR/spm.gguf (gguf package) and prints the ids sentencepiece itself
                              gives for each corpus line
Exit code 77 when a needed Python package is missing (the C test then skips)."""
import os
import sys

from tok_fixtures import corpus_lines

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
         r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# smollm: digits split one by one (a Digits pre-tokenizer), then the GPT-2 byte-level regex.
STAGES = {"gpt-2": [GPT2], "llama3": [LLAMA3], "qwen2": [QWEN2], "smollm": [r"\p{N}", GPT2]}


def split(text, stages):
    import regex
    pieces = [text]
    for pat in stages:
        rx, out = regex.compile(pat), []
        for p in pieces:
            pos = 0
            for m in rx.finditer(p):
                if m.start() > pos:
                    out.append(p[pos:m.start()])
                out.append(m.group())
                pos = m.end()
            if pos < len(p):
                out.append(p[pos:])
        pieces = out
    return pieces


def cmd_split(pre):
    try:
        import regex  # noqa: F401
    except ImportError:
        sys.exit(77)
    for text in corpus_lines():
        print(" ".join(str(len(p.encode("utf-8"))) for p in split(text, STAGES[pre])))


def cmd_spm(outdir):
    try:
        import sentencepiece as spm
        import gguf
    except ImportError:
        sys.exit(77)
    import io
    lines = [t for t in corpus_lines() if t]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines * 4), model_writer=model, model_type="bpe", vocab_size=700,
        hard_vocab_limit=False, byte_fallback=True, character_coverage=1.0,
        normalization_rule_name="identity", add_dummy_prefix=True,
        remove_extra_whitespaces=False, split_digits=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)
    w = gguf.GGUFWriter(os.path.join(outdir, "spm.gguf"), "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for text in corpus_lines():
        print(" ".join(str(i) for i in sp.encode(text)))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("split", "spm"):
        sys.exit(__doc__)
    if sys.argv[1] == "split" and sys.argv[2] not in STAGES:
        sys.exit("unknown pre-tokenizer " + sys.argv[2])
    (cmd_split if sys.argv[1] == "split" else cmd_spm)(sys.argv[2])
