"""Layer 5: the native functions (prune, prune_global, remove, the strategy catalogue).

Internal: the public names are exported by :mod:`pruneplug`.
"""
