"""Layer 4: the strategy registry -- pluggy manager, entry-point plugins, describing strategies.

Internal: the public names are exported by :mod:`pruneplug`.
"""
