"""Tokenizer throughput in MB of text per second, against a reference measured in the same run on the same
text: tiktoken's engine loaded with Kimi's own ranks and pattern (`kimiplan.tokens.tokenizer.tiktoken_encoding`).

    python benchmarks/bench_tokens.py
"""

from __future__ import annotations

import random
import time

from kimiplan.tokens.tokenizer import get_tokenizer


def corpus(mb: float = 8.0, seed: int = 0) -> str:
    # Mixed English, Chinese, code and numbers, like a RAG prompt.
    rnd = random.Random(seed)
    parts = [
        "The quick brown fox jumps over the lazy dog. ",
        "def handler(event, context):\n    return {'ok': True}\n",
        "你好世界，我们正在测试分词器的吞吐量。",
        "Invoice 2026-11-26 total 1,234.56 USD; ref #A19F-22. ",
        "Xin chào, đây là bài kiểm tra tốc độ. ",
        "SELECT id, name FROM users WHERE created_at > now() - interval '1 day';\n",
    ]
    out, size = [], 0
    while size < mb * 1e6:
        p = rnd.choice(parts)
        out.append(p)
        size += len(p.encode("utf-8"))
    return "".join(out)


def rate(fn, text: str, repeat: int = 3) -> tuple[float, int]:
    best, n = float("inf"), 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = fn(text)
        best = min(best, time.perf_counter() - t)
    return len(text.encode("utf-8")) / 1e6 / best, n


def main() -> None:
    text = corpus()
    tok = get_tokenizer()
    docs = [text[i : i + 20_000] for i in range(0, len(text), 20_000)]
    single, n = rate(tok.count, text)
    batch, _ = rate(lambda _t: sum(tok.count_many(docs)), text)
    print(f"text: {len(text.encode()) / 1e6:.1f} MB, {n:,} Kimi tokens")
    print(f"kimiplan count (one string):      {single:8.1f} MB/s")
    print(f"kimiplan count_many (20 KB docs): {batch:8.1f} MB/s")
    from kimiplan.tokens.tokenizer import tiktoken_encoding

    enc = tiktoken_encoding()
    ref, n_ref = rate(lambda t: len(enc.encode_ordinary(t)), text)
    print(f"reference tiktoken, Kimi ranks:   {ref:8.1f} MB/s  (kimiplan/reference = {single / ref:.2f}x)")
    print(f"token counts agree with the reference: {n == n_ref}")


if __name__ == "__main__":
    main()
