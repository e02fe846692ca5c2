"""The server's services: plain classes over the workspace, with no FastAPI import."""
