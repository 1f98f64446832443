"""popproxy's test suite."""
