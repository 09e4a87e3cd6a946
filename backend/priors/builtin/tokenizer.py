"""The built-in prior's tokenizer: a CLIP-format byte-level BPE learnt on the toy world's words.

Every word of the grammar is one token; any other text still encodes (byte by byte). Learning is deterministic, so the
vocabulary, and the token ids the text encoder learnt, never change: the shipped ``model/tokenizer`` files are what
``write_tokenizer_files`` writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import world as W

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def grammar_words() -> list[str]:
    return sorted({w for p in W.all_prompts() for w in p.split()})


def _byte_alphabet() -> list[str]:
    """GPT-2 / CLIP byte-to-unicode table: the 256 symbols a byte-level BPE starts from."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
    keep += list(range(ord("\u00ae"), ord("\u00ff") + 1))
    chars, extra = [], 0
    for byte in range(256):
        if byte in keep:
            chars.append(chr(byte))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """Byte-pair encoding (Sennrich et al. 2016) on the given words, each counted once, with CLIP's "</w>" word end:
    repeatedly merge the most frequent adjacent pair (ties: the lexicographically smallest) until every word is a
    single symbol. Deterministic, so the vocabulary (and the token ids the text encoder learns) never changes."""
    seqs = [list(w[:-1]) + [w[-1] + "</w>"] for w in words]
    merges = []
    while any(len(s) > 1 for s in seqs):
        counts: dict[tuple[str, str], int] = {}
        for s in seqs:
            for pair in zip(s, s[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        best = min(counts, key=lambda pr: (-counts[pr], pr))
        merges.append(best)
        joined = best[0] + best[1]
        for k, s in enumerate(seqs):
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[k] = out
    return merges


def write_tokenizer_files(folder: str | os.PathLike) -> tuple[Path, Path]:
    """vocab.json + merges.txt of a CLIP-format byte-level BPE learnt on the grammar's words: every grammar word is
    one token, and any other text still encodes (byte by byte). Deterministic."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab: dict[str, int] = {}
    for tok in alphabet + [c + "</w>" for c in alphabet]:
        vocab[tok] = len(vocab)
    merges = learn_merges(grammar_words())
    for a_, b_ in merges:
        vocab.setdefault(a_ + b_, len(vocab))
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a_} {b_}\n" for a_, b_ in merges))
    return folder / "vocab.json", folder / "merges.txt"


def build_tokenizer(folder: str | os.PathLike, max_length: int = 77):
    from transformers import CLIPTokenizer

    vocab, merges = write_tokenizer_files(folder)
    return CLIPTokenizer(
        vocab=str(vocab),
        merges=str(merges),
        model_max_length=max_length,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
    )
