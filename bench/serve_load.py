#!/usr/bin/env python3
"""serve_load.py — load generator for OpenAI-compatible servers (kiln serve, llama-server).

Throughput mode (default): C client threads each send R streamed requests, one after another,
each with its own prompt, greedy (temperature 0), max_tokens M; prints the aggregate generated
tokens/s (all completion tokens over the wall time from the first request sent to the last
finished), the median and p90 time to first token, and totals. --runs N repeats it with fresh
prompts and prints each run and then the medians.

TTFT mode (--ttft): one prompt of about --prompt-tokens tokens of plain text (default 500) sent
to /v1/completions with max_tokens 1, --runs times, each with another prefix and sentence order
so no cached prefix helps; prints the median time to the first generated token and the prompt's
real length (usage.prompt_tokens).

Prompts depend only on --tag and the request's index, so two servers given the same arguments
get the same prompts; give every invocation against one server its own --tag (a server that
caches prompts must not see one twice). Tokens are counted from the usage field (requested with
stream_options.include_usage) when the server sends it, else as the content chunks; the output
says which ("counted usage" or "counted chunks"). Standard library only.

Output, one line each (key value pairs, easy to parse):
  run 1 clients 4 requests 8 tokens 512 wall_s 9.81 aggregate_tok_s 52.2 ttft_ms_median ...
  clients 4 runs 3 aggregate_tok_s 52.3 ttft_ms_median 120 ... counted usage   (medians)
  ttft prompt_tokens 497 prompt_tokens_range 491-503 words 429 runs 5 ttft_ms_median 812 ttft_ms_min 790 ttft_ms_max 850
"""
import argparse
import http.client
import json
import statistics
import sys
import threading
import time
import urllib.parse

TOPICS = [
    "a lighthouse keeper who finds a message in a bottle",
    "the history of the bicycle",
    "how bread rises",
    "a robot learning to paint",
    "why the sky is blue",
    "a journey across a desert on a camel",
    "the life cycle of a star",
    "a village that forgot how to sing",
    "how a bill becomes a law",
    "a cat who runs a small bookshop",
    "the invention of the printing press",
    "a storm at sea seen from a small boat",
    "how bees make honey",
    "a detective who solves crimes with smells",
    "the water cycle",
    "a garden that grows at night",
    "how computers store numbers",
    "a friendship between a whale and a seagull",
    "the building of a cathedral",
    "a winter in a mountain cabin",
    "how volcanoes form",
    "a baker who opens a shop on the moon",
    "the migration of birds",
    "a clockmaker's last clock",
    "how maps are made",
    "a child who can talk to trees",
    "the first train across a continent",
    "a library that is open only at midnight",
    "how the heart pumps blood",
    "a chess game between two old friends",
    "the discovery of penicillin",
    "a fox who wants to fly",
]

# Plain sentences for the long TTFT prompt; a run starts at its own offset, so two runs share
# no long prefix.
SENTENCES = [
    "The river ran slowly past the old mill, carrying leaves and small branches toward the sea.",
    "Every morning the baker lit the ovens before the sun came up over the hills.",
    "Scientists measure the distance to nearby stars by watching how they shift across the sky.",
    "The committee met on Tuesday to discuss the budget for the new school building.",
    "A good map shows not only roads and rivers but also the shape of the land itself.",
    "In the spring the farmers plant wheat, and in late summer they bring in the harvest.",
    "The museum keeps its oldest books in a cool dark room where the air is kept dry.",
    "Trains once carried most of the mail between the cities of the north and the south.",
    "She learned to play the violin from her grandmother, who had played in an orchestra.",
    "Most of the water on the planet is salt water, found in the oceans and seas.",
    "The engineers tested the bridge with heavy trucks before it was opened to the public.",
    "On clear nights the villagers could see the lights of the harbor across the bay.",
    "A healthy forest has trees of many ages, from young saplings to ancient giants.",
    "The market sold apples, pears, onions, cheese, fresh fish and warm loaves of bread.",
    "He wrote long letters to his brother, describing the weather and the people he met.",
    "Copper is a good conductor of electricity, which is why it is used in most wires.",
    "The children built a small boat from wood and sailed it on the pond in the park.",
    "During the long winter the roads were closed and the town relied on its own stores.",
    "An old clock in the tower struck the hours, and everyone in the square looked up.",
    "The recipe calls for two cups of flour, one egg, a pinch of salt and some milk.",
    "Birds that migrate often travel thousands of miles to reach their winter homes.",
    "The new library has quiet rooms for study and a large hall for public lectures.",
    "Mountains slowly wear down as wind, rain and ice break the rock into smaller pieces.",
    "The captain checked the charts carefully before steering the ship into the narrow strait.",
    "Many early computers filled entire rooms and used thousands of glass vacuum tubes.",
    "The garden was full of roses, tulips and tall sunflowers that followed the sun.",
    "A careful reader notices how an author uses small details to build a larger picture.",
    "The festival lasted three days, with music in the streets and food from every region.",
    "Rain fell steadily all afternoon, filling the gutters and darkening the stone walls.",
    "The teacher asked each student to describe a place that was important to them.",
]


def chat_prompt(tag, k):
    return "(%s.%d) Write a long, detailed story about %s." % (tag, k, TOPICS[k % len(TOPICS)])


def long_prompt(tag, run, words):
    """About `words` words of plain text, its prefix and sentence order unique to (tag, run)."""
    out = ["Note %s-%d." % (tag, run)]
    n, i = 1, (run * 7) % len(SENTENCES)
    while n < words:
        s = SENTENCES[i % len(SENTENCES)]
        out.append(s)
        n += len(s.split())
        i += 1
    text = " ".join(out)
    return " ".join(text.split()[:words]) + "\n\nSummarize the text above in one sentence."


class Result:
    def __init__(self):
        self.ttft = None  # seconds from sending to the first content token
        self.total = None  # seconds from sending to the end of the stream
        self.tokens = 0  # completion tokens (usage, else content chunks)
        self.prompt_tokens = None
        self.counted = "chunks"
        self.error = None


def stream_request(url, path, body, timeout):
    """Sends one streamed request; returns a Result. Never raises for server errors."""
    r = Result()
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    data = json.dumps(body).encode()
    t0 = time.perf_counter()
    try:
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            r.error = "HTTP %d: %s" % (resp.status, resp.read(300).decode("utf-8", "replace"))
            return r
        chunks = 0
        usage = None
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                break
            ev = json.loads(payload)
            if ev.get("usage"):
                usage = ev["usage"]
            for ch in ev.get("choices") or []:
                text = ch.get("text")
                if text is None:
                    text = (ch.get("delta") or {}).get("content")
                if text:
                    chunks += 1
                    if r.ttft is None:
                        r.ttft = time.perf_counter() - t0
        r.total = time.perf_counter() - t0
        if r.ttft is None:  # no visible text (e.g. one special token): the end is the first token
            r.ttft = r.total
        if usage and usage.get("completion_tokens") is not None:
            r.tokens, r.counted = int(usage["completion_tokens"]), "usage"
            r.prompt_tokens = usage.get("prompt_tokens")
        else:
            r.tokens = chunks
    except (OSError, http.client.HTTPException, ValueError) as e:
        r.error = "%s: %s" % (type(e).__name__, e)
    finally:
        conn.close()
    return r


def request_body(endpoint, prompt, max_tokens):
    body = {
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    return body


def path_of(endpoint):
    return "/v1/chat/completions" if endpoint == "chat" else "/v1/completions"


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def load_run(a, tag):
    """C threads x R requests; returns a dict of the run's figures."""
    results = [[None] * a.requests for _ in range(a.clients)]

    def client(i):
        for j in range(a.requests):
            k = i * a.requests + j
            body = request_body(a.endpoint, chat_prompt(tag, k), a.max_tokens)
            results[i][j] = stream_request(a.url, path_of(a.endpoint), body, a.timeout)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(a.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    flat = [r for row in results for r in row]
    errors = [r.error for r in flat if r.error]
    if errors:
        sys.exit("serve_load: %d of %d requests failed; first: %s" % (len(errors), len(flat), errors[0]))
    tokens = sum(r.tokens for r in flat)
    ttfts = [r.ttft * 1e3 for r in flat]
    ptoks = [r.prompt_tokens for r in flat if r.prompt_tokens is not None]
    return {
        "requests": len(flat),
        "tokens": tokens,
        "wall_s": wall,
        "aggregate_tok_s": tokens / wall,
        "ttft_ms_median": statistics.median(ttfts),
        "ttft_ms_p90": pct(ttfts, 0.9),
        "tokens_per_request": tokens / len(flat),
        "prompt_tokens_mean": statistics.mean(ptoks) if ptoks else float("nan"),
        "counted": "usage" if all(r.counted == "usage" for r in flat) else "chunks",
    }


def fmt(d, keys):
    out = []
    for k in keys:
        v = d[k]
        out.append("%s %s" % (k, ("%.2f" % v if v < 100 else "%.1f" % v) if isinstance(v, float) else v))
    return " ".join(out)


def throughput(a):
    keys = ["requests", "tokens", "wall_s", "aggregate_tok_s", "ttft_ms_median", "ttft_ms_p90",
            "tokens_per_request", "prompt_tokens_mean"]
    runs = []
    for r in range(a.runs):
        d = load_run(a, "%s.%d" % (a.tag, r))
        runs.append(d)
        print("run %d clients %d %s counted %s" % (r + 1, a.clients, fmt(d, keys), d["counted"]), flush=True)
    med = {k: statistics.median(d[k] for d in runs) for k in keys}
    counted = "usage" if all(d["counted"] == "usage" for d in runs) else "chunks"
    print("clients %d runs %d %s counted %s" % (a.clients, a.runs, fmt(med, keys[1:]), counted), flush=True)


def ttft(a):
    words = a.prompt_words
    if not words:  # calibrate: about 0.75 words a token for English, then scale by the real count
        words = int(a.prompt_tokens * 0.75)
        for i in range(2):
            r = stream_request(a.url, "/v1/completions",
                               request_body("completion", long_prompt(a.tag + "-cal", i, words), 1), a.timeout)
            if r.error or not r.prompt_tokens:
                sys.exit("serve_load: calibration failed: %s" % (r.error or "no usage.prompt_tokens"))
            words = max(1, round(words * a.prompt_tokens / r.prompt_tokens))
    times, ptoks = [], []
    for run in range(a.runs):
        body = request_body("completion", long_prompt(a.tag, run, words), 1)
        r = stream_request(a.url, "/v1/completions", body, a.timeout)
        if r.error:
            sys.exit("serve_load: TTFT request failed: %s" % r.error)
        times.append(r.ttft * 1e3)
        ptoks.append(r.prompt_tokens)
        print("run %d ttft_ms %.1f prompt_tokens %s" % (run + 1, r.ttft * 1e3, r.prompt_tokens), flush=True)
    pt = [p for p in ptoks if p is not None]
    print("ttft prompt_tokens %s prompt_tokens_range %s words %d runs %d ttft_ms_median %.1f ttft_ms_min %.1f"
          " ttft_ms_max %.1f" % (round(statistics.median(pt)) if pt else "-",
                                 "%d-%d" % (min(pt), max(pt)) if pt else "-", words, a.runs,
                                 statistics.median(times), min(times), max(times)), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of the server")
    p.add_argument("--endpoint", choices=["chat", "completion"], default="chat",
                   help="throughput mode: /v1/chat/completions or /v1/completions")
    p.add_argument("-c", "--clients", type=int, default=4, help="concurrent clients")
    p.add_argument("-r", "--requests", type=int, default=2, help="requests per client")
    p.add_argument("-m", "--max-tokens", type=int, default=64)
    p.add_argument("--runs", type=int, default=1, help="repeats (fresh prompts each); medians")
    p.add_argument("--tag", default="t", help="makes the prompts unique to this invocation")
    p.add_argument("--ttft", action="store_true", help="TTFT mode: one long prompt, max_tokens 1")
    p.add_argument("--prompt-tokens", type=int, default=500, help="TTFT mode: prompt length target")
    p.add_argument("--prompt-words", type=int, default=0,
                   help="TTFT mode: prompt length in words (default: calibrate to --prompt-tokens)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per request")
    a = p.parse_args()
    for name in ("clients", "requests", "max_tokens", "runs", "prompt_tokens"):
        if getattr(a, name) < 1:
            p.error("--%s wants at least 1" % name.replace("_", "-"))
    a.url = a.url.rstrip("/")
    if a.ttft:
        ttft(a)
    else:
        throughput(a)


if __name__ == "__main__":
    main()
