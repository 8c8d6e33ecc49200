"""The HTTP surface: OpenAI-compatible ``/v1``, the admin API, health and metrics."""
