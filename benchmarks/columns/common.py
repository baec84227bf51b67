"""What both column-split LSTMs share: the gates' order, the products over
all steps, and the float32 constant one."""
import numpy as np

GATES = "ufoc"  # the stacking order of the gates' weights: u, f, o, c̃ (lstm.seq)
ONE = np.float32(1)  # the kernels are float32: a literal 1 would make float64 of them


def dot(a, b):
    """a @ b on the BLAS the kernels call (the products over all steps)."""
    from seqdsl.runtime.numba.library import dot as compiled_dot
    return compiled_dot(a, b)
