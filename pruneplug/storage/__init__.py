"""Layer 1: how masks are stored -- bool tensors or bit-packed ones (:class:`~pruneplug.PackedMask`).

Internal: the public names are exported by :mod:`pruneplug`.
"""
