"""Write a small deterministic SQuAD v1.1-format set for configs/finetune-qa.yaml and the QA tests.

Each context is a run of filler words with one "the code is WORD ." somewhere in it; the question
asks for the code and the answer is WORD (with its character offset). Contexts are long next to the
tiny config's max_length, so many answers lie in a later window than the first. Learnable in minutes
on a CPU, so EM/F1 far above chance show that windows, labels and post-processing fit together.

    python scripts/make_tiny_squad.py OUT_DIR [--train 2000] [--validation 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

FILLER = [
    "river",
    "stone",
    "light",
    "morning",
    "garden",
    "window",
    "paper",
    "silver",
    "market",
    "bridge",
    "forest",
    "music",
    "winter",
    "summer",
    "castle",
    "valley",
    "harbor",
    "candle",
    "engine",
    "pocket",
    "letter",
    "shadow",
    "meadow",
    "tower",
    "island",
    "basket",
    "mirror",
    "ladder",
    "thunder",
    "velvet",
    "orchard",
    "lantern",
    "compass",
]
CODES = [
    "apple",
    "banana",
    "cherry",
    "delta",
    "echo",
    "falcon",
    "granite",
    "hazel",
    "indigo",
    "jasper",
    "kiwi",
    "lemon",
    "mango",
    "nectar",
    "olive",
    "pepper",
    "quartz",
    "raven",
    "saffron",
    "tulip",
    "umber",
    "violet",
    "walnut",
    "xenon",
    "yarrow",
    "zinc",
    "amber",
    "cobalt",
    "ember",
    "frost",
]
QUESTIONS = ("What is the code?", "Which code is given?", "what is the code ?", "Name the code.")


def make_question(rng: random.Random, index: int, words: tuple[int, int] = (30, 90)) -> dict:
    """One SQuAD-style question: a context of filler with the code sentence at a random place."""
    filler = [
        rng.choice(FILLER + CODES[:5]) for _ in range(rng.randint(*words))
    ]  # a few codes as distractors
    code = rng.choice(CODES)
    cut = rng.randint(0, len(filler))
    before = " ".join(filler[:cut])
    prefix = (before + " " if before else "") + "the code is "
    context = prefix + code + " . " + " ".join(filler[cut:])
    return {
        "id": f"q{index}",
        "question": rng.choice(QUESTIONS),
        "context": context.strip(),
        "answers": [{"text": code, "answer_start": len(prefix)}],
    }


def squad_file(questions: list[dict], title: str) -> dict:
    """SQuAD v1.1 nesting: one paragraph per context."""
    paragraphs = [
        {
            "context": q["context"],
            "qas": [{"id": q["id"], "question": q["question"], "answers": q["answers"]}],
        }
        for q in questions
    ]
    return {"version": "1.1", "data": [{"title": title, "paragraphs": paragraphs}]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--validation", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, count in (("train", args.train), ("validation", args.validation)):
        questions = [make_question(rng, start + i) for i in range(count)]
        start += count
        (args.out / f"{split}.json").write_text(json.dumps(squad_file(questions, split)) + "\n")
        print(args.out / f"{split}.json")


if __name__ == "__main__":
    main()
