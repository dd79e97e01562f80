"""Entropy coding of compressed weights: canonical Huffman codes (Deep Compression, arXiv
1510.00149), rANS under a stored static model (``ans``, .sqz version 3), and the relative (gap)
coding of sparse positions."""
from squeezelab.compress.coding.huffman import huffman_decode, huffman_encode
from squeezelab.compress.coding.sparse_index import decode_positions, encode_positions

__all__ = ["decode_positions", "encode_positions", "huffman_decode", "huffman_encode"]
