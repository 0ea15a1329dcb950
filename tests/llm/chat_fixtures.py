#!/usr/bin/env python3
"""Renders test conversations with the models' own Jinja chat templates and writes the results
to chat_expected.txt beside this script, the reference tests/llm/test_chat.c compares kiln's
built-in templates (and the published ones run through kiln) with. Needs jinja2 (pip install jinja2).

The environment matches the one transformers' apply_chat_template uses (trim_blocks,
lstrip_blocks, raise_exception). The BOS text a template writes at the very start is cut off
and recorded as "bos 1" (kiln's built-ins are compared with the BOS text put back).

File format, one record per line, values escaped with \\n, \\r, \\t and \\\\:
  template NAME JINJA       the model family's published template
  special NAME BOS EOS      the bos_token and eos_token texts it was rendered with
  case NAME TEMPLATE        a conversation; then:
  bos 0|1                   whether the rendering started with the BOS text
  gen 0|1                   add_generation_prompt
  msg ROLE CONTENT          the messages, in order
  expect TEXT               the rendering, BOS cut off
  end
"""
import os
import sys

try:
    import jinja2
    import jinja2.sandbox
except ImportError:
    print("chat_fixtures.py: jinja2 is missing: pip install jinja2", file=sys.stderr)
    sys.exit(77)

# The tokenizer.chat_template of each model family, as published with the models (SmolLM2's
# read from SmolLM2-135M-Instruct's GGUF metadata).
TEMPLATES = {
    "smollm2": (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "llama3": (
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] "
        "| trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
        "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    "llama2": (
        "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
        "{% set system_message = messages[0]['content'] %}{% else %}"
        "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
        "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
        "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
        "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
        "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
        "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
        "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
        "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
        "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
    ),
    "zephyr": (
        "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
        "{{ '<|user|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'system' %}\n"
        "{{ '<|system|>\n' + message['content'] + eos_token }}\n"
        "{% elif message['role'] == 'assistant' %}\n"
        "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n"
        "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
        "{% endfor %}"
    ),
    "gemma": (
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role "
        "not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == "
        "'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must "
        "alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == "
        "'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + "
        "'<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}"
        "{{'<start_of_turn>model\n'}}{% endif %}"
    ),
}

SPECIAL = {  # bos_token, eos_token
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "chatml": ("<|endoftext|>", "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|end_of_text|>"),
    "llama2": ("<s>", "</s>"),
    "zephyr": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
}

S, U, A = "system", "user", "assistant"
# Contents with the whitespace the templates treat differently: leading and trailing spaces
# and newlines, tabs, non-ASCII text and a no-break space (U+00A0, which Python's strip removes).
CONVERSATIONS = {
    "plain": ([(U, "Hello!")], True),
    "system": ([(S, "You are terse."), (U, "What is 2+2?")], True),
    "multi": (
        [(U, "Hi"), (A, "Hello! How can I help?"), (U, "Tell me a joke."), (A, "No.")],
        False,
    ),
    "system_multi": (
        [(S, " Be\tbrief. "), (U, "  first\n"), (A, "\nok "), (U, "second  ")],
        True,
    ),
    "unicode": ([(U, "\u00a0caf\u00e9 \u4f60\u597d\n\n"), (A, "\u3000voil\u00e0\u2003")], True),
    "spaces": ([(U, "\u200bhi\u2028\x1c"), (A, "\r\x85ok\u200b\u202f")], True),
    "empty": ([(U, ""), (A, "")], False),
}


def render(name, messages, gen):
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env.globals["raise_exception"] = raise_exception
    bos, eos = SPECIAL[name]
    mark = "\x00BOS\x00"  # a stand-in no content contains, so a leading BOS is told apart
    text = env.from_string(TEMPLATES[name]).render(
        messages=[{"role": r, "content": c} for r, c in messages],
        add_generation_prompt=gen,
        bos_token=mark,
        eos_token=eos,
    )
    first = text.startswith(mark)
    if first:
        text = text[len(mark):]
    return text.replace(mark, bos), first


def esc(s):
    return (
        s.replace("\\", "\\\\")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )


def main():
    out = ["# written by tests/llm/chat_fixtures.py from the models' Jinja templates; do not edit"]
    for name, tmpl in TEMPLATES.items():
        out.append("template %s %s" % (name, esc(tmpl)))
        out.append("special %s %s %s" % (name, esc(SPECIAL[name][0]), esc(SPECIAL[name][1])))
    for name in TEMPLATES:
        for cname, (messages, gen) in CONVERSATIONS.items():
            if name == "gemma" and messages[0][0] == S:
                continue  # the template refuses system messages
            text, bos = render(name, messages, gen)
            out.append("case %s %s" % (cname, name))
            out.append("bos %d" % bos)
            out.append("gen %d" % gen)
            for role, content in messages:
                out.append("msg %s %s" % (role, esc(content)))
            out.append("expect %s" % esc(text))
            out.append("end")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_expected.txt")
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
