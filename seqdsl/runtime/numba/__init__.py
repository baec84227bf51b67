"""The numba backend: generated kernels and the compiled library they call.

Before any module here compiles or loads a function, Numba's cache of them
is made to check each against every file of the package (library_cache.py).
"""
from .library_cache import install

install()
