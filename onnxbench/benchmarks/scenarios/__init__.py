"""What one cell measures: one module per scenario (prefill, generate) behind one contract."""
