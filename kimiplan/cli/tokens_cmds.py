"""`kimiplan tokens count`: exact Kimi token counts, offline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kimiplan.errors import ConfigError

from ._util import print_json


def cmd_count(args) -> int:
    from kimiplan.tokens.tokenizer import count_messages, get_tokenizer

    if args.text is not None and args.file is not None:
        raise ConfigError("give TEXT or --file, not both")
    if args.file is not None:
        try:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--file {args.file!r}: {exc.strerror}") from None
    elif args.text is not None:
        text = args.text
    else:
        raise ConfigError("give TEXT or --file F (use --file - for standard input)")
    if args.messages:
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--messages expects a JSON list of messages or a request object: {exc}") from None
        messages = payload.get("messages") if isinstance(payload, dict) else payload
        tools = payload.get("tools") if isinstance(payload, dict) else None
        if not isinstance(messages, list):
            raise ConfigError("--messages expects a JSON list of messages or an object with 'messages'")
        n = count_messages(messages, tools=tools)
        result = {"tokens": n, "kind": "chat messages (text + chat template)", "messages": len(messages)}
    else:
        tok = get_tokenizer()
        ids = tok.encode(text)
        result = {"tokens": len(ids), "kind": "text", "characters": len(text), "bytes": len(text.encode("utf-8"))}
        if args.ids:
            result["ids"] = ids
    result["tokenizer"] = "kimi (tiktoken BPE, 163,840 ids, via splintr-rs)"
    if args.json:
        print_json(result)
    else:
        print(result["tokens"])
        if args.ids and "ids" in result:
            print(" ".join(map(str, result["ids"])))
    return 0


def register(sub) -> None:
    p = sub.add_parser("tokens", help="exact Kimi token counts")
    tsub = p.add_subparsers(dest="tokens_command", metavar="ACTION")
    tsub.required = True
    c = tsub.add_parser("count", help="count tokens of TEXT or a file")
    c.add_argument("text", nargs="?", help="text to count")
    c.add_argument("--file", "-f", help="read the text from a file (- for standard input)")
    c.add_argument("--messages", action="store_true", help="input is a JSON chat request: count as Kimi does")
    c.add_argument("--ids", action="store_true", help="also print the token ids")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_count)
