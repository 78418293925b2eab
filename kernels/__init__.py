"""Numba kernels, each a pure array function writing into a given buffer, each with a NumPy twin.

Set NUMBA_DISABLE_JIT=1 to run every kernel as plain Python (the tests pass both ways).
This package imports only NumPy and Numba.
"""
