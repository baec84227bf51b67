"""The text-data layer of training: vocabularies and labels, reading data
files (and every way a file can be wrong), examples, validation splits,
length-bucketed batch orders and collation."""
import json

import numpy as np
import pytest

from seqdsl.errors import SeqError
from seqdsl.train.data import (Example, batch_order, classification_examples, collate,
                               language_model_examples, read_lines, read_pairs, read_text,
                               read_windows, split_valid, tagging_examples,
                               translation_examples)
from seqdsl.train.vocab import EOS, UNK, Labels, Vocabulary


def write(tmp_path, data, name="data.txt"):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def raises(fn, *args, **kwargs) -> SeqError:
    with pytest.raises(SeqError) as info:
        fn(*args, **kwargs)
    return info.value


# --- vocabularies -----------------------------------------------------------

def test_char_vocabulary_round_trips_text():
    v = Vocabulary.build(["hello world", "héllo\n"])
    assert v.tokens[:2] == [EOS, UNK] and v.eos == 0 and v.unk == 1
    assert v.tokens[2:] == sorted(set("hello worldhéllo\n"))
    ids = v.encode("hello wörld")
    assert ids.dtype == np.int64 and len(ids) == 11
    assert ids[7] == v.unk
    assert v.decode(v.encode("hello\nworld")) == "hello\nworld"
    assert v.decode(ids) == f"hello w{UNK}rld"
    assert v.decode([0]) == EOS
    assert v.unknown("wöröxx") == ["ö", "x"]
    assert "h" in v and "x" not in v and len(v) == len(v.tokens)
    assert v.id("h") == v.tokens.index("h") and v.id("x") == v.unk
    assert len(v.encode("")) == 0


def test_word_vocabulary_and_min_count():
    texts = ["the cat sat", "the dog sat", "a  cat"]
    v = Vocabulary.build(texts, level="word", min_count=2)
    assert v.tokens == [EOS, UNK, "cat", "sat", "the"]
    assert v.split("the  dog\tsat\n") == ["the", "dog", "sat"]
    assert list(v.encode("the dog sat")) == [4, v.unk, 3]
    assert v.decode(v.encode("the dog sat")) == f"the {UNK} sat"
    assert v.unknown("dog the dog a") == ["dog", "a"]


def test_ids_are_deterministic():
    texts = ["zebra", "apple", "mango", "Zed"]
    a = Vocabulary.build(texts)
    b = Vocabulary.build(list(reversed(texts)))
    assert a.tokens == b.tokens and a.tokens[2:] == sorted(a.tokens[2:])
    assert Labels.build(["b", "a", "c", "a"]).names == Labels.build(["c", "b", "a"]).names
    assert Labels.build(["b", "a", "c"]).names == ["a", "b", "c"]


def test_vocabulary_json_round_trip(tmp_path):
    v = Vocabulary.build(["naïve café ☕"], level="word")
    assert Vocabulary.from_json(json.loads(json.dumps(v.to_json()))) == v
    path = tmp_path / "vocab.json"
    v.save(path)
    assert "☕" in path.read_text("utf-8")  # stored as the character, not \u escapes
    w = Vocabulary.load(path)
    assert w == v and w.level == "word"
    assert list(w.encode("café ☕ tea")) == list(v.encode("café ☕ tea"))


def test_labels(tmp_path):
    labels = Labels.build(["pos", "neg", "pos"])
    assert labels.names == ["neg", "pos"] and len(labels) == 2
    assert labels.encode("pos") == 1 and labels.decode(0) == "neg"
    assert "unknown label 'meh'" in raises(labels.encode, "meh").message
    assert Labels.from_json(labels.to_json()) == labels
    labels.save(tmp_path / "labels.json")
    assert Labels.load(tmp_path / "labels.json") == labels


def test_vocabulary_errors(tmp_path):
    assert "min_count" in raises(Vocabulary.build, ["ab"], min_count=0).message
    assert "'sentence'" in raises(Vocabulary.build, ["ab"], level="sentence").message
    assert "one string" in raises(Vocabulary.build, "abc").message
    assert "starts with <EOS> and <UNK>" in raises(Vocabulary, ["a", EOS, UNK]).message
    assert "'a' twice" in raises(Vocabulary, [EOS, UNK, "a", "a"]).message
    assert "single characters" in raises(Vocabulary, [EOS, UNK, "ab"]).message
    assert "not a vocabulary" in raises(Vocabulary.from_json, {"tokens": []}).message
    assert "not a vocabulary" in raises(Vocabulary.from_json, [EOS, UNK]).message
    assert "'twice' twice" in raises(Labels.from_json, {"names": ["twice", "twice"]}).message
    bad = write(tmp_path, '{"level": "char", "tokens": ["x"]}', "v.json")
    e = raises(Vocabulary.load, bad)
    assert e.message.startswith(f"{bad}: ") and "starts with" in e.message
    e = raises(Vocabulary.load, write(tmp_path, '{"level": \n oops}', "broken.json"))
    assert "broken.json:2:2: not JSON" in e.message
    assert "no such file" in raises(Vocabulary.load, tmp_path / "none.json").message


# --- reading files ----------------------------------------------------------

def test_read_text_normalises(tmp_path):
    path = write(tmp_path, b"\xef\xbb\xbfone\r\ntwo\r\n")
    assert read_text(path) == "one\ntwo\n"
    assert read_lines(write(tmp_path, "  a b \r\n\n   \nc\t\n")) == ["  a b", "c"]


@pytest.mark.parametrize("data,message", [
    (b"", "data.txt: is empty"),
    (b" \n\t\r\n  ", "data.txt: is empty (only whitespace)"),
    (b"ok line\nab\0cd\n", "data.txt:2:3: a binary file, not text (a NUL byte)"),
    (b"first\nsecond \xc3\xa9t\xe9\n", "data.txt:2:10: a binary file, not text (byte 0xe9"),
    (b"\xff\xfeh\0i\0", "data.txt:1:1: a binary file, not text (byte 0xff"),
])
def test_read_text_rejects(tmp_path, data, message):
    e = raises(read_text, write(tmp_path, data))
    assert message in e.message and str(tmp_path) in e.message
    assert "\n" not in e.message


def test_read_text_missing_and_directory(tmp_path):
    e = raises(read_text, tmp_path / "nope.txt")
    assert e.message == f"{tmp_path / 'nope.txt'}: no such file"
    assert raises(read_text, tmp_path).message == f"{tmp_path}: is a directory, not a text file"


def test_read_windows(tmp_path):
    path = write(tmp_path, "abcdefg")
    assert read_windows(path, 3) == ["abc", "def", "g"]
    assert read_windows(path, 7) == ["abcdefg"]
    words = write(tmp_path, "one two\nthree  four five\n", "words.txt")
    assert read_windows(words, 2, level="word") == ["one two", "three four", "five"]
    assert ">= 1" in raises(read_windows, path, 0).message


def test_read_pairs(tmp_path):
    path = write(tmp_path, "the cat\tDET NOUN \n\nsat\tVERB\r\n")
    pairs = read_pairs(path)
    assert pairs == [("the cat", "DET NOUN"), ("sat", "VERB")]
    assert [p.line for p in pairs] == [1, 3]
    e = raises(read_pairs, write(tmp_path, "a\tb\n\nno tab here\n", "bad.tsv"))
    assert f"{tmp_path / 'bad.tsv'}:3: no tab" in e.message
    e = raises(read_pairs, write(tmp_path, "a\tb\tc\n", "two.tsv"))
    assert "two.tsv:1:4: a second tab" in e.message
    assert "nothing after the tab" in raises(read_pairs, write(tmp_path, "a\t \n", "e.tsv")).message


# --- examples ---------------------------------------------------------------

def test_language_model_examples_shift_by_one():
    v = Vocabulary.build(["abc", "ba"])
    [ex, short] = language_model_examples(["abc", ""], v, "x")
    ids = list(v.encode("abc"))
    assert list(ex.inputs["x"]) == [v.eos] + ids
    assert list(ex.target) == ids + [v.eos]
    assert list(ex.inputs["x"][1:]) == list(ex.target[:-1])  # x<t+1> = y<t>
    assert list(short.inputs["x"]) == [v.eos] and list(short.target) == [v.eos]


def test_tagging_examples(tmp_path):
    pairs = read_pairs(write(tmp_path, "the cat\tDET NOUN\n\nthe cat sat\tDET NOUN\n"))
    v = Vocabulary.build([p[0] for p in pairs], level="word")
    tags = Labels.build(t for _, ts in pairs for t in ts.split())
    first = tagging_examples(pairs[:1], v, tags, "words")[0]
    assert list(first.target) == [tags.encode("DET"), tags.encode("NOUN")]
    assert list(first.inputs["words"]) == list(v.encode("the cat"))
    e = raises(tagging_examples, pairs, v, tags, "words", path="tags.tsv")
    assert e.message == "tags.tsv:3: 3 tokens but 2 labels"
    e = raises(tagging_examples, [("ab", "X Y")], Vocabulary.build(["ab"]),
               Labels(["X"]), "c", path="p.tsv")
    assert e.message.startswith("p.tsv:1: unknown label 'Y'")


def test_classification_and_translation_examples():
    pairs = [("good film", "pos"), ("bad", "neg")]
    v = Vocabulary.build([p[0] for p in pairs], level="word")
    labels = Labels.build(lab for _, lab in pairs)
    ex = classification_examples(pairs, v, labels, "text")
    assert ex[0].target.shape == () and ex[0].target.dtype == np.int64
    assert int(ex[0].target) == labels.encode("pos") and int(ex[1].target) == 0
    src, tgt = Vocabulary.build(["ab"]), Vocabulary.build(["xyz"])
    [t] = translation_examples([("ba", "zy")], src, tgt, "src", "tgt")
    assert list(t.inputs["src"]) == list(src.encode("ba")) + [src.eos]
    assert list(t.inputs["tgt"]) == [tgt.eos] + list(tgt.encode("zy"))
    assert list(t.target) == list(tgt.encode("zy")) + [tgt.eos]
    assert len(t.target) == len(t.inputs["tgt"])
    assert "both named" in raises(translation_examples, [], src, tgt, "s", "s").message


# --- splits and batches -----------------------------------------------------

def test_split_valid():
    train, valid = split_valid(100, 0.1, seed=3)
    assert len(valid) == 10 and len(train) == 90
    assert sorted(np.concatenate([train, valid]).tolist()) == list(range(100))
    again = split_valid(100, 0.1, seed=3)
    assert np.array_equal(train, again[0]) and np.array_equal(valid, again[1])
    assert not np.array_equal(valid, split_valid(100, 0.1, seed=4)[1])
    assert [len(a) for a in split_valid(2, 0.01, 0)] == [1, 1]
    assert [len(a) for a in split_valid(3, 0.99, 0)] == [1, 2]
    assert [len(a) for a in split_valid(5, 0.0, 0)] == [5, 0]
    for bad in (1.0, -0.1, 1.5, float("nan")):
        assert "fraction must be in [0, 1)" in raises(split_valid, 10, bad, 0).message


LENGTHS = np.random.default_rng(0).integers(1, 41, size=2000)


def padding(batches, lengths):
    return np.mean([lengths[b].max() - lengths[b].mean() for b in batches])


def test_batch_order_covers_each_example_once():
    batches = batch_order(LENGTHS, 30, seed=1, epoch=0)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(LENGTHS)))
    assert sorted(len(b) for b in batches) == [20] + [30] * 66  # pools hold whole batches
    assert all(b.dtype == np.int64 for b in batches)


def test_batch_order_is_deterministic_per_epoch():
    a = batch_order(LENGTHS, 16, seed=1, epoch=2)
    b = batch_order(LENGTHS.copy(), 16, seed=1, epoch=2)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    c = batch_order(LENGTHS, 16, seed=1, epoch=3)
    d = batch_order(LENGTHS, 16, seed=2, epoch=2)
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not all(np.array_equal(x, y) for x, y in zip(a, d))


def test_bucketing_keeps_padding_small():
    bucketed = batch_order(LENGTHS, 16, seed=0, epoch=0)
    perm = np.random.default_rng(0).permutation(len(LENGTHS))
    random = [perm[i:i + 16] for i in range(0, len(perm), 16)]
    assert padding(bucketed, LENGTHS) < padding(random, LENGTHS) / 10


def test_batch_order_errors_and_edges():
    for bad in (0, -3, 2.5):
        assert "batch size" in raises(batch_order, LENGTHS, bad, 0, 0).message
    assert batch_order(np.array([], dtype=np.int64), 4, 0, 0) == []
    [only] = batch_order(np.array([3, 1, 2]), 10, 0, 0)
    assert sorted(only.tolist()) == [0, 1, 2]


def test_collate_pads_and_counts():
    v = Vocabulary.build(["abcd"])
    examples = language_model_examples(["abc", "a", "bcd d"], v, "x")
    batch = collate(examples, np.array([1, 0]))
    assert batch.inputs["x"].shape == (4, 2) and batch.inputs["x"].dtype == np.int64
    assert list(batch.lengths["x"]) == [2, 4]
    assert list(batch.inputs["x"][:, 0]) == [v.eos, v.id("a"), 0, 0]
    assert list(batch.targets[:, 0]) == [v.id("a"), v.eos, -1, -1]
    assert list(batch.targets[:, 1]) == list(examples[0].target)
    assert batch.tokens == 2 + 4
    labelled = [Example({"x": np.array([2, 3])}, np.array(1)),
                Example({"x": np.array([2])}, np.array(0))]
    whole = collate(labelled, [0, 1])
    assert whole.targets.shape == (2,) and list(whole.targets) == [1, 0] and whole.tokens == 2
    assert list(whole.inputs["x"][:, 1]) == [2, 0]
    assert "no examples" in raises(collate, labelled, []).message


def test_collate_puts_each_sequence_down_its_own_column():
    # lengths in any order, an empty sequence among them, the longest last
    seqs = [np.array([5, 6, 7]), np.array([], np.int64), np.array([8]), np.array([1, 2, 3, 4])]
    batch = collate([Example({"x": s}, s + 10) for s in seqs], [0, 1, 2, 3])
    assert batch.inputs["x"].tolist() == [[5, 0, 8, 1], [6, 0, 0, 2], [7, 0, 0, 3], [0, 0, 0, 4]]
    assert batch.targets.tolist() == [[15, -1, 18, 11], [16, -1, -1, 12], [17, -1, -1, 13],
                                      [-1, -1, -1, 14]]
    assert batch.lengths["x"].tolist() == [3, 0, 1, 4] and batch.tokens == 8
