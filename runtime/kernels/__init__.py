"""Sparse-aware linear, matmul and convolution kernels on compressed weights.

Build a :class:`.formats.CompressedWeight` once from the Core ML parameters (``formats.from_*``),
then call :func:`.linear.linear`, :func:`.linear.matmul` or :func:`.conv.conv` on it. The
kernels decode the stored values on the fly; ``weight.dense()`` is the decoded fp32 reference.
:func:`.choose.choose_strategy` documents which strategy runs when none is given.

The functions are imported from their modules (``from sparseblob.runtime.kernels.linear import
linear``), so that the module names ``linear`` and ``conv`` stay bound to the modules.
"""
