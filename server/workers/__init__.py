"""Inference workers: the pool (parent side), the worker process, its IPC, decode and pipelines."""
