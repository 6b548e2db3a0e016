"""Layer 3: the reparametrization ``<name> = <name>_orig * <name>_mask`` and everything that keeps it right.

Hook classes and histories, reading a tensor's state, planning and committing
prunes all-or-nothing, refresh and the eval cache, lazy masked reads, and the
module hooks that make pruned modules copy, pickle and load.
Internal: the public names are exported by :mod:`pruneplug`.
"""
