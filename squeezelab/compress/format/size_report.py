"""Per-layer size report of a ``.sqz`` file, in the style of the Deep Compression tables
(Han et al., arXiv 1510.00149, tables 2-5: weights, % kept, bits per index before and after
Huffman coding, bytes per stream, and the compression ratio).

Every byte count comes from the stream lengths in the file's header, and the rows plus the
container overhead add up to the file size on disk exactly (``check_total`` in the tests).
Ratios are against the fp32 size (4 bytes per parameter, what an fp32 safetensors holds) and,
given the fp32 safetensors file or the model, against gzip and zstd of that file.
"""
from __future__ import annotations

import gzip
import math
import os
from pathlib import Path
from typing import Any

import torch.nn as nn

from squeezelab.compress.format.sqz import SqzFile, read_sqz

_CONTAINER = 4 + 2 + 4 + 4  # magic, version, header length, CRC32


class SizeReport(list):
    """A list of per-tensor rows (dicts) with the file-level ``totals`` dict attached."""

    def __init__(self, rows: list[dict[str, Any]], totals: dict[str, Any]):
        super().__init__(rows)
        self.totals = totals


def _stream_len(entry: dict[str, Any], key: str) -> int:
    return int(entry[key][1])


def size_report(
    source: str | os.PathLike | SqzFile,
    *,
    fp32: str | os.PathLike | nn.Module | None = None,
) -> SizeReport:
    """Sizes of a .sqz file: a list of per-tensor rows, with ``.totals`` for the file.

    A row: ``name``, ``encoding``, ``coder`` (of its streams: huffman, ans or adaptive; None for
    a dense or uniform tensor), ``num_weights``, ``sparsity`` (fraction pruned, 0..1),
    ``num_clusters``, ``index_bits`` (log2 of the codebook size, i.e. before Huffman),
    ``index_bits_huffman`` (stored bits per kept weight, code table included), ``gap_bits`` and
    ``gap_bits_huffman`` (stored bits per kept weight for its position), ``num_fillers``, and
    bytes: ``index_bytes``, ``gap_bytes``, ``codebook_bytes``, ``dense_bytes`` (raw values: a
    dense tensor, or a sparse one's kept values), ``total_bytes``.

    Totals: ``num_params``, ``fp32_bytes`` (4 per parameter), ``tensor_bytes`` (sum of rows),
    ``header_bytes``, ``container_bytes``, ``file_bytes`` (the size on disk), ``ratio_fp32``;
    with ``fp32`` (a safetensors path, or a model whose plain state dict is serialised in
    memory): ``safetensors_bytes``, ``gzip_bytes``, ``zstd_bytes`` and the ratios against them.
    """
    sqz = source if isinstance(source, SqzFile) else read_sqz(source)
    rows = []
    for entry in sqz.entries:
        shape = entry["shape"]
        n = math.prod(shape)
        row: dict[str, Any] = {
            "name": entry["name"], "encoding": entry["encoding"], "shape": list(shape),
            "num_weights": n,
            # the entropy coder of its streams (None for a tensor stored without any)
            "coder": (entry.get("coder", "huffman")
                      if entry["encoding"] in ("shared", "sparse") else None),
        }
        if entry["encoding"] == "shared":
            nnz = int(entry["nnz"])
            index_bytes = _stream_len(entry, "index") + _stream_len(entry, "index_table")
            gap_bytes = _stream_len(entry, "gap") + _stream_len(entry, "gap_table")
            codebook_bytes = _stream_len(entry, "codebook")
            row.update(
                sparsity=1.0 - nnz / n if n else 0.0,
                num_clusters=2 ** int(entry["weight_bits"]),
                index_bits=int(entry["weight_bits"]),
                index_bits_huffman=8 * index_bytes / nnz if nnz else 0.0,
                gap_bits=int(entry["gap_bits"]),
                gap_bits_huffman=8 * gap_bytes / nnz if nnz else 0.0,
                num_fillers=int(entry["num_fillers"]),
                index_bytes=index_bytes, gap_bytes=gap_bytes, codebook_bytes=codebook_bytes,
                dense_bytes=0,
            )
        elif entry["encoding"] == "sparse":  # kept values raw, positions as in "shared"
            nnz = int(entry["nnz"])
            gap_bytes = _stream_len(entry, "gap") + _stream_len(entry, "gap_table")
            row.update(
                sparsity=1.0 - nnz / n if n else 0.0,
                num_clusters=None, index_bits=None, index_bits_huffman=None,
                gap_bits=int(entry["gap_bits"]),
                gap_bits_huffman=8 * gap_bytes / nnz if nnz else 0.0,
                num_fillers=int(entry["num_fillers"]), index_bytes=0, gap_bytes=gap_bytes,
                codebook_bytes=0, dense_bytes=_stream_len(entry, "values"),
            )
        else:
            dense = _stream_len(entry, "data")
            t = sqz.dense[entry["name"]]
            row.update(
                sparsity=(1.0 - int(t.count_nonzero()) / n) if n else 0.0,
                num_clusters=None, index_bits=None, index_bits_huffman=None, gap_bits=None,
                gap_bits_huffman=None, num_fillers=0, index_bytes=0, gap_bytes=0,
                codebook_bytes=0, dense_bytes=dense,
            )
        row["total_bytes"] = (row["index_bytes"] + row["gap_bytes"] + row["codebook_bytes"]
                              + row["dense_bytes"])
        rows.append(row)
    num_params = sum(r["num_weights"] for r in rows)
    tensor_bytes = sum(r["total_bytes"] for r in rows)
    header_bytes = sqz.file_size - _CONTAINER - int(sqz.header["payload_size"])
    totals: dict[str, Any] = {
        "num_params": num_params,
        "fp32_bytes": 4 * num_params,
        "tensor_bytes": tensor_bytes,
        "header_bytes": header_bytes,
        "container_bytes": _CONTAINER,
        # the payload may hold bytes no row claims only if the file was written by another tool
        "unaccounted_bytes": int(sqz.header["payload_size"]) - tensor_bytes,
        "file_bytes": sqz.file_size,
        "ratio_fp32": 4 * num_params / sqz.file_size,
    }
    if fp32 is not None:
        totals.update(_baselines(fp32, sqz.file_size))
    return SizeReport(rows, totals)


def _baselines(fp32: str | os.PathLike | nn.Module, file_bytes: int) -> dict[str, Any]:
    if isinstance(fp32, nn.Module):
        from safetensors.torch import save as st_save

        from squeezelab.compress.quantization.weight_sharing import (
            materialize_,
            shared_modules,
        )
        from squeezelab.models import unwrap_model

        model = unwrap_model(fp32)
        if shared_modules(model):
            import copy

            model = copy.deepcopy(model)
            materialize_(model)
        state = {k: v.detach().cpu().float().contiguous() if v.is_floating_point()
                 else v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        data = st_save(state)
    else:
        data = Path(fp32).read_bytes()
    from squeezelab.extras import import_extra

    zstandard = import_extra("zstandard", "the zstd baseline of a size report against fp32")
    gz = len(gzip.compress(data, compresslevel=9))
    zs = len(zstandard.ZstdCompressor(level=19).compress(data))
    return {
        "safetensors_bytes": len(data), "gzip_bytes": gz, "zstd_bytes": zs,
        "ratio_safetensors": len(data) / file_bytes, "ratio_gzip": gz / file_bytes,
        "ratio_zstd": zs / file_bytes,
    }


def _fmt_bytes(n: float) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{int(n)} B"


def format_size_report(report: SizeReport) -> str:
    """The report as a fixed-width text table (one line per tensor, then the totals)."""
    # "idx b"/"gap b": bits a symbol before entropy coding; "coded": bits a kept weight after
    # it (the paper's "after Huffman"), by the layer's coder
    head = (f"{'layer':<34} {'#weights':>9} {'pruned':>7} {'coder':>8} {'idx b':>5} "
            f"{'coded':>5} {'gap b':>5} {'coded':>5} {'index':>9} {'gaps':>9} {'codebook':>9} "
            f"{'other':>9}")
    lines = [head, "-" * len(head)]
    for r in report:
        shared = r["encoding"] == "shared"
        index = (f"{r['index_bits']:>5} {r['index_bits_huffman']:>5.2f} " if shared
                 else f"{'':>5} {'':>5} ")
        gaps = (f"{r['gap_bits']:>5} {r['gap_bits_huffman']:>5.2f} " if r["gap_bits"]
                else f"{'':>5} {'':>5} ")
        lines.append(
            f"{r['name'][:34]:<34} {r['num_weights']:>9,} {100 * r['sparsity']:>6.1f}% "
            f"{r['coder'] or '':>8} " + index + gaps
            + f"{r['index_bytes']:>9,} {r['gap_bytes']:>9,} {r['codebook_bytes']:>9,} "
            f"{r['dense_bytes']:>9,}"
        )
    t = report.totals
    lines.append("-" * len(head))
    lines.append(
        f"{'total':<34} {t['num_params']:>9,}  tensors {_fmt_bytes(t['tensor_bytes'])}, "
        f"header {_fmt_bytes(t['header_bytes'])}, container {t['container_bytes']} B"
    )
    lines.append(
        f"file size {t['file_bytes']:,} B ({_fmt_bytes(t['file_bytes'])}); fp32 "
        f"{_fmt_bytes(t['fp32_bytes'])}: {t['ratio_fp32']:.1f}x smaller"
    )
    if "gzip_bytes" in t:
        lines.append(
            f"fp32 safetensors {_fmt_bytes(t['safetensors_bytes'])} "
            f"({t['ratio_safetensors']:.1f}x), "
            f"gzip -9 {_fmt_bytes(t['gzip_bytes'])} ({t['ratio_gzip']:.1f}x), "
            f"zstd -19 {_fmt_bytes(t['zstd_bytes'])} ({t['ratio_zstd']:.1f}x)"
        )
    return "\n".join(lines)


__all__ = ["SizeReport", "format_size_report", "size_report"]
