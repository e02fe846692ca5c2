"""The annotation server: ``create_app(settings)`` builds it; ``carina serve`` runs it."""

from carina.server.app import create_app

__all__ = ["create_app"]
