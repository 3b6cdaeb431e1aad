"""Cost accounting and latency model of compressed weights on Apple devices."""
