"""The process `ores serve` starts on a CPU: load a checkpoint, start the batching engine, serve the
OpenAI API (server/openai_api.py) with uvicorn.

    python -m oresearch_cli.server.cpu_server CHECKPOINT --served-model-name NAME --port 8000

Ctrl-C or SIGTERM gives requests in flight `--shutdown-timeout` seconds, then cancels them (their
generations stop at the next step) and exits.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

DEFAULT_CACHE_TOKENS = 32768
DEFAULT_MAX_BATCH = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m oresearch_cli.server.cpu_server")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, ... (default: the checkpoint's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="requests decoded together (1: no batching)"
    )
    parser.add_argument(
        "--cache-tokens",
        type=int,
        default=DEFAULT_CACHE_TOKENS,
        help="KV cache capacity in tokens, all requests together (batch rows x padded length)",
    )
    parser.add_argument("--shutdown-timeout", type=float, default=2.0)
    return parser.parse_args(argv)


def load(checkpoint: Path, dtype: str | None, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, dtype) if dtype else "auto")
    model = model.to(device).eval()  # type: ignore[arg-type]  # transformers' stubs type `.to` oddly
    return model, tokenizer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from oresearch_cli.server.engine import Engine
    from oresearch_cli.server.grammar import Grammars
    from oresearch_cli.server.openai_api import OpenAIServer

    model, tokenizer = load(args.checkpoint, args.dtype, args.device)
    vocab = int(model.get_output_embeddings().weight.shape[0])
    engine = Engine(
        model,
        tokenizer,
        grammars=Grammars(tokenizer, vocab),
        max_batch=args.max_batch,
        cache_tokens=args.cache_tokens,
    )
    engine.start()
    server = OpenAIServer(engine, args.served_model_name)
    print(
        f"serving {args.served_model_name} ({args.checkpoint}) on http://{args.host}:{args.port}/v1 "
        f"(batch up to {engine.max_batch}, cache {engine.cache_tokens} tokens)",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            server.app(),
            host=args.host,
            port=args.port,
            log_level="warning",
            timeout_graceful_shutdown=max(1, round(args.shutdown_timeout)),
        )
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
