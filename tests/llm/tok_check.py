#!/usr/bin/env python3
"""Independent references for tests/llm/test_tokenizer.c, computed when the test runs.

  tok_check.py split PRE...   byte lengths of the pre-tokens of each line of tok_corpus.txt and
                              tok_corpus_split.txt, by the pre-tokenizer's published regexes
                              run with Python's `regex`; one block of lines per PRE, in order
  tok_check.py spm DIR        trains a small SentencePiece BPE model on the corpus, exports it to
                              DIR/spm.gguf (gguf package) and prints the ids sentencepiece itself
                              gives for each corpus line
  tok_check.py spm DIR noprefix   the same without the space SentencePiece puts before a text
                              (Gemma's kind), written to DIR/spm-noprefix.gguf
Exit code 77 when a needed Python package is missing (the C test then skips)."""
import os
import sys

from tok_fixtures import HERE, corpus_lines, unescape

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
          r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
         r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN35 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|"""
          r""" ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
MINICPM5 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+|"""
            r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
SEED_CODER = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}|"""
              r""" ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+""")
BAILINGMOE = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}|"""
              r""" ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")
JAIS2 = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"""
         r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s{512}(?!\S)|\s{256}(?!\S)|\s{128}(?!\S)|"""
         r"""\s{64}(?!\S)|\s{32}(?!\S)|\s{16}(?!\S)|\s{8}(?!\S)|\s{4}(?!\S)|\s{1,2}(?!\S)|\s{1}""")
GPT4O = (r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"""
         r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
         r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"""
         r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"""
         r"""\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
TEKKEN = (r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"""
          r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|"""
          r"""\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
# Kimi K2 (tokenization_kimi.py): class intersections (&&) need the regex module's version 1.
KIMI_K2 = "(?V1)" + "|".join([
    r"""[\p{Han}]+""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"""
    r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+"""
    r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""", r""" ?[^\s\p{L}\p{N}]+[\r\n]*""", r"""\s*[\r\n]+""", r"""\s+(?!\S)""",
    r"""\s+"""])
DEEPSEEK_V3 = [r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+",
               r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|"""
               r"""[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|"""
               r"""\s*[\r\n]+|\s+(?!\S)|\s+"""]
DEEPSEEK_LLM = [r"[\r\n]",
                r"\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-Ჺ"
                r"Ჽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-ώᾀ-ᾴᾶ-ᾼιῂ-ῄῆ-ῌῐ-ΐῖ-Ίῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝ"
                r"ℤΩℨK-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻"
                r"𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
                r"\s?[!-/:-~！-／：-～‘-‟　-。]+", r"\s+$", r"[一-龥ࠀ-一가-퟿]+",
                r"\p{N}+"]
DEEPSEEK_CODER = [r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"]
# BLOOM's pattern puts a class inside the negated class (Oniguruma): the regex module's version 1.
BLOOM = r"(?V1) ?[^(\s|[.,!?…。，、।۔،])]+"
# Falcon: Punctuation (Unicode's and ASCII's), ByteLevel's GPT-2 regex, Digits, then a Split;
# the digit stages see byte-level text, where only ASCII digits are still digits.
FALCON = [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9]+", r"[0-9][0-9][0-9]"]
# smollm & co.: digits split one by one (a Digits pre-tokenizer), then the GPT-2 byte-level regex.
DIGITS_GPT2 = [r"\p{N}", GPT2]

STAGES = {
    **{n: [GPT2] for n in ("gpt-2", "gpt2", "mpt", "olmo", "phi-2", "jais", "gigachat", "a.x-4.0",
                           "mellum", "exaone4", "trillion", "granite-docling")},
    **{n: DIGITS_GPT2 for n in ("smollm", "starcoder", "refact", "command-r", "codeshell",
                                "exaone", "minerva-7b", "mellum2")},
    **{n: [LLAMA3] for n in ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1",
                             "midm-2.0", "lfm2", "dbrx", "smaug-bpe", "glm4", "chatglm-bpe")},
    "minicpm5": [r"\p{N}{1,3}", MINICPM5], "jais-2": [JAIS2],
    **{n: [QWEN2] for n in ("qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan",
                            "grok-2", "solar-open", "kormo", "f2llmv2")},
    "qwen35": [QWEN35], "seed-coder": [SEED_CODER],
    **{n: [BAILINGMOE] for n in ("bailingmoe", "bailingmoe2", "llada-moe")},
    **{n: [GPT4O] for n in ("gpt-4o", "llama4", "minimax-m2", "kanana2")},
    "tekken": [TEKKEN], "pixtral": [TEKKEN], "kimi-k2": [KIMI_K2],
    **{n: DEEPSEEK_V3 for n in ("deepseek-v3", "hunyuan-dense", "joyai-llm")},
    "deepseek-llm": DEEPSEEK_LLM, "deepseek-coder": DEEPSEEK_CODER,
    **{n: [BLOOM] for n in ("bloom", "gpt3-finnish", "poro-chat")},
    "viking": [BLOOM, r"\p{N}"], "falcon": FALCON,
    # kiln's fallback for unknown names: llama.cpp's default stages
    "default": [r"[\p{P}\$\+<=>\^~\|]+",
                r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)""",
                r"\p{N}+", r"[0-9][0-9][0-9]"],
}


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


def split_lines():
    """The corpus, then the lines only the split check uses (same escapes)."""
    with open(os.path.join(HERE, "tok_corpus_split.txt"), encoding="utf-8") as f:
        return corpus_lines() + [unescape(line.rstrip("\n")) for line in f]


def cmd_split(pres):
    try:
        import regex  # noqa: F401
    except ImportError:
        sys.exit(77)
    lines = split_lines()
    for pre in pres:
        for text in lines:
            print(" ".join(str(len(p.encode("utf-8"))) for p in split(text, STAGES[pre])))


def cmd_spm(outdir, prefix):
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
        normalization_rule_name="identity", add_dummy_prefix=prefix,
        remove_extra_whitespaces=False, split_digits=False, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()
    tokens, scores, types = [], [], []
    for i in range(n):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 1)
    w = gguf.GGUFWriter(os.path.join(outdir, "spm.gguf" if prefix else "spm-noprefix.gguf"),
                        "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_space_prefix(prefix)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    for text in corpus_lines():
        print(" ".join(str(i) for i in sp.encode(text)))


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("split", "spm") or (
            sys.argv[1] == "spm" and not (len(sys.argv) == 3 or (
                len(sys.argv) == 4 and sys.argv[3] == "noprefix"))):
        sys.exit(__doc__)
    if sys.argv[1] == "split":
        for pre in sys.argv[2:]:
            if pre not in STAGES:
                sys.exit("unknown pre-tokenizer " + pre)
        cmd_split(sys.argv[2:])
    else:
        cmd_spm(sys.argv[2], len(sys.argv) == 3)
