"""Named streams: the in-process hub and the Redis relay across instances."""
