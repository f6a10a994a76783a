r"""Cell-type classification on a cell text-omic signalling graph dataset (OmniCellTOSG layout).

    # once: the real PBMC data (700 cells, 10 cell types) on the curated human PPI network
    perturbjax tosg build --h5ad ../shared/data/singlecell/pbmc68k_reduced.h5ad \
      --network ../shared/data/ppi/protein-interactions.txt.gz \
      --label-columns bulk_labels=CMT_name louvain phase --out data/pbmc68k_tosg
    # one run per model and seed (workdirs ROOT/model=NAME,seed=S through the launcher):
    perturbjax launch --config experiments/tosg_celltype.py --sweep --root runs/tosg_celltype \
      --target local --config.data.root=data/pbmc68k_tosg

Any dataset in the layout works unchanged: `--config.data.root=ROOT
--config.data.label_column=COL` (a metadata column or an alias: cell_type, disease, sex, age,
tissue) and `--config.data.conditions='["tissue=blood"]'` to select samples. The split is by
donor when the metadata names donors, else stratified random (pbmc68k_reduced has no donor
ids: its summary says so); validation macro-F1 selects the step, the test part is scored once,
and logistic regression, an MLP and the majority class run beside every model.

Variants: model=NAME (gcn, gat, gin, transformer, or a baseline), seed=S, test.
"""

from perturbjax.config import parse_arg
from perturbjax.tasks.cells import base_config

MODELS = ("gcn", "gat", "gin", "transformer")
SEEDS = (0, 1, 2)


def get_config(arg=None):
    arg = parse_arg(arg, model="gcn", seed=0, test=False)
    c = base_config()
    c.seed = arg.seed
    c.data.label_column = "cell_type"
    c.model.name = arg.model
    c.model.hidden = 32
    c.model.num_layers = 2
    c.model.heads = 2
    c.model.node_embedding = True  # genes are the same nodes in every split
    c.train.num_steps = 300
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.wandb.tags = ["tosg", "cell_type"]
    if arg.test:
        c.model.hidden = 8
        c.train.update(num_steps=6, batch_size=16, warmup_steps=2, log_every=3, eval_every=3)
        c.train.checkpoint.every = 3
        c.baselines = ["majority", "logreg"]
        c.wandb.mode = "disabled"
    return c


def get_sweep():
    """Every graph model over three seeds."""
    return [[f"model.name={m}", f"seed={s}"] for m in MODELS for s in SEEDS]
