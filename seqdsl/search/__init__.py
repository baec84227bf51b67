"""An architecture search over cells: mutations of a cell's syntax tree
(`mutate`), each printed as the `.seq` source a user would write
(`seqdsl.lang.unparse`), checked like a user's cell, and told apart from
cells already seen by a canonical form of the step graph (`canonical`);
`explore` ties them together. `strategy` picks the cells to train (random
mutation, regularised evolution), `tasks` and `trial` train one for a fixed
budget, `ray_search` runs the trials on Ray Tune (the optional extra, not
imported here) and `leaderboard` writes the results."""
from .canonical import canonical_form, canonical_key
from .explore import Checked, Exploration, check, explore, reason
from .mutate import MUTATIONS, Mutant, mutants, mutate

__all__ = ["MUTATIONS", "Mutant", "mutate", "mutants", "canonical_form", "canonical_key",
           "Checked", "Exploration", "check", "explore", "reason"]
