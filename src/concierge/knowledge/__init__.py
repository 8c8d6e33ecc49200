"""Knowledge bases: parsing, chunking, embedding and the hybrid index behind retrieval."""
