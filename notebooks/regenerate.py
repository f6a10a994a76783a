"""Runs every notebook (or those named) top to bottom with its full settings and writes the
outputs in place, as they are committed.

    export PERTURBJAX_DATA_DIR=../shared/data        # the real-data walkthrough reads it
    python notebooks/regenerate.py                   # all three: about 10 minutes, 2 CPU cores
    python notebooks/regenerate.py quickstart.ipynb  # one

Needs the `dev` extra (nbclient, ipykernel). Each notebook runs in a fresh Python kernel from
notebooks/, with matplotlib's inline backend (so the figures land in the notebook as PNGs);
the kernel inherits the environment, with the data directory made absolute.
"""

import argparse
import glob
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def regenerate(path: str, timeout_s: int = 3600) -> float:
    """Executes `path` in place; returns the seconds it took.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell failed (the notebook is left unwritten).
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    start = time.time()
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3", record_timing=False,
                   resources={"metadata": {"path": HERE}}).execute()
    nbformat.write(drop_noise(nb), path)
    return time.time() - start


# A kernel without ipywidgets warns once, on importing tqdm.auto (the training loop's progress
# bars, switched off in the notebooks): noise to a reader, so the committed copy leaves it out.
NOISE = ("TqdmWarning: IProgress not found", "from .autonotebook import tqdm as notebook_tqdm")


def drop_noise(nb):
    """`nb` without the NOISE lines of its stderr outputs (and outputs left empty)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                lines = [line for line in out.text.splitlines(keepends=True)
                         if not any(n in line for n in NOISE)]
                out.text = "".join(lines)
                if not out.text.strip():
                    continue
            kept.append(out)
        cell.outputs = kept
    return nb


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="file names in notebooks/ (default: all)")
    args = parser.parse_args(argv)
    paths = ([os.path.join(HERE, os.path.basename(n)) for n in args.notebooks]
             or sorted(glob.glob(os.path.join(HERE, "*.ipynb"))))
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        parser.error(f"no such notebook: {', '.join(missing)}")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend, not a headless one
    if os.environ.get("PERTURBJAX_DATA_DIR"):
        os.environ["PERTURBJAX_DATA_DIR"] = os.path.abspath(os.environ["PERTURBJAX_DATA_DIR"])
    for path in paths:
        print(f"{os.path.basename(path)}: running ...", flush=True)
        seconds = regenerate(path)
        print(f"{os.path.basename(path)}: {seconds:.0f} s, {os.path.getsize(path) / 1e3:.0f} kB",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
