"""Column-split LSTM kernels, hand-written: see benchmarks/column_steps.py."""
