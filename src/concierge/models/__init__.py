"""Model backends behind one small interface: chat and completion (``base.Model``), embeddings
(``base.EmbeddingModel``); the embedded llama.cpp and MiniLM models, OpenAI-compatible
upstreams, the registry with routing and fallback, and the bounded queue in front of a model."""
