#!/usr/bin/env python3
"""Generates tokenizer fixtures under Tests/ModelTests/Fixtures/tokenizers with the `tokenizers`
library (run once in the git-ignored venv; the Swift tests never need Python):

  gpt2-style.json   BPE, ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel decoder
  llama3-style.json BPE, Sequence[Split(Llama-3 regex, Isolated), ByteLevel(use_regex=False)], ignore_merges
  cases.jsonl       {"tokenizer", "text", "ids", "decoded"} for tricky inputs

Both are trained on a little multilingual fortune text so that merges span several scripts.
"""
import glob
import json
import os

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures", "tokenizers")
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

CASES = [
    "Hello, world! It's a test.",
    "  leading spaces and   runs of    spaces  ",
    "line one\nline two\n\n\nthree newlines\r\nwindows",
    "tabs\tand\t\ttabs",
    "Grüße aus Köln — ça va? ¿Qué tal? Zażółć gęślą jaźń.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Добър ден! Как сте?",
    "他说：“你好，世界。”　全角空格",
    "emoji 👍🏽 family 👨‍👩‍👧 flag 🇮🇪 and ❤️",
    "combining e\u0301 a\u0308 o\u0302\u0323 marks",
    "numbers 1234567 3.14159 and 12,000",
    "MiXeD CaSe I'M YOU'LL we'Re",
    "<|endoftext|>special in the middle<|endoftext|>",
    "",
    " ",
    "\n",
    "tail space ",
    "Dia dhuit! Conas atá tú?",
]


def corpus():
    texts = []
    for pattern in ["/usr/share/games/fortunes/ga/*", "/usr/share/games/fortunes/bg/*", "/usr/share/games/fortunes/tang300",
                    "/usr/share/games/fortunes/art", "/usr/share/games/fortunes/de/witze", "/usr/share/games/fortunes/ru/citates"]:
        for f in sorted(glob.glob(pattern)):
            if f.endswith(".dat"):
                continue
            try:
                texts.append(open(f, encoding="utf-8").read()[:60000])
            except (UnicodeDecodeError, IsADirectoryError):
                pass
    return texts + CASES


def train(pre, name, ignore_merges=False):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.save(os.path.join(OUT, name))
    return tok


def main():
    os.makedirs(OUT, exist_ok=True)
    toks = {
        "gpt2-style.json": train(pre_tokenizers.ByteLevel(add_prefix_space=False), "gpt2-style.json"),
        "llama3-style.json": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), "llama3-style.json", ignore_merges=True),
    }
    with open(os.path.join(OUT, "cases.jsonl"), "w") as f:
        for name, tok in toks.items():
            for text in CASES:
                ids = tok.encode(text).ids
                f.write(json.dumps({"tokenizer": name, "text": text, "ids": ids, "decoded": tok.decode(ids)}, ensure_ascii=False) + "\n")
    print("wrote", sorted(os.listdir(OUT)))


if __name__ == "__main__":
    main()
