"""Vocabularies (tokens by id) and label sets (class names by id), saved as JSON
beside a model so that the same ids mean the same tokens when it is reloaded."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

import numpy as np

from ..errors import SeqError

EOS = "<EOS>"  # appended to every sequence; also the start-of-sequence input of a language model
UNK = "<UNK>"  # rare or unseen tokens
LEVELS = ("char", "word")


def _check_level(level) -> None:
    if level not in LEVELS:
        raise SeqError(f"unknown token level {level!r}; expected one of {', '.join(LEVELS)}",
                       hint="'char' makes every character a token, 'word' every "
                            "whitespace-separated word")


def _check_names(names, what: str) -> None:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SeqError(f"the {what} must be a list of strings")
    seen = set()
    for n in names:
        if n in seen:
            raise SeqError(f"the {what} list {n!r} twice")
        seen.add(n)


def _check_texts(texts) -> None:
    # A bare string is iterable too, and would silently become one text per character.
    if isinstance(texts, str):
        raise SeqError("expected a list of texts, got one string",
                       hint="pass [text] to build from a single text")


class Vocabulary:
    """Tokens by id: 0 is <EOS>, 1 is <UNK>, the rest sorted (deterministic)."""

    eos = 0
    unk = 1

    def __init__(self, tokens: list[str], level: str = "char"):
        _check_level(level)
        _check_names(tokens, "vocabulary's tokens")
        if tokens[:2] != [EOS, UNK]:
            raise SeqError(f"a vocabulary starts with {EOS} and {UNK} (ids 0 and 1), "
                           f"not {tokens[:2]}")
        for t in tokens[2:]:
            # encode() could never produce such a token, so its id would be dead weight.
            if level == "char" and len(t) != 1:
                raise SeqError(f"a char-level vocabulary holds single characters, not {t!r}")
            if level == "word" and (not t or t.split() != [t]):
                raise SeqError(f"a word-level vocabulary holds words without whitespace, "
                               f"not {t!r}")
        self.tokens = list(tokens)
        self.level = level
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], level: str = "char", min_count: int = 1) -> Vocabulary:
        """The tokens seen at least `min_count` times across `texts`; the rest become <UNK>."""
        _check_level(level)
        _check_texts(texts)
        if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
                or min_count < 1:
            raise SeqError(f"min_count must be a whole number >= 1, not {min_count!r}",
                           hint="1 keeps every token seen; 2 maps tokens seen once to <UNK>")
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(_split(text, level))
        kept = sorted(t for t, c in counts.items() if c >= min_count and t not in (EOS, UNK))
        return cls([EOS, UNK] + kept, level)

    def split(self, text: str) -> list[str]:
        """The tokens of `text`: its characters, or its whitespace-separated words."""
        return _split(text, self.level)

    def encode(self, text: str) -> np.ndarray:
        """int64 ids of the tokens of `text` (no <EOS> added); unknown tokens are <UNK>."""
        ids, unk = self._ids, self.unk
        return np.array([ids.get(t, unk) for t in self.split(text)], dtype=np.int64)

    def unknown(self, text: str) -> list[str]:
        """The distinct tokens of `text` not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(t for t in self.split(text) if t not in self._ids))

    def decode(self, ids) -> str:
        """The text of `ids`; <EOS> and <UNK> appear as their names."""
        out = []
        for i in np.asarray(ids, dtype=np.int64).reshape(-1):
            if not 0 <= i < len(self.tokens):
                raise SeqError(f"token id {int(i)} is outside the vocabulary "
                               f"(ids 0..{len(self.tokens) - 1})")
            out.append(self.tokens[i])
        return ("" if self.level == "char" else " ").join(out)

    def id(self, token: str) -> int:
        """The id of `token`, or <UNK>'s id when it is not in the vocabulary."""
        return self._ids.get(token, self.unk)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self._ids

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.level == other.level and self.tokens == other.tokens

    __hash__ = None  # mutable lists inside; equality by value

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} {self.level} tokens)"

    def to_json(self) -> dict:
        return {"level": self.level, "tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, d) -> Vocabulary:
        if not isinstance(d, dict) or set(d) != {"level", "tokens"}:
            raise SeqError("not a vocabulary: expected an object with keys "
                           "\"level\" and \"tokens\"")
        return cls(d["tokens"], d["level"])

    def save(self, path) -> None:
        _save_json(path, self.to_json())

    @classmethod
    def load(cls, path) -> Vocabulary:
        return _from_file(cls, path)


class Labels:
    """Class names by id, sorted; no <EOS>/<UNK>."""

    def __init__(self, names: list[str]):
        _check_names(names, "label names")
        if not names:
            raise SeqError("a label set needs at least one label")
        self.names = list(names)
        self._ids = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def build(cls, labels: Iterable[str]) -> Labels:
        """The distinct labels, sorted so that the same data always gives the same ids."""
        _check_texts(labels)
        return cls(sorted(set(labels)))

    def encode(self, label: str) -> int:
        """The id of `label`; SeqError when it is not one of the names."""
        try:
            return self._ids[label]
        except KeyError:
            shown = ", ".join(self.names[:10]) + (", ..." if len(self.names) > 10 else "")
            raise SeqError(f"unknown label {label!r}; expected one of {shown}",
                           hint="labels come from the training data; a label seen only "
                                "in later data is not in the saved label set") from None

    def decode(self, i: int) -> str:
        """The name of class id `i`."""
        if not 0 <= int(i) < len(self.names):
            raise SeqError(f"class id {int(i)} is outside the labels (ids 0..{len(self) - 1})")
        return self.names[int(i)]

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label) -> bool:
        return label in self._ids

    def __eq__(self, other) -> bool:
        if not isinstance(other, Labels):
            return NotImplemented
        return self.names == other.names

    __hash__ = None

    def __repr__(self) -> str:
        return f"Labels({self.names!r})"

    def to_json(self) -> dict:
        return {"names": list(self.names)}

    @classmethod
    def from_json(cls, d) -> Labels:
        if not isinstance(d, dict) or set(d) != {"names"}:
            raise SeqError("not a label set: expected an object with the key \"names\"")
        return cls(d["names"])

    def save(self, path) -> None:
        _save_json(path, self.to_json())

    @classmethod
    def load(cls, path) -> Labels:
        return _from_file(cls, path)


def _split(text: str, level: str) -> list[str]:
    return list(text) if level == "char" else text.split()


def _save_json(path, data: dict) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            f.write("\n")
    except OSError as e:
        raise SeqError(f"{path}: cannot write it ({e.strerror or e})") from None


def _from_file(cls, path):
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise SeqError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SeqError(f"{path}: is a directory, not a JSON file") from None
    except UnicodeDecodeError:
        raise SeqError(f"{path}: not UTF-8 text, so not a saved {cls.__name__}") from None
    except json.JSONDecodeError as e:
        raise SeqError(f"{path}:{e.lineno}:{e.colno}: not JSON ({e.msg})") from None
    except OSError as e:
        raise SeqError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        return cls.from_json(d)
    except SeqError as e:
        # from_json cannot know the file; the user needs to.
        raise SeqError(f"{path}: {e.message}", hint=e.hint) from None
