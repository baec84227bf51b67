"""Which cell to train next: random mutation from the seed cells, or
regularised evolution (Real et al. 2019: a tournament of `sample` cells
drawn from the `population` most recent, the best of them mutated; the
oldest cells leave the population, whatever their score).

The generator is plain Python, with no Ray in it, so that it is tested on
its own; `ray_search.CellSearcher` hands its candidates to Ray Tune.

Reproducible whatever the order trials finish in: candidate i is drawn
from one random stream, and under evolution from the results of trials
0 .. i-workers-1 only, so it waits (`suggest` returns None) until those
have finished. Random search never waits.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace

from ..lang import syntax as S
from ..lang.unparse import unparse_cell
from .explore import check, parent_key
from .mutate import Mutant, mutants

STRATEGIES = ("random", "evolution")
# Mutants drawn for one candidate before the search is declared stuck: a
# cell none of whose mutants is valid and new.
MAX_ATTEMPTS = 2000


@dataclass
class Candidate:
    index: int  # the order it was suggested in; seeds first
    name: str  # the cell's name in its .seq file
    cell: S.CellDef
    key: str  # canonical_key of its step graph
    parent: int | None  # the candidate it was mutated from; None for a seed
    history: tuple[str, ...]  # the mutations from its seed, in order ("seed GRU" first)

    @property
    def source(self) -> str:
        return unparse_cell(self.cell)


@dataclass
class Counts:
    attempts: int = 0  # mutants drawn
    invalid: Counter = field(default_factory=Counter)  # reason -> count
    duplicates: int = 0  # valid, but a cell suggested before
    suggested: int = 0  # distinct valid mutants handed out for training

    def to_json(self) -> dict:
        return {"attempts": self.attempts, "suggested": self.suggested,
                "duplicates": self.duplicates, "invalid": sum(self.invalid.values()),
                "invalid_by_reason": dict(self.invalid.most_common())}


class Generator:
    """The candidates of one search, in order: the seed cells, then
    `budget` distinct valid mutants."""

    def __init__(self, seeds: list[S.CellDef], strategy: str = "random", budget: int = 200,
                 seed: int = 0, workers: int = 1, population: int = 20, sample: int = 5,
                 fits=None):
        """`fits(source, name)`, if given, says why a checked mutant cannot be
        trained (None if it can): such mutants count as invalid."""
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy {strategy!r}: expected one of {STRATEGIES}")
        self.strategy, self.budget, self.workers = strategy, budget, max(1, workers)
        self.population, self.sample, self.fits = population, sample, fits
        self.rng = random.Random(f"search:{seed}")
        self.counts = Counts()
        self.candidates: list[Candidate] = []
        self.scores: dict[int, float] = {}  # index -> score of finished trials
        self.seen: set[str] = set()
        self.seed_indices: list[int] = []
        for cell in seeds:
            key = parent_key(cell)
            if key not in self.seen:  # the same seed twice is trained once
                self.seen.add(key)
                self._add(cell, cell.name, key, None, (f"seed {cell.name}",))
                self.seed_indices.append(len(self.candidates) - 1)
        self.pending = list(self.seed_indices)  # suggested before any mutant

    @property
    def total(self) -> int:
        return len(self.seed_indices) + self.budget

    def _add(self, cell, name, key, parent, history) -> Candidate:
        c = Candidate(len(self.candidates), name, replace(cell, name=name), key, parent,
                      history)
        self.candidates.append(c)
        return c

    def suggest(self) -> Candidate | None | str:
        """The next candidate; None to wait for results; "finished" when the
        budget is spent or no new valid mutant can be found."""
        if self.pending:
            return self.candidates[self.pending.pop(0)]
        if self.counts.suggested >= self.budget:
            return "finished"
        parent = self._parent()
        if parent is None:
            return None
        return self._mutant_of(parent) or "finished"

    def complete(self, index: int, score: float) -> None:
        self.scores[index] = score

    def _parent(self) -> Candidate | None:
        if self.strategy == "random":
            return self.candidates[self.rng.choice(self.seed_indices)]
        visible = len(self.candidates) - self.workers  # trials whose results may be used
        if any(i not in self.scores for i in range(max(visible, 0))):
            return None
        scored = [i for i in range(max(visible, 0)) if self.scores[i] == self.scores[i]
                  and self.scores[i] < float("inf")]
        alive = scored[-self.population:]  # age-based removal: the oldest leave first
        if not alive:
            return self.candidates[self.rng.choice(self.seed_indices)]
        drawn = self.rng.sample(alive, min(self.sample, len(alive)))
        return self.candidates[min(drawn, key=lambda i: (self.scores[i], i))]

    def _mutant_of(self, parent: Candidate) -> Candidate | None:
        for _ in range(MAX_ATTEMPTS):
            mutant = next(mutants(parent.cell, self.rng, 1), None)
            if mutant is None:
                return None
            self.counts.attempts += 1
            checked = check(Mutant(replace(mutant.cell, name=parent.cell.name),
                                   mutant.description, mutant.kind))
            if isinstance(checked, str):
                self.counts.invalid[checked] += 1
            elif checked.key in self.seen:
                self.counts.duplicates += 1
            elif self.fits is not None and (why := self.fits(checked.source, parent.cell.name)):
                self.seen.add(checked.key)  # drawn again, it is a duplicate
                self.counts.invalid[why] += 1
            else:
                self.seen.add(checked.key)
                self.counts.suggested += 1
                seed_name = self.candidates[self._seed_of(parent)].name
                return self._add(checked.mutant.cell, f"{seed_name}_{len(self.candidates)}",
                                 checked.key, parent.index,
                                 parent.history + (mutant.description,))
        return None

    def _seed_of(self, c: Candidate) -> int:
        while c.parent is not None:
            c = self.candidates[c.parent]
        return c.index
