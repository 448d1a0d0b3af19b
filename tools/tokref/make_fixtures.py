"""make_fixtures.py writes the reference fixtures of package tokenizer.

The references come from Hugging Face `tokenizers` (and, for the
SentencePiece case, from `sentencepiece` itself), never from our Go code:

  splits.json.gz     for each pre-tokenizer name, the pieces that
                     `tokenizers` (Oniguruma regexes, chained Split
                     pre-tokenizers as llama.cpp chains its regexes) cuts
                     each test string into.
  bpe-<pre>.json.gz  a byte-level BPE trained here (vocab ~1000) with that
                     pre-tokenizer: its tokenizer.json, plus the ids and the
                     decoded text of every test string and of the corpus.
  spm-llama2.json.gz the ids of the same strings under the Llama-2
                     SentencePiece vocabulary of llama-2-tiny-random.gguf,
                     from an HF BPE tokenizer built as transformers'
                     LlamaConverter builds one (merges derived from the
                     scores, byte_fallback, Prepend("▁") + Replace(" ", "▁")
                     normalizer) and from a SentencePiece BPE model proto
                     made from the same pieces.

Run (see README.md): python3 make_fixtures.py --out DIR --gguf FILE
Every part runs on its own: a failure is written to DIR/errors.txt and the
other parts still produce their files.
"""

import argparse
import gzip
import json
import os
import random
import sys
import traceback

sys.dont_write_bytecode = True  # leave no __pycache__ in the repository
import gguf_vocab  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))

# Pre-tokenizer regexes as the models' tokenizer.json files spell them (the
# originals, with the case-insensitive group and the trailing \s+ that
# llama.cpp's adapted copies drop). A list is a chain: each regex splits
# every piece that the previous one produced, keeping matches and the text
# between them ("isolated"), which is how llama.cpp's unicode_regex_split
# applies several regexes.
GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
QWEN2 = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
# llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT chain (pre "default" or absent).
DEFAULT = [
    r"""[\p{P}\$\+<=>\^~\|]+""",
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)""",
    r"""\p{N}+""",
    r"""[0-9][0-9][0-9]""",
]

CHAINS = {
    "gpt-2": [GPT2],
    "llama-bpe": [LLAMA3],
    "qwen2": [QWEN2],
    "smollm": [r"\p{N}", GPT2],
    "default": DEFAULT,
}

# Special tokens of each trained BPE, in the style of the model family that
# uses that pre-tokenizer. "<tool>" is added as a non-special (user-defined)
# token.
SPECIALS = {
    "gpt-2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "llama-bpe": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "smollm": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
}

# Strings that have broken tokenizers before.
TRICKY = [
    "",
    " ",
    "  ",
    "a",
    " leading space",
    "trailing space ",
    "Hello, world!",
    "Hello world! 123",
    "héllo wörld",
    "naïve café résumé",
    "e\u0301 versus \u00e9, a\u0308o\u0308u\u0308",
    "你好，世界。我们昨天去了长城",
    "こんにちは、東京",
    "안녕하세요 서울",
    "Привет, мир! Ёлка",
    "Γεια σου κόσμε",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "👍🏽 thumbs up, 👨‍👩‍👧‍👦 family, 🇳🇴 flag",
    "😀😀😀",
    "  multiple   spaces    here",
    "\n\n\t",
    "\n",
    "\t\tindented\n\tcode",
    "line one\nline two\r\nline three\r\rx",
    "a\u00a0b\u3000c\u0085d\u2028e\u200bf",
    "12345 3.14159 1,234,567 0x1F 6.022e23",
    "1234567890123",
    "٣٤٥ ² ½ Ⅻ",
    "don't I'll we've they're she'd it's",
    "DON'T I'LL WE'VE THEY'RE SHE'D IT'S",
    "'s 's'tre 'ſ 'K",
    "rock'n'roll o'clock the '90s",
    "<|endoftext|>hi",
    "hi<|endoftext|>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>",
    "a <|eot_id|> b",
    "<s>hello</s> <unk>",
    " <s> spaced </s>",
    "use <tool> now",
    "<|endoftext",
    "def f(x):\n    return x ** 2  # square\n",
    "if (a <= b && c != d) { x += 1; }",
    "!!!???...,,,;;;",
    " !x ?y",
    "$100 + 20% = ~$120 ^ | < > =",
    "a.b.c/d\\e_f-g",
    "\u2581already escaped\u2581",
    "ſtrong Kelvin ﬁne ＡＢＣ",
]


def random_strings(n, seed):
    """random_strings returns n strings drawn from a pool of the character
    classes that the pre-tokenizer regexes distinguish."""
    pool = [
        "a", "b", "Z", "x", "é", "ß", "ſ", "Ж", "ω", "中", "日", "한", "ก",
        "😀", "👍🏽", "\u0301", "\u0308", "0", "7", "42", "123456", "²", "Ⅻ",
        "٣", "½", " ", "  ", "   ", "\t", "\n", "\r", "\r\n", "\n\n",
        "\u00a0", "\u3000", "\u0085", "\u200b", "\u2028", "\u000b", "\u000c",
        "'", "'s", "'S", "'ll", "'LL", "'Re", "'ve", "'d", "'m", "'t", "'x",
        "!", ".", ",", "$", "+", "<", ">", "=", "|", "^", "~", "`", "-", "_",
        "(", ")", "«", "»", "…", "—", "¿", "#", "&", "*", "/", "\\", "\"",
        "@", "%", ";", ":", "?", "[", "]", "{", "}", "€", "©", "°",
    ]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        k = rng.randint(1, 14)
        out.append("".join(rng.choice(pool) for _ in range(k)))
    return out


def versions():
    """versions names the libraries that made the references."""
    v = {"python": sys.version.split()[0]}
    for mod in ("tokenizers", "transformers", "sentencepiece"):
        try:
            v[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: say so
            v[mod] = None
    return v


def write_gz(out, name, obj):
    obj = {"versions": versions(), **obj}
    data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    with open(os.path.join(out, name), "wb") as f:
        # mtime=0 keeps the file byte-identical between runs.
        f.write(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"wrote {name}: {len(data)} bytes of JSON", flush=True)


def chain_pretokenizer(regexes):
    from tokenizers import Regex, pre_tokenizers
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
    return splits[0] if len(splits) == 1 else pre_tokenizers.Sequence(splits)


def make_splits(out, strings):
    result = {"strings": strings, "chains": {}}
    for name, regexes in CHAINS.items():
        pt = chain_pretokenizer(regexes)
        pieces = [[p for p, _ in pt.pre_tokenize_str(s)] for s in strings]
        for s, ps in zip(strings, pieces):
            if "".join(ps) != s:
                raise RuntimeError(f"{name}: pieces of {s!r} do not cover it: {ps!r}")
        result["chains"][name] = {"regexes": regexes, "pieces": pieces}
    write_gz(out, "splits.json.gz", result)


def train_bpe(pre, corpus, vocab_size):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    if pre == "gpt-2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ])
    else:
        regex = {"llama-bpe": LLAMA3, "qwen2": QWEN2}[pre]
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        special_tokens=SPECIALS[pre],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.add_tokens([AddedToken("<tool>", special=False, normalized=False)])
    if pre == "llama-bpe":
        # Llama-3's tokenizer.json sets ignore_merges; llama.cpp does the
        # same for this pre-tokenizer.
        j = json.loads(tok.to_str())
        j["model"]["ignore_merges"] = True
        tok = Tokenizer.from_str(json.dumps(j))
    return tok


def encode_cases(tok, strings):
    cases = []
    for s in strings:
        ids = tok.encode(s, add_special_tokens=False).ids
        cases.append({"text": s, "ids": ids,
                      "decoded": tok.decode(ids, skip_special_tokens=False)})
    return cases


def make_bpe(out, pre, corpus_text, strings):
    # Train on lines (and the test strings, so that their pieces are merged
    # too), then encode the whole corpus as one text.
    lines = corpus_text.splitlines(keepends=True) + strings
    tok = train_bpe(pre, lines, 1000)
    corpus_ids = tok.encode(corpus_text, add_special_tokens=False).ids
    write_gz(out, f"bpe-{pre}.json.gz", {
        "pre": pre,
        "tokenizer": json.loads(tok.to_str()),
        "cases": encode_cases(tok, strings),
        "corpus_ids": corpus_ids,
        "corpus_decoded_equal": tok.decode(corpus_ids) == corpus_text,
    })


def llama_converter_merges(vocab, vocab_scores):
    """llama_converter_merges is transformers' generate_merges
    (convert_slow_tokenizer.py), used by LlamaConverter; the installed
    function is preferred, this transcription is the fallback."""
    try:
        from transformers.convert_slow_tokenizer import generate_merges
        return generate_merges(vocab, vocab_scores), "transformers.convert_slow_tokenizer.generate_merges"
    except Exception as e:  # noqa: BLE001 - any import or API change
        print(f"transformers generate_merges unavailable ({e!r}); using the transcription", flush=True)
    reverse = vocab_scores is not None
    vocab_scores = dict(vocab_scores) if reverse else vocab
    merges = []
    for merge, piece_score in vocab_scores.items():
        local = []
        for index in range(1, len(merge)):
            piece_l, piece_r = merge[:index], merge[index:]
            if piece_l in vocab and piece_r in vocab:
                local.append((piece_l, piece_r, piece_score))
        local = sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges = sorted(merges, key=lambda val: (val[2], len(val[0]), len(val[1])), reverse=reverse)
    return [(a, b) for a, b, _ in merges], "transcription of transformers' generate_merges"


def hf_llama_tokenizer(tokens, scores, types):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise RuntimeError("duplicate tokens in the SentencePiece vocabulary")
    merges, source = llama_converter_merges(vocab, list(zip(tokens, scores)))
    bpe = models.BPE(vocab=vocab, merges=merges, unk_token=tokens[0], fuse_unk=True, byte_fallback=True)
    tok = Tokenizer(bpe)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    specials = [t for t, ty in zip(tokens, types) if ty in (2, 3)]
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in specials])
    return tok, source


def sentencepiece_llama(tokens, scores, types):
    """sentencepiece_llama builds a SentencePiece BPE model proto from the
    GGUF pieces, with Llama-2's normalizer settings."""
    import sentencepiece as spm
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:
        from transformers.utils import sentencepiece_model_pb2_new as pb
    m = pb.ModelProto()
    for t, s, ty in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score, p.type = t, s, ty
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id, m.trainer_spec.bos_id, m.trainer_spec.eos_id, m.trainer_spec.pad_id = 0, 1, 2, -1
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = True
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(m.SerializeToString())
    return sp


def make_spm(out, gguf_path, corpus_text, strings):
    md = gguf_vocab.read_metadata(gguf_path)
    tokens = md["tokenizer.ggml.tokens"]
    scores = md["tokenizer.ggml.scores"]
    types = md["tokenizer.ggml.token_type"]
    tok, merges_source = hf_llama_tokenizer(tokens, scores, types)
    result = {
        "gguf": os.path.basename(gguf_path),
        "merges_source": merges_source,
        "hf_cases": encode_cases(tok, strings),
        "hf_corpus_ids": tok.encode(corpus_text, add_special_tokens=False).ids,
    }
    try:
        sp = sentencepiece_llama(tokens, scores, types)
        result["sp_cases"] = [{"text": s, "ids": sp.encode(s), "decoded": sp.decode(sp.encode(s))}
                              for s in strings]
        result["sp_corpus_ids"] = sp.encode(corpus_text)
    except Exception:  # noqa: BLE001 - keep the HF reference even so
        result["sp_error"] = traceback.format_exc()
        print(result["sp_error"], file=sys.stderr, flush=True)
    write_gz(out, "spm-llama2.json.gz", result)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--gguf", default=os.path.join(HERE, "cache", "llama-2-tiny-random.gguf"))
    ap.add_argument("--corpus", default=os.path.join(HERE, "..", "..", "tokenizer", "testdata", "corpus.txt"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(args.corpus, encoding="utf-8", newline="") as f:
        corpus_text = f.read()

    print(versions(), flush=True)

    strings = TRICKY + random_strings(200, seed=20260101)
    errors = []
    parts = [("splits", lambda: make_splits(args.out, strings))]
    for pre in SPECIALS:
        parts.append((f"bpe-{pre}", lambda pre=pre: make_bpe(args.out, pre, corpus_text, TRICKY)))
    parts.append(("spm", lambda: make_spm(args.out, args.gguf, corpus_text, TRICKY)))
    for name, fn in parts:
        try:
            fn()
        except Exception:  # noqa: BLE001 - report and go on with the other parts
            errors.append(f"== {name}\n{traceback.format_exc()}")
            print(errors[-1], file=sys.stderr, flush=True)
    if errors:
        with open(os.path.join(args.out, "errors.txt"), "w") as f:
            f.write("\n".join(errors))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
