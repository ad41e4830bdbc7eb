"""Atlas."""
