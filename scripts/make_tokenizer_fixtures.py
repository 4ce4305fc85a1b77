#!/usr/bin/env python3
"""Generates tokenizer fixtures under Tests/ModelTests/Fixtures/tokenizers with the `tokenizers`
library (run once in the git-ignored venv; the Swift tests never need Python):

  gpt2-style.json     BPE, ByteLevel pre-tokenizer (GPT-2 regex), ByteLevel decoder
  llama3-style.json   BPE, Sequence[Split(Llama-3 regex, Isolated), ByteLevel(use_regex=False)], ignore_merges
  qwen2-style.json    BPE, NFC normalizer, Sequence[Split(Qwen2 regex, Isolated), ByteLevel(use_regex=False)],
                      specials <|endoftext|>, <|im_start|>, <|im_end|> (Qwen2/Qwen2.5/Qwen3's layout)
  llama2-style.json   SentencePiece-style BPE as transformers converts Llama-2/Mistral: byte_fallback with
                      <0x00>…<0xFF>, <unk> fused, normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no
                      pre-tokenizer, decoder Sequence[Replace("▁", " "), ByteFallback, Fuse, Strip(" ", 1, 0)]
  metaspace-style.json the same model with the non-legacy layout: no normalizer, Metaspace(prepend_scheme
                      "first", split False) pre-tokenizer and decoder
  cases.jsonl         {"tokenizer", "text", "ids", "decoded"} for tricky inputs and a sample of the fortunes
                      corpus in several languages (encode without a post-processor: add_special_tokens=False)

All are trained on a little multilingual fortune text so that merges span several scripts; the
SentencePiece-style ones with a small alphabet, so that rare characters fall back to bytes.
"""
import glob
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "ModelTests", "Fixtures", "tokenizers")
LLAMA3 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

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
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "<s>[INST] a question [/INST] an answer</s>",
    "</s>starts with a special",
    "A\u030a composed by NFC vs \u00c5, ﬁ ligature, Ｆｕｌｌｗｉｄｔｈ",
    "private use \ue000\uf8ff, replacement \ufffd, plane 16 \U0010fffd, noncharacter \ufdd0",
    "zero\u200bwidth\u200djoiner and\u00a0no-break\u2003em space",
    "▁already▁metaspace ▁ here",
    "    \n\t  \r\n   ",
    "ÿþ bytes-looking Ä Ö",
    "日本語のテキストと한국어 텍스트, ภาษาไทย, العربية, עברית, हिन्दी",
]

SAMPLE_FILES = ["/usr/share/games/fortunes/de/witze", "/usr/share/games/fortunes/ru/citates", "/usr/share/games/fortunes/tang300",
                "/usr/share/games/fortunes/bg/*", "/usr/share/games/fortunes/ga/*", "/usr/share/games/fortunes/fr/*",
                "/usr/share/games/fortunes/es/*", "/usr/share/games/fortunes/it/*", "/usr/share/games/fortunes/pl/*",
                "/usr/share/games/fortunes/cs/*", "/usr/share/games/fortunes/computers"]


def fortune_sample(per_file=3):
    """A few fortunes from each language's files (fixed order), each at most 600 characters."""
    out = []
    for pattern in SAMPLE_FILES:
        for f in sorted(glob.glob(pattern))[:2]:
            if f.endswith(".dat") or f.endswith(".u8"):
                continue
            try:
                entries = [e.strip("\n") for e in open(f, encoding="utf-8").read().split("\n%\n") if e.strip()]
            except (UnicodeDecodeError, IsADirectoryError):
                continue
            step = max(1, len(entries) // per_file)
            out += [e[:600] for e in entries[::step][:per_file]]
    return out


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


def train(pre, name, ignore_merges=False, normalizer=None, specials=("<|endoftext|>",)):
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    tok.pre_tokenizer = pre
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    tok.save(os.path.join(OUT, name))
    return tok


def train_sentencepiece_style():
    """A SentencePiece-style BPE (Llama-2/Mistral): merges learnt on ▁-prefixed words, then the
    256 byte tokens <0x00>…<0xFF> added to the vocabulary for byte_fallback. Returns the JSON."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(corpus(), trainer)
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    return j


def main():
    os.makedirs(OUT, exist_ok=True)
    toks = {
        "gpt2-style.json": train(pre_tokenizers.ByteLevel(add_prefix_space=False), "gpt2-style.json"),
        "llama3-style.json": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), "llama3-style.json", ignore_merges=True),
        "qwen2-style.json": train(pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]), "qwen2-style.json",
            normalizer=normalizers.NFC(), specials=("<|endoftext|>", "<|im_start|>", "<|im_end|>")),
    }
    sp = train_sentencepiece_style()
    legacy = dict(sp)
    legacy["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
    legacy["pre_tokenizer"] = None
    legacy["decoder"] = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                          {"type": "ByteFallback"}, {"type": "Fuse"},
                                                          {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    metaspace = dict(sp)
    metaspace["normalizer"] = None
    metaspace["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    metaspace["decoder"] = {"type": "Sequence", "decoders": [{"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first",
                                                              "split": False}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    for name, j in [("llama2-style.json", legacy), ("metaspace-style.json", metaspace)]:
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(j, f, ensure_ascii=False)
        toks[name] = Tokenizer.from_file(os.path.join(OUT, name))


    texts = CASES + fortune_sample()
    with open(os.path.join(OUT, "cases.jsonl"), "w") as f:
        for name, tok in toks.items():
            for text in texts:
                ids = tok.encode(text, add_special_tokens=False).ids
                f.write(json.dumps({"tokenizer": name, "text": text, "ids": ids, "decoded": tok.decode(ids)}, ensure_ascii=False) + "\n")
    print("wrote", sorted(os.listdir(OUT)))


def post_processor_fixtures():
    """llama3-bos.json: llama3-style.json with Llama 3's post-processor (TemplateProcessing,
    `<|begin_of_text|> $A`), roberta-style.json with RobertaProcessing (`<s> A </s>`) inside a
    Sequence with ByteLevel; special-cases.jsonl: their ids with add_special_tokens=True.
    Run alone with `make_tokenizer_fixtures.py --post-processors` (reads llama3-style.json)."""
    from tokenizers import processors
    base = Tokenizer.from_file(os.path.join(OUT, "llama3-style.json"))
    bos = Tokenizer.from_str(base.to_str())
    bos.add_special_tokens(["<|begin_of_text|>"])
    bos_id = bos.token_to_id("<|begin_of_text|>")
    bos.post_processor = processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
                                                       special_tokens=[("<|begin_of_text|>", bos_id)])
    roberta = Tokenizer.from_str(base.to_str())
    roberta.add_special_tokens(["<s>", "</s>"])
    roberta.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                                  processors.RobertaProcessing(("</s>", roberta.token_to_id("</s>")),
                                                                               ("<s>", roberta.token_to_id("<s>")))])
    toks = {"llama3-bos.json": bos, "roberta-style.json": roberta}
    with open(os.path.join(OUT, "special-cases.jsonl"), "w") as f:
        for name, tok in toks.items():
            tok.save(os.path.join(OUT, name))
            for text in CASES[:6] + ["<|endoftext|>after an end of text"]:
                f.write(json.dumps({"tokenizer": name, "text": text, "ids": tok.encode(text, add_special_tokens=True).ids,
                                    "ids_plain": tok.encode(text, add_special_tokens=False).ids}, ensure_ascii=False) + "\n")
    print("wrote llama3-bos.json, roberta-style.json, special-cases.jsonl")


if __name__ == "__main__":
    import sys
    if "--post-processors" in sys.argv:
        post_processor_fixtures()
    else:
        main()
        post_processor_fixtures()
