"""One streaming session's pure state: frame slot, outbox, stats, admission policy."""
