r"""Your knowledge graph merged with your LINCS L1000 level-5 files (the seed paper's experiment).

    perturbjax data check --config experiments/kg_lincs.py \
      --config.data.files.kg=kg.csv --config.data.files.kg_format=primekg \
      --config.data.files.signatures=level5_beta_trt_cp_n720216x12328.gctx \
      --config.data.files.siginfo=siginfo_beta.txt \
      --config.data.files.compoundinfo=compoundinfo_beta.txt \
      --config.data.files.geneinfo=geneinfo_beta.txt --config.data.files.cellinfo=cellinfo_beta.txt
    perturbjax train --config experiments/kg_lincs.py:fold=0 --workdir runs/kg_lincs/fold0 \
      --config.data.files.kg=kg.csv ...   # the same --config.data.files.* as above

`data check` reads the tables and the matrix's ids and prints what each step kept and dropped
(signatures per filter, compounds matched by DrugBank id, InChIKey and name or added with their
targets, readout genes matched, cell lines, the graph's size) in about a minute; `train` then
reads the landmark rows of the kept signatures in blocks and trains. Paths are relative to the
working directory, else to $PERTURBJAX_DATA_DIR. Every key of data.files, data.filters and
data.collapse is described in perturbjax/data/kg_lincs.py (FilesConfig, FilterConfig).

Task: the 978-landmark signature of each (drug, cell line) pair (data.collapse=drug_cell: the
pair's signatures over doses, times and replicates collapsed by MODZ), for drugs held out of
training (split=cold_drug, 5 folds; scaffold holds out Bemis-Murcko scaffolds, cold_cell cell
lines). KG relations derived from the same signatures are named in
data.files.leaky_relations and dropped (Hetionet's CuG, CdG and Gr>G always are).

Model: the relational SGC (models/relational_sgc.py): kernel ridge over the training conditions
in a learned drug x cell-line x dose/time kernel whose drug part propagates through the KG's
relations with learned weights; with data.collapse=drug (one signature per drug) it is the
consensus experiment's winner (warm start from kg_ridge, a second readout on the drugs' direct
targets). Baselines beside it: zero, mean, Tanimoto kNN and kernel ridge, fingerprint, target
and feature ridge, MLP, all tuned on validation.

Variants: fold=K, seed=S, model=NAME (relational_sgc or any model or baseline name),
split=cold_drug|scaffold|cold_cell, collapse=none|drug_cell|drug, test (the real Hetionet
sample and cmapR's 272-signature level-5 GCT with the LINCS tables in $PERTURBJAX_DATA_DIR,
a cold-cell split, as the file holds 3 drugs; tiny models: the test suite's run).
"""

from perturbjax.config import parse_arg
from perturbjax.data.kg_lincs import files_config
from perturbjax.tasks.perturbation_config import base_config, shrink_for_tests

NUM_FOLDS = 5
SPLITS = ("cold_drug", "scaffold", "cold_cell")


def get_config(arg=None):
    arg = parse_arg(arg, fold=0, seed=0, model="relational_sgc", split="cold_drug",
                    collapse="drug_cell", test=False)
    if arg.split not in SPLITS:
        raise ValueError(f"unknown split={arg.split!r}; expected one of {SPLITS}")
    c = base_config()
    c.seed = arg.seed
    c.data.source = "files"
    c.data.update(files_config())
    c.data.collapse = arg.collapse
    c.data.split = arg.split
    c.data.num_folds = NUM_FOLDS
    c.data.fold = arg.fold
    c.data.validation_fraction = 0.15

    c.model.name = arg.model
    c.model.hidden = 32
    c.model.heads = 2
    c.model.dropout = 0.1
    c.model.propagation_steps = 0
    c.model.readout_embedding = True
    c.model.embedded_node_types = []
    c.baselines = ["zero", "mean", "tanimoto_knn", "tanimoto_ridge", "fingerprint_ridge",
                   "target_ridge", "ridge", "mlp"]
    c.train.num_steps = 150
    c.train.batch_size = 64
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 15
    c.train.log_every = 25
    c.train.eval_every = 25
    c.wandb.tags = ["kg", "lincs", "files"]
    if arg.model == "relational_sgc":
        c.model.num_layers = 3  # hops
        c.model.loss = "pearson_centered"
        c.train.batch_size = 1024  # every training condition is a query of every step
        c.train.warmup_steps = 5
        c.train.eval_every = 10
        c.train.log_every = 10
        c.train.num_steps = 60
        if arg.collapse == "drug":  # one condition per drug: the consensus winner's recipe
            c.model.warm_start = "kg_ridge"
            c.model.target_readout = True
            c.train.num_steps = 30
            c.train.eval_every = 5
            c.train.log_every = 5

    if arg.test:
        f = c.data.files
        f.kg, f.kg_format = "hetionet/edges-10.sif", "hetionet"
        f.signatures = "l1000/modzs_n272x978.gct"  # siginfo: its own column metadata
        f.compoundinfo, f.geneinfo = "lincs/pertinfo.tsv.gz", "lincs/geneinfo.tsv.gz"
        f.cellinfo, f.basal = "lincs/cellinfo.tsv.gz", "l1000/transigen_basal.tsv"
        c.data.morgan_bits = 64
        c.data.split = "cold_cell"  # the file holds 3 drugs in 65 cell lines
        shrink_for_tests(c, baselines=["mean", "ridge"])
        if arg.model == "relational_sgc":
            c.train.batch_size = 1024
    return c


def get_sweep():
    """The five folds."""
    return [[f"data.fold={k}"] for k in range(NUM_FOLDS)]
