"""Layer 2: amounts, exact k-lowest selection (per tensor, per slice, across tensors) and importance scores.

Nothing here knows modules or hooks; it turns scores into keep-masks.
Internal: the public names are exported by :mod:`pruneplug`.
"""
