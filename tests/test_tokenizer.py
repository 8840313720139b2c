import os
os.environ["HF_HUB_OFFLINE"] = "1"

import random
import pytest

from gpt2_learn.tokenizer import (BPETokenizer, StreamDecoder, bytes_to_unicode, decode_stream, load_tokenizer,
                                  pre_tokenize, token_bytes)


@pytest.fixture(scope="module")
def tok(): return load_tokenizer()


@pytest.fixture(scope="module")
def bpe(): return BPETokenizer.from_gpt2()


PIECES = [
    "The quick brown fox jumps over the lazy dog. It's 3:45pm; we'll see, won't we? I'd say you're right.",
    "L'été dernier, nous sommes allés à la plage où il faisait très chaud. Ça va? Niño, façade, naïve, Øresund.",
    "Die Straße ist für Fußgänger gesperrt. Быстрая коричневая лиса. Η γρήγορη καφέ αλεπού. שלום עולם. مرحبا بالعالم.",
    "快速的棕色狐狸跳过了懒狗。我们明天见！素早い茶色の狐が怠け者の犬を飛び越える。한국어 텍스트입니다.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है। ภาษาไทย ไม่มีช่องว่าง",
    "I ❤️ 🦄 and 👨‍👩‍👧 🇫🇷🇯🇵 😀😀😀! 🤗🤗 👍🏽 ✨ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 e\u0301 combining",
    "def fib(n):\n    if n < 2:\n        return n\n\n\treturn fib(n-1) + fib(n-2)  # O(2**n)\n",
    "for (int i = 0; i < 10; ++i) { printf(\"%d\\n\", i); }\r\n<div class=\"x\">&amp;</div>",
    "3.14159 2,718,281 0x1F600 1e-10 -42 12345678901234567890 ½ ² ٣ 四",
    "a  b   c    d\n\n\n  e \t\tf\r\n  \n   end   ",
]


def varied_text(n_chars=4000, seed=0):
    "Shuffled mixes of prose, code, emoji, CJK, accents, numbers and whitespace runs."
    rng = random.Random(seed)
    out, n = [], 0
    while n < n_chars:
        p = rng.choice(PIECES)
        if rng.random() < 0.5: p = p[rng.randrange(len(p)):]  # start mid-piece (mid-word, mid-emoji-sequence)
        out.append(p + rng.choice(["", " ", "\n", "  ", "\n\n", "\t"])); n += len(out[-1])
    return "".join(out)


def test_known_ids(tok):
    assert len(tok) == 50257
    assert tok.eos_token_id == tok.bos_token_id == tok.pad_token_id == 50256
    assert tok.padding_side == "left"
    assert tok("Hello world").input_ids == [15496, 995]
    assert tok.encode("<|endoftext|>") == [50256]
    assert tok.convert_ids_to_tokens([15496, 995]) == ["Hello", "Ġworld"]
    assert load_tokenizer() is tok  # cached


def test_batch_left_padding(tok):
    enc = tok(["a b c", "x"], padding=True)
    assert enc.input_ids[1] == [50256, 50256, 87]
    assert enc.attention_mask[1] == [0, 0, 1]


@pytest.mark.parametrize("text", PIECES)
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_bpe_from_scratch_matches_real(tok, bpe):
    text = varied_text(4000)
    assert len(text) >= 4000
    ids = bpe.encode(text)
    assert ids == tok.encode(text)
    assert bpe.decode(ids) == text
    for piece in PIECES: assert bpe.encode(piece) == tok.encode(piece)


def test_bytes_to_unicode_and_split():
    m = bytes_to_unicode()
    assert len(m) == 256 and len(set(m.values())) == 256
    assert m[32] == "Ġ" and m[10] == "Ċ" and m[ord("a")] == "a"
    assert pre_tokenize("I'm  ok\n\n hi") == ["I", "'m", " ", " ok", "\n\n", " hi"]


def test_token_bytes(tok):
    ids = tok.encode("😀")
    assert len(ids) > 1  # the emoji spans several tokens
    assert b"".join(token_bytes(tok, i) for i in ids) == "😀".encode()
    assert token_bytes(tok, 995) == b" world"
    with pytest.raises(ValueError, match="not in the vocabulary"): token_bytes(tok, 10**6)


@pytest.mark.parametrize("text", [PIECES[3], PIECES[4], PIECES[5], "Hi 😀 你好 🦄", varied_text(1500, seed=1)])
def test_stream_decoder(tok, text):
    ids = tok.encode(text)
    dec = StreamDecoder(tok)
    pieces = [dec.put(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == tok.decode(ids) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(decode_stream(tok, ids)) == text


def test_stream_decoder_emoji_only_once_complete(tok):
    ids = tok.encode("🦄")
    dec = StreamDecoder(tok)
    assert [dec.put(i) for i in ids] == [""] * (len(ids) - 1) + ["🦄"]
    assert dec.flush() == ""


def test_stream_decoder_invalid_bytes_match_decode(tok):
    rng = random.Random(0)
    ids = [rng.randrange(50257) for _ in range(500)]
    assert "".join(decode_stream(tok, ids)) == tok.decode(ids)
    dec = StreamDecoder(tok)
    assert dec.put(tok.encode("😀")[0]) == ""
    assert dec.flush() == "\ufffd"  # truncated at the very end: now it is truly invalid
    assert dec.put(tok.encode("a")) == "a"  # flush starts a new stream


def test_stream_decoder_tensors_and_skip(tok):
    torch = pytest.importorskip("torch")
    ids = tok.encode("Hi 😀<|endoftext|>")
    dec = StreamDecoder(tok)
    assert "".join(dec.put(t) for t in torch.tensor(ids)) + dec.flush() == "Hi 😀<|endoftext|>"
    assert StreamDecoder(tok, skip_special_tokens=True).put(torch.tensor(ids)) == "Hi 😀"


def test_local_folder_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    t2 = load_tokenizer(str(tmp_path))
    assert t2("Hello world").input_ids == [15496, 995] and len(t2) == 50257


def test_bad_path_gives_clear_error():
    with pytest.raises(OSError, match="no such folder") as e: load_tokenizer("/nonexistent/folder")
    assert "\n" not in str(e.value) and "bundled GPT-2 tokenizer" in str(e.value)
    with pytest.raises(OSError, match="can't load a tokenizer"): load_tokenizer("nonexistent-org/nonexistent-model")


def test_gpt2_hub_id_offline_falls_back_to_bundled():
    assert load_tokenizer("gpt2")("Hello world").input_ids == [15496, 995]


def _folder_with_code(tmp_path, tok):
    "A tokenizer folder whose config.json and tokenizer_config.json point transformers at Python beside them."
    import json
    d = tmp_path / "evil"
    tok.save_pretrained(d)
    marker = tmp_path / "ran"
    (d / "evil_cfg.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n"
                                   "from transformers import GPT2Config, GPT2Tokenizer\n"
                                   "class EvilConfig(GPT2Config): model_type = 'evil'\n"
                                   "class EvilTok(GPT2Tokenizer): pass\n")
    auto_map = {"AutoConfig": "evil_cfg.EvilConfig", "AutoTokenizer": ["evil_cfg.EvilTok", None]}
    (d / "config.json").write_text(json.dumps({"model_type": "evil", "auto_map": auto_map}))
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "tokenizer_class": "EvilTok", "auto_map": auto_map}))
    return d, marker


def test_folder_with_code_never_asks_never_runs(tok, tmp_path, monkeypatch, capsys):
    "auto_map entries beside Python files: the plain tokenizer.json is used, nothing asked on stdout, no code run."
    import io, sys
    d, marker = _folder_with_code(tmp_path, tok)
    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\nyes\n"))
    t2 = load_tokenizer(str(d))
    assert not marker.exists()
    assert "custom code" not in capsys.readouterr().out
    for text in PIECES: assert t2.encode(text) == tok.encode(text)            # the oracle: transformers' own GPT-2
    assert t2.eos_token_id == 50256 and t2.decode(t2.encode(PIECES[5])) == PIECES[5]


def test_vocab_and_merges_folder_equals_transformers(tok, tmp_path):
    "vocab.json + merges.txt only (the older format), read by us: the same ids as transformers' GPT-2."
    import json
    from gpt2_learn.tokenizer import load_gpt2_bpe
    vocab, merges = load_gpt2_bpe()
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
    t2 = load_tokenizer(str(tmp_path))
    for text in PIECES: assert t2.encode(text) == tok.encode(text)


def test_tokenizer_files_must_be_regular_and_bounded(tmp_path):
    "A FIFO or a huge file named tokenizer.json: refused in one line, before anything is read."
    (tmp_path / "fifo").mkdir(); os.mkfifo(tmp_path / "fifo" / "tokenizer.json")
    with pytest.raises(OSError, match="not a regular file") as e: load_tokenizer(str(tmp_path / "fifo"))
    assert "\n" not in str(e.value)
    (tmp_path / "big").mkdir()
    with open(tmp_path / "big" / "tokenizer.json", "wb") as f: f.truncate(200 * 2**20)
    with pytest.raises(OSError, match="MiB"): load_tokenizer(str(tmp_path / "big"))
    (tmp_path / "none").mkdir()
    with pytest.raises(OSError, match="no tokenizer.json"): load_tokenizer(str(tmp_path / "none"))


def test_ids_outside_the_vocabulary_are_value_errors(tok):
    with pytest.raises(ValueError, match="not in the vocabulary"): token_bytes(tok, 10**12)
    with pytest.raises(ValueError, match="not in the vocabulary"): StreamDecoder(tok).put(10**12)
    with pytest.raises(ValueError, match="not in the vocabulary"): StreamDecoder(tok).put([1, -5])


def test_merge_pair_joins_every_occurrence_left_to_right():
    from gpt2_learn.tokenizer import merge_pair
    assert merge_pair(list("aaab"), ("a", "a")) == ["aa", "a", "b"]
    assert merge_pair(list("abab"), ("a", "b")) == ["ab", "ab"]
    assert merge_pair(list("abc"), ("x", "y")) == ["a", "b", "c"]


def test_load_gpt2_bpe_is_the_published_vocabulary():
    from gpt2_learn.tokenizer import load_gpt2_bpe
    vocab, merges = load_gpt2_bpe()
    assert (len(vocab), len(merges), merges[0]) == (50257, 50000, ("Ġ", "t"))
