"""Load a names file, build the lecture's vocabulary and its 80/10/10 (context, target) splits."""

from __future__ import annotations

import functools
import hashlib
import random
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..assets import DEFAULT_DATA as DEFAULT_DATA  # the embedded names list, where it is installed

MAX_FILE_BYTES = 16 * 1024 * 1024  # a names list is ~200 KiB; refuse anything absurd
MAX_WORD_CHARS = 64  # longest line accepted
MAX_VOCAB = 128  # characters + '.'; keeps every vocab-sized tensor small
MIN_WORDS = 10  # fewer leaves the val or test split empty


class DataError(ValueError):
    """A names file that cannot be used, with a message for the person who passed it."""


@dataclass(frozen=True)
class Splits:
    """The (context, target) tensors of the three splits at one block size."""

    Xtr: torch.Tensor  # (n_train, block_size) int64
    Ytr: torch.Tensor  # (n_train,) int64
    Xdev: torch.Tensor
    Ydev: torch.Tensor
    Xte: torch.Tensor
    Yte: torch.Tensor


@dataclass
class Dataset:
    """A validated list of words with the lecture's vocabulary and lazily built splits."""

    path: Path
    words: list[str]  # in file order
    sha256: str
    itos: dict[int, str]
    stoi: dict[str, int]
    raw: bytes = field(default=b"", repr=False)  # the file's bytes as validated: what other processes get
    _splits: dict[int, Splits] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    @property
    def embedded(self) -> bool:
        """Whether these are the embedded names (by content: a copy of the file elsewhere is the same list)."""
        return self.sha256 == _embedded_sha256()

    def splits(self, block_size: int) -> Splits:
        """The lecture's split at this block size (built once, then cached)."""
        with self._lock:
            if block_size not in self._splits:
                self._splits[block_size] = build_splits(self.words, self.stoi, block_size)
            return self._splits[block_size]


def build_dataset(words: list[str], stoi: dict[str, int], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The lecture's build_dataset: every (context, next char) pair, contexts padded with '.', as (X, Y) tensors.

    Built with tensor ops rather than the lecture's loop over characters (a tenth of its time: every server, sandbox
    and training process builds the splits): Y is every word's characters and its '.', and column block_size - k of
    X is the character k places before each target within its word, '.' (0) before the word's start."""
    Y = torch.tensor([stoi[ch] for w in words for ch in w + "."], dtype=torch.int64)
    lengths = torch.tensor([len(w) + 1 for w in words], dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths  # where each word's characters start in Y
    at = torch.arange(len(Y))
    within = at - torch.repeat_interleave(starts, lengths)  # each target's place in its word
    X = torch.zeros((len(Y), block_size), dtype=torch.int64)
    for k in range(1, block_size + 1):
        X[:, block_size - k] = torch.where(within >= k, Y[(at - k).clamp(min=0)], 0)
    return X, Y


def build_splits(words: list[str], stoi: dict[str, int], block_size: int) -> Splits:
    """random.seed(42); random.shuffle(words); 80% / 10% / 10% as in the lecture."""
    shuffled = list(words)
    random.Random(42).shuffle(shuffled)
    n1 = int(0.8 * len(shuffled))
    n2 = int(0.9 * len(shuffled))
    parts: list[torch.Tensor] = []
    for chunk in (shuffled[:n1], shuffled[n1:n2], shuffled[n2:]):
        parts += build_dataset(chunk, stoi, block_size)
    return Splits(*parts)


def _check_char(ch: str, lineno: int) -> None:
    if ch == ".":
        raise DataError(f"line {lineno}: '.' is the end-of-word token and cannot appear in a word")
    if ch.isspace() or unicodedata.category(ch)[0] in ("C", "Z"):
        raise DataError(
            f"line {lineno}: character {ch!r} (U+{ord(ch):04X}) is whitespace or a control "
            "character and cannot be a token"
        )


def load_dataset(path: str | Path) -> Dataset:
    """Read and validate a names file (one word per line; blank lines are skipped)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{path}: {size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit")
    return parse_dataset(path.read_bytes(), path)


def dataset_from(path: str | Path, raw: bytes, sha256: str) -> Dataset:
    """The dataset a server validated at start-up, rebuilt from its bytes in another process (never the file
    again: it may have changed or gone since); the bytes must be the ones validated."""
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"{path}: the names list handed over is not the one validated at start-up")
    return parse_dataset(raw, Path(path))


def parse_dataset(raw: bytes, path: Path) -> Dataset:
    """Validate the bytes of a names file (`path` names it in messages and in the API)."""
    if len(raw) > MAX_FILE_BYTES:
        raise DataError(f"{path}: {len(raw):,} bytes is over the {MAX_FILE_BYTES:,}-byte limit")
    if b"\x00" in raw:
        raise DataError(f"{path}: holds NUL bytes: this looks like a binary file, not a names list")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
    text = text.removeprefix("\ufeff")
    words: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        word = line.strip()
        if not word:
            continue
        if len(word) > MAX_WORD_CHARS:
            raise DataError(f"line {lineno}: {len(word)} characters, over the limit of {MAX_WORD_CHARS}")
        for ch in word:
            _check_char(ch, lineno)
        words.append(word)
    if not words:
        raise DataError(f"{path}: empty: no words found")
    if len(words) < MIN_WORDS:
        raise DataError(f"{path}: {len(words)} words; at least {MIN_WORDS} are needed for an 80/10/10 split")
    chars = sorted(set("".join(words)))
    if len(chars) + 1 > MAX_VOCAB:
        raise DataError(f"{path}: {len(chars)} distinct characters, over the limit of {MAX_VOCAB - 1}")
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi["."] = 0
    itos = {i: s for s, i in stoi.items()}
    return Dataset(
        path=path,
        words=words,
        sha256=hashlib.sha256(raw).hexdigest(),
        itos=dict(sorted(itos.items())),
        stoi=stoi,
        raw=raw,
    )


@functools.cache
def _embedded_sha256() -> str:
    return hashlib.sha256(DEFAULT_DATA.read_bytes()).hexdigest()
