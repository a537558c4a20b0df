"""Stoker shard sets: the metadata ``stoker pack`` writes beside litdata's chunks, packing any source into
them, streaming their splits (equal batches per rank, exact resume, evaluation once), decoding their
samples in the loader workers, and decoding them with NVIDIA DALI."""
