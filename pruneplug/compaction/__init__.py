"""Layer 6: physical compaction -- removing pruned channels for real, and measuring what it saved."""
