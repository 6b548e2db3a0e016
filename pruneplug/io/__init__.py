"""Layer 5: reading and writing pruned models -- state dicts, checkpoints, reports.

Internal: the public names are exported by :mod:`pruneplug`.
"""
