"""Benchmark: read the landmark rows of selected signatures from a LINCS-size GCTX in blocks.

    python benchmarks/gctx_read.py                              # 1/40 of LINCS 2020's columns
    python benchmarks/gctx_read.py --fraction 0.1 --out gctx_read.json

Writes a GCTX with LINCS 2020's level-5 dimensions (12,328 genes) at `--fraction` of its
720,216 signature columns, float32, chunked as CMap's writers chunk: (1000 genes, 262
signatures) for float32 with the default `max_chunk_kb=1024`, from `set_data_matrix_chunk_size`
in cmapPy/pandasGEXpress/write_gctx.py (github.com/cmap/cmapPy at d1652c3) and the same formula
in cmapR's `write_gctx` (R/io.R), which passes it to HDF5; the matrix is stored [signatures,
genes], so its HDF5 chunks are (262, 1000). (cmapPy at that commit computes the chunk shape but
does not pass it to `create_dataset`, so cmapPy's own files are contiguous: `--chunks none`.)
Row ids are Entrez-like numbers, column ids LINCS-like signature ids; no other metadata.

Then, `--reps` times, alternating so both see the same disk conditions:
  (a) the disk's sequential read speed: the whole file with plain unbuffered 8 MiB reads;
  (b) `read_gctx_subset` of 978 landmark rows (`--landmark-rows scattered`: random rows, so
      every chunk column holds some, the worst case for CMap's chunks; `first`: rows 0-977) x a
      random `--select` share of the signatures in random order, in a fresh subprocess that
      first reads one entry (so the code and libraries the reader uses are loaded): wall time,
      throughput of the file bytes the reader spans and of the selected bytes, and the peak
      RSS increase over the RSS just before the call (VmHWM reset through
      /proc/self/clear_refs, else ru_maxrss), against the selected matrix's bytes.
Before each (a) and (b) the file is dropped from this machine's page cache with
fsync + posix_fadvise(POSIX_FADV_DONTNEED), and mincore() reports the share of its pages still
cached. A virtual machine's host may still cache the disk image, so "cold" means cold in this
kernel's page cache; (a) and (b) are measured the same way. One more (b) runs with the file in
the page cache (warm), which shows the reader's own CPU cost.

(c) Extrapolation to the full 720,216 columns, linear in columns: spanned and selected bytes and
times scale with the column count. The peak is split into the selected matrix (scales), the
read buffer (`--block-mib`, fixed) and the rest (ids, metadata, the block's selected part,
HDF5's own buffers), given as a range: the rest kept fixed, and the rest scaled with the
columns (an upper bound: part of it does not grow).

Prints a table; `--out FILE` writes every measurement as JSON.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np

LINCS_COLS, LINCS_GENES, N_LANDMARKS = 720_216, 12_328, 978
MIB = 1 << 20


def cmap_chunks(n_rows: int, n_cols: int, itemsize: int, max_chunk_kb: int = 1024
                ) -> tuple[int, int]:
    """HDF5 chunk shape [signatures, genes] that CMap's writers use for a [genes, signatures]
    matrix: cmapPy write_gctx.set_data_matrix_chunk_size / cmapR write_gctx."""
    elem_per_kb = max_chunk_kb * 8 // (8 * itemsize)  # cmapPy: (max_chunk_kb * 8) / 32 for float32
    row_chunk = min(n_rows, 1000)
    col_chunk = min(max_chunk_kb * elem_per_kb // row_chunk, n_cols)
    return col_chunk, row_chunk


def write_file(path: str, n_genes: int, n_cols: int, chunks, dtype, seed: int) -> float:
    """Writes the benchmark GCTX (to `path`.partial, renamed when complete); seconds taken."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rids = rng.choice(np.arange(1, 10 * n_genes), n_genes, replace=False).astype(str)
    cells = np.array(["A375", "MCF7", "PC3", "VCAP", "HA1E", "HT29", "A549", "HEPG2"])
    plate = np.arange(n_cols) // 384
    cids = np.char.add(np.char.add(np.char.add("CPC", np.char.zfill(plate.astype(str), 4)), "_"),
                       cells[plate % cells.size])
    cids = np.char.add(np.char.add(cids, "_24H:BRD-K"),
                       np.char.zfill(np.arange(n_cols).astype(str), 8))
    partial = path + ".partial"
    with h5py.File(partial, "w") as f:
        matrix = f.create_dataset("0/DATA/0/matrix", (n_cols, n_genes), dtype=dtype,
                                  chunks=chunks)
        step = (chunks[0] if chunks else 256) * 8
        for lo in range(0, n_cols, step):
            hi = min(lo + step, n_cols)
            matrix[lo:hi] = rng.standard_normal((hi - lo, n_genes), dtype=np.float32)
        f["0/META/ROW/id"] = np.char.encode(rids)
        f["0/META/COL/id"] = np.char.encode(cids)
        f.attrs["version"] = b"GCTX1.0"
    os.replace(partial, path)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------ page cache

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def cached_share(path: str) -> float | None:
    """Share of the file's pages in this kernel's page cache (mincore), None if unavailable."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return None
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(addr, size, vec) != 0:
                return None
            return float((np.frombuffer(vec, np.uint8) & 1).mean())
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def drop_from_cache(path: str) -> float | None:
    """Evicts the file from the page cache; returns the share still cached afterwards."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return cached_share(path)


def sequential_read(path: str) -> dict:
    """Reads the whole file with plain 8 MiB reads: seconds and MB/s."""
    buf = bytearray(8 * MIB)
    view = memoryview(buf)
    n = 0
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while k := f.readinto(view):
            n += k
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes": n, "mb_per_s": n / seconds / 1e6}


# ------------------------------------------------------------------------------ measured read

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def child(selection: str, path: str, block_bytes: int, cold: bool) -> None:
    """The measured read, in its own process: prints one JSON line.

    A first read of one entry loads the code and libraries the reader uses, so the peak counts
    what the read allocates; then the file leaves the page cache (when `cold`) and the
    high-water mark is reset.
    """
    from perturbjax.data.lincs import read_gctx_subset

    sel = np.load(selection)
    rows, cols = sel["rows"], sel["cols"]
    read_gctx_subset(path, rows[:1], cols[:1], block_bytes=block_bytes)
    cached = drop_from_cache(path) if cold else cached_share(path)
    try:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        how = "VmHWM after resetting it via /proc/self/clear_refs"
    except OSError:
        how = "ru_maxrss (peak since the process started)"
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    gct, report = read_gctx_subset(path, rows, cols, block_bytes=block_bytes)
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    print(json.dumps({"seconds": seconds, "rss_before_kib": before, "peak_kib": peak,
                      "peak_increase_bytes": (peak - before) * 1024, "peak_how": how,
                      "selected_bytes": int(gct.data.nbytes), "shape": list(gct.shape),
                      "bytes_read": report.notes["bytes_read"],
                      "read_calls": report.notes["read_calls"],
                      "buffer_bytes": report.notes["buffer_bytes"],
                      "cached_before": cached,
                      "checksum": float(np.nansum(gct.data, dtype=np.float64))}))


def measured_read(selection: str, path: str, block_bytes: int, cold: bool) -> dict:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", selection, path,
                          str(block_bytes), "cold" if cold else "warm"],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the measured read failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ report

def _mb(x: float) -> str:
    return f"{x / 1e6:,.1f}"


def summarise(runs: list[dict], key: str) -> dict:
    values = [r[key] for r in runs]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def print_table(res: dict) -> None:
    f, sel, ex = res["file"], res["selection"], res["extrapolated"]
    disk, cold, warm = res["disk_sequential"], res["subset_cold"], res["subset_warm"]
    print(f"\nGCTX: {f['n_cols']:,} signatures x {f['n_genes']:,} genes {f['dtype']} "
          f"({f['fraction']:.4g} of LINCS 2020's {LINCS_COLS:,}), chunks {f['chunks']}, "
          f"{f['bytes'] / 1e9:.3f} GB, written in {f['write_seconds']:.1f} s")
    print(f"selection: {sel['rows']} landmark rows ({sel['landmark_rows']}) x "
          f"{sel['cols']:,} signatures ({sel['share']:.0%}, random order) = "
          f"{_mb(sel['bytes'])} MB float32; read buffer {res['block_mib']:g} MiB")
    print(f"page cache: dropped before each cold read; share still cached: "
          f"{res['cached_after_drop']}")
    m = res["machine"]
    print(f"machine: {m['cpus']} CPUs, Python {m['python']}, h5py {m['h5py']}, HDF5 {m['hdf5']}, "
          f"numpy {m['numpy']}")
    rows = [
        ("disk sequential read, MB/s", disk, "{:,.0f}"),
        ("subset read (cold), s", cold["seconds"], "{:.2f}"),
        ("  MB/s of file bytes spanned", cold["spanned_mb_per_s"], "{:,.0f}"),
        ("  MB/s of selected bytes", cold["selected_mb_per_s"], "{:,.1f}"),
        ("  spanned MB/s / disk MB/s", cold["vs_disk"], "{:.2f}"),
        ("peak RSS increase, MB",
         {k: cold["peak_increase_bytes"][k] / 1e6 for k in ("median", "min", "max")}, "{:,.1f}"),
        ("  / selected matrix bytes", cold["peak_ratio"], "{:.2f}"),
        ("subset read (warm cache), s", warm["seconds"], "{:.2f}"),
        ("  MB/s of file bytes spanned", warm["spanned_mb_per_s"], "{:,.0f}"),
    ]
    print(f"\n{'':34s}{'median':>10s}{'min':>10s}{'max':>10s}   ({res['reps']} runs)")
    for label, s, fmt in rows:
        print(f"{label:34s}" + "".join(f"{fmt.format(s[k]):>10s}" for k in ("median", "min",
                                                                             "max")))
    print(f"\nfile bytes spanned by the read: {_mb(cold['bytes_read'])} MB of "
          f"{_mb(f['bytes'])} MB in {cold['read_calls']} read calls")
    print(f"peak RSS increase = selected matrix {_mb(sel['bytes'])} MB + read buffer "
          f"{_mb(cold['buffer_bytes'])} MB + the rest {_mb(cold['rest_bytes'])} MB "
          f"(median run; peak from {cold['peak_how']})")
    print(f"\nextrapolated to {LINCS_COLS:,} columns (x{ex['scale']:.1f}, linear in columns):")
    print(f"  file {ex['file_gb']:.1f} GB; spanned {ex['spanned_gb']:.1f} GB; selected matrix "
          f"{ex['selected_gb']:.2f} GB")
    print(f"  subset read {ex['subset_seconds']:.0f} s at the median cold throughput "
          f"(the disk read of the whole file: {ex['disk_seconds']:.0f} s)")
    print(f"  peak RSS increase {ex['peak_gb_rest_fixed']:.2f} - {ex['peak_gb']:.2f} GB = "
          f"{ex['peak_ratio_rest_fixed']:.2f} - {ex['peak_ratio']:.2f}x the selected matrix "
          f"(read buffer fixed; the rest fixed - scaled with the columns)")


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "cold")
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fraction", type=float, default=1 / 40,
                        help="share of LINCS 2020's 720,216 columns to write (default 1/40)")
    parser.add_argument("--select", type=float, default=0.4,
                        help="share of the signatures read (default 0.4)")
    parser.add_argument("--landmark-rows", choices=("scattered", "first"), default="scattered")
    parser.add_argument("--chunks", default="cmap",
                        help="'cmap' (CMap's writers' chunks), 'none' (contiguous), or S,G")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--block-mib", type=float, default=None,
                        help="read buffer (default: read_gctx_subset's default)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="where to write the file (kept, and reused when the same "
                                      "file is asked for again); default: a temporary folder")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args(argv)

    from perturbjax.data.lincs import DEFAULT_BLOCK_BYTES

    dtype = np.dtype(args.dtype)
    n_cols, n_genes = max(1, round(LINCS_COLS * args.fraction)), LINCS_GENES
    if args.chunks == "cmap":
        chunks = cmap_chunks(n_genes, n_cols, dtype.itemsize)
    elif args.chunks == "none":
        chunks = None
    else:
        chunks = tuple(int(x) for x in args.chunks.split(","))
    block_bytes = int(args.block_mib * MIB) if args.block_mib else DEFAULT_BLOCK_BYTES

    workdir = args.dir or tempfile.mkdtemp(prefix="gctx-read-")
    os.makedirs(workdir, exist_ok=True)
    layout = "contiguous" if chunks is None else f"{chunks[0]}x{chunks[1]}"
    path = os.path.join(workdir, f"bench_n{n_cols}x{n_genes}_{args.dtype}_{layout}"
                                 f"_seed{args.seed}.gctx")
    try:
        write_seconds = 0.0
        if not os.path.exists(path):
            write_seconds = write_file(path, n_genes, n_cols, chunks, dtype, args.seed)
        with h5py.File(path, "r") as f:
            rids = f["0/META/ROW/id"][()].astype(str)
            cids = f["0/META/COL/id"][()].astype(str)
        rng = np.random.default_rng(args.seed + 1)
        rows = (rids[rng.choice(n_genes, N_LANDMARKS, replace=False)]
                if args.landmark_rows == "scattered" else rids[:N_LANDMARKS])
        cols = cids[rng.choice(n_cols, max(1, round(args.select * n_cols)), replace=False)]
        selection = os.path.join(workdir, "selection.npz")
        np.savez(selection, rows=rows, cols=cols)
        file_bytes = os.path.getsize(path)

        disk, cold, cached = [], [], []
        for _ in range(args.reps):
            cached.append(drop_from_cache(path))
            disk.append(sequential_read(path))
            cold.append(measured_read(selection, path, block_bytes, cold=True))
            cached.append(cold[-1]["cached_before"])
        sequential_read(path)  # into the page cache
        warm = measured_read(selection, path, block_bytes, cold=False)
        assert len({r["checksum"] for r in cold + [warm]}) == 1, "reads disagree"
    finally:
        if not args.dir:
            shutil.rmtree(workdir, ignore_errors=True)

    for r in cold + [warm]:
        r["spanned_mb_per_s"] = r["bytes_read"] / r["seconds"] / 1e6
        r["selected_mb_per_s"] = r["selected_bytes"] / r["seconds"] / 1e6
        r["peak_ratio"] = r["peak_increase_bytes"] / r["selected_bytes"]
    disk_med = statistics.median(d["mb_per_s"] for d in disk)
    for r in cold:
        r["vs_disk"] = r["spanned_mb_per_s"] / disk_med
    selected_bytes = cold[0]["selected_bytes"]
    cold_summary = {k: summarise(cold, k) for k in ("seconds", "spanned_mb_per_s",
                                                    "selected_mb_per_s", "vs_disk",
                                                    "peak_increase_bytes", "peak_ratio")}
    cold_summary.update(bytes_read=cold[0]["bytes_read"], read_calls=cold[0]["read_calls"],
                        peak_how=cold[0]["peak_how"], runs=cold)
    scale = LINCS_COLS / n_cols
    peak = cold_summary["peak_increase_bytes"]["median"]
    buffer = cold[0]["buffer_bytes"]
    rest = peak - selected_bytes - buffer  # ids, metadata, the block's selected part, HDF5
    cold_summary.update(buffer_bytes=buffer, rest_bytes=rest)
    peak_full = selected_bytes * scale + buffer + rest * scale  # upper: the rest grows too
    peak_full_fixed = selected_bytes * scale + buffer + rest  # lower: the rest does not grow
    res = {
        "file": {"n_cols": n_cols, "n_genes": n_genes, "fraction": n_cols / LINCS_COLS,
                 "dtype": args.dtype, "chunks": list(chunks) if chunks else None,
                 "bytes": file_bytes, "write_seconds": write_seconds},
        "selection": {"rows": N_LANDMARKS, "landmark_rows": args.landmark_rows,
                      "cols": len(cols), "share": len(cols) / n_cols, "bytes": selected_bytes},
        "block_mib": block_bytes / MIB,
        "reps": args.reps,
        "cached_after_drop": [None if c is None else round(c, 4) for c in cached],
        "disk_sequential": {**summarise(disk, "mb_per_s"), "runs": disk},
        "subset_cold": cold_summary,
        "subset_warm": {k: {"median": warm[k], "min": warm[k], "max": warm[k]}
                        for k in ("seconds", "spanned_mb_per_s", "selected_mb_per_s")}
        | {"run": warm},
        "extrapolated": {
            "scale": scale, "file_gb": file_bytes * scale / 1e9,
            "spanned_gb": cold[0]["bytes_read"] * scale / 1e9,
            "selected_gb": selected_bytes * scale / 1e9,
            "subset_seconds": cold[0]["bytes_read"] * scale / 1e6
            / cold_summary["spanned_mb_per_s"]["median"],
            "disk_seconds": file_bytes * scale / 1e6 / disk_med,
            "peak_gb": peak_full / 1e9, "peak_ratio": peak_full / (selected_bytes * scale),
            "peak_gb_rest_fixed": peak_full_fixed / 1e9,
            "peak_ratio_rest_fixed": peak_full_fixed / (selected_bytes * scale)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
                    "numpy": np.__version__},
        "command": " ".join([os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:])),
    }
    print_table(res)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
