"""Backends that run the four DAIN stages, and the runner that chains them over a stream."""
from .backend import Backend, available_backends, create_backend
from .runner import Runner

__all__ = ["Backend", "Runner", "available_backends", "create_backend"]
