"""Text for the text and language-model DataModules: local tables and their splits, Hugging Face loading and
tokenization, and streamed (iterable) text with equal batches per rank and exact resume."""
