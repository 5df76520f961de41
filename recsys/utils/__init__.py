"""Small shared helpers (atomic file writes, allocator settings)."""
