"""HTTP and WebSocket edge: aiohttp handlers, origin/token checks, per-address limits."""
