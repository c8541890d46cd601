"""lingshu-server: an OpenAI-compatible server for the Lingshu medical multimodal models."""

__version__ = "0.1.0"
