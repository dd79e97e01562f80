"""The files compression writes: the versioned, checksummed ``.sqz`` format (``sqz``, with its
byte layout in ``layout``), the Deep-Compression-style size report, and checkpoints of masked or
weight-shared models between the pipeline's phases (``checkpoints``)."""
from squeezelab.compress.format.checkpoints import (
    Compressible,
    load_compressible,
    save_compressible,
)
from squeezelab.compress.format.size_report import format_size_report, size_report
from squeezelab.compress.format.sqz import (
    SqzFormatError,
    load_compressed,
    read_sqz,
    save_compressed,
)

__all__ = ["Compressible", "SqzFormatError", "format_size_report", "load_compressed",
           "load_compressible", "read_sqz", "save_compressed", "save_compressible", "size_report"]
