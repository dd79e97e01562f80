"""Compression: pruning masks, k-means weight sharing, quantizers, Huffman coding and the .sqz file
format, as pure tensor functions under thin in-place model transforms ending in ``_``."""
