"""perturbjax: knowledge-graph GNNs for drug-induced gene-expression perturbations, in JAX."""
import re

from setuptools import find_packages, setup

# One source of truth: perturbjax/__init__.py (read, not imported: that needs the dependencies).
with open("perturbjax/__init__.py", encoding="utf-8") as f:
    VERSION = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)

setup(
    name="perturbjax",
    version=VERSION,
    description=(
        "Heterogeneous graph neural networks over biomedical knowledge graphs for predicting "
        "drug-induced differential expression (LINCS L1000), in JAX/Flax."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["perturbjax", "perturbjax.*"]),
    package_data={"perturbjax.graph.kernels": ["*.cc"]},  # compiled on first use
    install_requires=[
        "jax>=0.8",
        "flax>=0.12",
        "optax>=0.2.4",
        "jraph>=0.0.6.dev0",
        "orbax-checkpoint>=0.11",
        "numpy>=1.26",
        "pandas>=2.1",
        "pyarrow>=14",
        "h5py>=3.9",
        "rdkit>=2024.3",
        "wandb>=0.19",
        "ml_collections>=1.0",
        "tqdm>=4.66",
        "matplotlib>=3.7",
        "anndata>=0.10",
        "scipy>=1.11",
    ],
    extras_require={
        "dev": ["pytest>=8", "nbformat>=5.9", "nbclient>=0.10", "ipykernel>=6", "ruff>=0.6"],
        "bench": ["torch==2.13.0", "torch_geometric>=2.6"],
        "docs": ["mkdocs>=1.6", "mkdocs-material>=9.5", "mkdocstrings[python]>=1.0"],
    },
    entry_points={"console_scripts": ["perturbjax=perturbjax.cli:main"]},
)
