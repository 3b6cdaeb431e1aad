"""Sparse-aware linear, matmul and convolution kernels on compressed weights."""
