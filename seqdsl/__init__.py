"""seqdsl: recurrent cells written as equations, checked, differentiated and run."""
from .errors import SeqError
from .spec import Spec, instantiate, load, loads

__version__ = "0.1.0"
__all__ = ["SeqError", "Spec", "instantiate", "load", "loads", "__version__"]
