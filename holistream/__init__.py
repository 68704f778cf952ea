"""holistream: Holistic landmarks over WebSocket — the shared protocol codec and client."""

__version__ = "0.1.0"
