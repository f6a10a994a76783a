"""Files in PrimeKG's `kg.csv` format: `write_primekg_csv` (any rows) and `synthetic_primekg` (a
random graph with PrimeKG's node types, relations and scale), to test and benchmark the loader
(`perturbjax.data.primekg`) without the 1 GB download.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from perturbjax.data.primekg import COLUMNS, NODE_TYPES, RELATIONS
from perturbjax.graph.hetero import EdgeType


def _quoted(values: pa.Array) -> pa.Array:
    """CSV fields as pandas writes them: quoted (with doubled quotes) only where needed."""
    values = pc.cast(values, pa.string())
    needs = pc.match_substring_regex(values, r'[,"\r\n]')
    if not pc.any(needs).as_py():
        return values
    escaped = pc.binary_join_element_wise('"', pc.replace_substring(values, '"', '""'), '"', "")
    return pc.if_else(needs, escaped, values)


def write_primekg_csv(path: str | os.PathLike, table: pa.Table | pd.DataFrame, *,
                      append: bool = False) -> None:
    """Writes rows in kg.csv's exact format: PrimeKG's header, unquoted fields unless needed.

    pyarrow's CSV writer quotes every string, which kg.csv (written by pandas) does not, so the
    lines are joined here with vectorised string kernels instead.

    Args:
      path: the file; created with the header unless `append`.
      table: the 12 PrimeKG columns (any order; extra columns are an error).
      append: add rows to an existing file without writing the header again.
    """
    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, preserve_index=False)
    if set(table.column_names) != set(COLUMNS):
        raise ValueError(f"columns {table.column_names} are not PrimeKG's {list(COLUMNS)}")
    with open(path, "ab" if append else "wb") as f:
        if not append:
            f.write((",".join(COLUMNS) + "\n").encode())
        if table.num_rows == 0:
            return
        fields = [_quoted(table.column(c).combine_chunks()) for c in COLUMNS]
        fields[-1] = pc.binary_join_element_wise(fields[-1], pa.scalar("\n"), "")  # line ends
        f.write(_string_bytes(pc.binary_join_element_wise(*fields, ",")))


def _string_bytes(values: pa.Array) -> memoryview:
    """The concatenated bytes of a string array, without a Python object per value."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    offset_type = np.int32 if values.type == pa.string() else np.int64
    offsets = np.frombuffer(values.buffers()[1], offset_type)
    start, end = offsets[values.offset], offsets[values.offset + len(values)]
    return memoryview(values.buffers()[2])[start:end]


@dataclasses.dataclass(frozen=True)
class SyntheticPrimeKG:
    """What `synthetic_primekg` wrote, to check a loader against.

    Attributes:
      path: the CSV file.
      nodes: node type -> node count.
      relations: relation -> rows (both directions).
      edge_types: str(EdgeType) -> rows, as `HeteroGraph.summary()["edges"]` counts them.
    """

    path: str
    nodes: dict
    relations: dict
    edge_types: dict

    @property
    def num_rows(self) -> int:
        return sum(self.relations.values())

    @property
    def num_nodes(self) -> int:
        return sum(self.nodes.values())


def synthetic_primekg(path: str | os.PathLike, *, n_nodes: int = 129_375, n_edges: int = 8_100_498,
                      seed: int = 0, chunk_rows: int = 1 << 20) -> SyntheticPrimeKG:
    """Writes a random graph in kg.csv's exact format, with PrimeKG's types, relations and scale.

    Node counts per type and row counts per relation are PrimeKG's, scaled to `n_nodes` and
    `n_edges` (each relation keeps at least one edge, and none exceeds the number of distinct
    pairs its types allow). Every undirected edge is written in both directions, as in kg.csv.
    Degrees are skewed (log-normal node weights) and ids repeat across types (NCBI gene 9796 and
    HPO term 9796 can both exist), as in PrimeKG; global indices are a random permutation so a
    loader cannot rely on types occupying index blocks. Some names hold commas or quotes.

    Args:
      path: the CSV file to write.
      n_nodes: total nodes (at least 10, one per type).
      n_edges: total rows; rounded down to even since each edge is written twice.
      seed: random seed; the same arguments write the same file.
      chunk_rows: rows formatted at a time (bounds memory).
    """
    path = os.fspath(path)
    if n_nodes < len(NODE_TYPES):
        raise ValueError(f"n_nodes={n_nodes}: need at least one node per type ({len(NODE_TYPES)})")
    rng = np.random.default_rng(seed)
    type_names = list(NODE_TYPES)
    counts = _apportion([NODE_TYPES[t][0] for t in type_names], n_nodes, minimum=1)
    node_type = np.repeat(np.arange(len(type_names)), counts)
    global_of = rng.permutation(n_nodes)  # node k (type-blocked) has PrimeKG index global_of[k]
    starts = dict(zip(type_names, np.concatenate([[0], np.cumsum(counts)[:-1]])))
    sizes = dict(zip(type_names, counts))
    ids = np.concatenate([_synthetic_ids(rng, t, sizes[t]) for t in type_names])
    names = np.concatenate([_synthetic_names(rng, t, sizes[t]) for t in type_names])
    weights = {t: rng.lognormal(0.0, 1.0, sizes[t]) for t in type_names}

    rel_names = list(RELATIONS)
    capacity = []
    for r in rel_names:
        a, b, _, _ = RELATIONS[r]
        capacity.append(sizes[a] * (sizes[a] - 1) // 2 if a == b else sizes[a] * sizes[b])
    pairs = _apportion([RELATIONS[r][3] // 2 for r in rel_names], n_edges // 2,
                       minimum=1 if n_edges // 2 >= len(rel_names) else 0, capacity=capacity)

    forced = _covering_nodes(rng, rel_names, pairs, sizes)

    displays = sorted({d for r in rel_names for d in RELATIONS[r][2]})
    x_node, y_node, rel_code, disp_code = [], [], [], []
    relation_rows, edge_type_rows = {}, {}
    for k, r in enumerate(rel_names):
        a, b, display, _ = RELATIONS[r]
        src, dst = _sample_pairs(rng, int(pairs[k]), weights[a], weights[b], same=a == b,
                                 forced=forced[k])
        src, dst = src + starts[a], dst + starts[b]
        if len(display) == 1:
            disp = np.full(len(src), displays.index(display[0]), np.int16)
        else:  # drug_protein: mostly targets, then enzymes, transporters, carriers
            p = np.array([0.6, 0.25, 0.1, 0.05])[:len(display)]
            disp = np.array([displays.index(d) for d in display], np.int16)[
                rng.choice(len(display), len(src), p=p / p.sum())]
        x_node += [src, dst]
        y_node += [dst, src]
        rel_code.append(np.full(2 * len(src), k, np.int16))
        disp_code += [disp, disp]
        relation_rows[r] = 2 * len(src)
        for s, t in ((a, b), (b, a)):
            key = str(EdgeType(s, r, t))
            edge_type_rows[key] = edge_type_rows.get(key, 0) + len(src)
    x_node, y_node = np.concatenate(x_node), np.concatenate(y_node)
    rel_code, disp_code = np.concatenate(rel_code), np.concatenate(disp_code)

    # per-node strings are made once; rows take from them by index
    node_index_str = pc.cast(pa.array(global_of), pa.string())
    node_id = pa.array(ids)
    node_name = pa.array(names)
    node_type_str = pa.array(type_names).take(pa.array(node_type))
    node_source = pa.array([NODE_TYPES[t][1] for t in type_names]).take(pa.array(node_type))
    rel_str, disp_str = pa.array(rel_names), pa.array(displays)
    write_primekg_csv(path, pa.table({c: pa.array([], pa.string()) for c in COLUMNS}))
    for start in range(0, len(x_node), chunk_rows):
        sl = slice(start, start + chunk_rows)
        xs, ys = pa.array(x_node[sl]), pa.array(y_node[sl])
        chunk = pa.table({
            "relation": rel_str.take(pa.array(rel_code[sl])),
            "display_relation": disp_str.take(pa.array(disp_code[sl])),
            "x_index": node_index_str.take(xs), "x_id": node_id.take(xs),
            "x_type": node_type_str.take(xs), "x_name": node_name.take(xs),
            "x_source": node_source.take(xs),
            "y_index": node_index_str.take(ys), "y_id": node_id.take(ys),
            "y_type": node_type_str.take(ys), "y_name": node_name.take(ys),
            "y_source": node_source.take(ys),
        })
        write_primekg_csv(path, chunk, append=True)
    appears = np.zeros(n_nodes, bool)
    appears[x_node] = True  # every edge is written both ways, so x covers all endpoints
    written = np.bincount(node_type[appears], minlength=len(type_names))
    return SyntheticPrimeKG(path, {t: int(c) for t, c in zip(type_names, written) if c},
                            relation_rows, {k: v for k, v in edge_type_rows.items() if v})


def _covering_nodes(rng, rel_names, pairs, sizes) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per relation, (source-side, target-side) nodes that must get an edge there.

    kg.csv only holds nodes that have an edge, so for the file to hold all `n_nodes` nodes each
    node is given one edge in a relation of its type: relations are filled largest first, as far
    as their pair counts allow (a cross-type pair covers one node of each side, a same-type pair
    two). Only very small graphs can run out of pairs, leaving some nodes out of the file.
    """
    load = {k: [0, 0] for k in range(len(rel_names))}  # forced nodes per side so far
    chosen = {k: [[], []] for k in range(len(rel_names))}
    for t, n in sizes.items():
        todo = rng.permutation(n)
        for k in sorted(range(len(rel_names)), key=lambda k: -pairs[k]):
            a, b, _, _ = RELATIONS[rel_names[k]]
            if not len(todo) or t not in (a, b):
                continue
            side = 0 if t == a else 1
            room = 2 * pairs[k] - load[k][0] if a == b else pairs[k] - load[k][side]
            take, todo = todo[:max(int(room), 0)], todo[max(int(room), 0):]
            chosen[k][side].append(take)
            load[k][side] += len(take)
    return [tuple(np.concatenate(c[side] or [np.zeros(0, np.int64)]).astype(np.int64)
                  for side in (0, 1)) for k, c in chosen.items()]


def _apportion(weights, total: int, minimum: int = 0, capacity=None) -> np.ndarray:
    """Integers proportional to `weights` summing to `total`, each within [minimum, capacity].

    Largest remainder rounding, so weights that already sum to `total` come back unchanged; what
    a capped entry cannot take goes to the others in proportion.
    """
    weights = np.asarray(weights, np.float64)
    cap = (np.full(len(weights), int(total), np.int64) if capacity is None
           else np.asarray(capacity, np.int64))
    total = min(int(total), int(cap.sum()))
    ideal = weights / weights.sum() * total
    out = np.clip(np.floor(ideal).astype(np.int64), np.minimum(minimum, cap), cap)
    while (left := total - int(out.sum())) != 0:
        if left > 0:
            room = cap - out
            share = np.where(room > 0, weights, 0.0)
            add = np.minimum(np.floor(share / share.sum() * left).astype(np.int64), room)
            if add.sum() == 0:  # the last few go to the largest remainders
                add[np.argmax(np.where(room > 0, ideal - out, -np.inf))] = 1
            out += add
        else:  # minimums pushed the sum over: take from the most over-served entry
            out[np.argmax(np.where(out > minimum, out - ideal, -np.inf))] -= 1
    return out


def _sample_pairs(rng, n_pairs: int, w_src: np.ndarray, w_dst: np.ndarray, same: bool,
                  forced: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`n_pairs` distinct (src, dst) pairs drawn with probability ~ w_src[src] * w_dst[dst].

    Every node in `forced` (source side, target side) is in at least one pair. For same-type
    relations a pair is unordered (src < dst, no self-loops), as the file writes both directions.
    """
    n_s, n_d = len(w_src), len(w_dst)
    if n_pairs == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    p_src, p_dst = w_src / w_src.sum(), w_dst / w_dst.sum()
    fa, fb = forced
    if same:  # forced nodes paired with each other; an odd one out gets a random partner
        nodes = np.concatenate([fa, fb])
        if len(nodes) % 2:
            partner = rng.choice(n_s, p=p_src)
            while partner == nodes[-1]:
                partner = rng.choice(n_s, p=p_src)
            nodes = np.append(nodes, partner)
        a, b = nodes[0::2], nodes[1::2]
        a, b = np.minimum(a, b), np.maximum(a, b)
    else:  # the shorter side is padded with random nodes; the longer side keeps pairs distinct
        m = max(len(fa), len(fb))
        a = np.concatenate([fa, rng.choice(n_s, m - len(fa), p=p_src)])
        b = np.concatenate([fb, rng.choice(n_d, m - len(fb), p=p_dst)])
    forced_keys = np.unique(a.astype(np.int64) * n_d + b)
    need = n_pairs - len(forced_keys)
    capacity = n_s * (n_s - 1) // 2 if same else n_s * n_d
    if need <= 0:
        keys = forced_keys[:n_pairs]
    elif capacity <= 4_000_000 or n_pairs > capacity // 4:
        # dense: every candidate pair, weighted sampling without replacement (Gumbel top-k)
        src, dst = (np.triu_indices(n_s, 1) if same else
                    np.divmod(np.arange(capacity, dtype=np.int64), n_d))
        candidates = src.astype(np.int64) * n_d + dst
        score = np.log(w_src[src]) + np.log(w_dst[dst]) + rng.gumbel(size=len(src))
        score[np.isin(candidates, forced_keys)] = -np.inf
        keys = np.concatenate([forced_keys, candidates[np.argpartition(-score, need - 1)[:need]]])
    else:
        found = np.zeros(0, np.int64)
        while len(found) < need:
            k = int((need - len(found)) * 1.3) + 64
            a, b = rng.choice(n_s, k, p=p_src), rng.choice(n_d, k, p=p_dst)
            if same:
                a, b = np.minimum(a, b), np.maximum(a, b)
                a, b = a[a != b], b[a != b]
            found = np.setdiff1d(np.concatenate([found, a.astype(np.int64) * n_d + b]),
                                 forced_keys)
        keys = np.concatenate([forced_keys, rng.choice(found, need, replace=False)])
    keys = rng.permutation(keys)
    return keys // n_d, keys % n_d


_LETTERS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def _synthetic_ids(rng, node_type: str, n: int) -> np.ndarray:
    """Source-database-like ids, unique within the type; numeric ones collide across types."""
    if node_type == "drug":
        return np.char.add("DB", np.char.zfill(_unique_ints(rng, n, 1, 20_000).astype(str), 5))
    if node_type == "exposure":
        return np.char.add("D", np.char.zfill(_unique_ints(rng, n, 1, 1_000_000).astype(str), 6))
    if node_type == "pathway":
        return np.char.add("R-HSA-", _unique_ints(rng, n, 1, 10_000_000).astype(str))
    if node_type in ("biological_process", "molecular_function", "cellular_component"):
        # GO ids are unique across the three namespaces; draw each from its own range
        offset = {"biological_process": 0, "molecular_function": 1_000_000,
                  "cellular_component": 2_000_000}[node_type]
        return (_unique_ints(rng, n, 1, 1_000_000) + offset).astype(str)
    if node_type == "disease":
        ids = _unique_ints(rng, n, 1, 50_000).astype(str).astype(object)
        grouped = rng.random(n) < 0.05  # PrimeKG merges some MONDO terms: "13924_12592"
        ids[grouped] = [f"{i}_{j}" for i, j in zip(ids[grouped], rng.integers(50_000, 60_000,
                                                                              grouped.sum()))]
        return ids.astype(str)
    high = {"gene/protein": 120_000, "effect/phenotype": 100_000, "anatomy": 100_000}.get(
        node_type, 10 * n + 1_000)
    return _unique_ints(rng, n, 1, max(high, 2 * n)).astype(str)


def _unique_ints(rng, n: int, low: int, high: int) -> np.ndarray:
    return rng.choice(np.arange(low, max(high, low + n)), n, replace=False)


def _synthetic_names(rng, node_type: str, n: int) -> np.ndarray:
    """Display names: gene-symbol-like for genes, words for the rest; a few commas and quotes."""
    letters = _LETTERS[rng.integers(0, 26, (n, 4))]
    stem = np.char.add(np.char.add(np.char.add(letters[:, 0], letters[:, 1]), letters[:, 2]),
                       letters[:, 3])
    number = rng.integers(1, 100, n).astype(str)
    if node_type == "gene/protein":
        return np.char.add(stem, number)
    words = np.char.add(np.char.add(np.char.lower(stem), " "), node_type.split("/")[0])
    names = np.char.add(np.char.add(words, " "), number).astype(object)
    comma = rng.random(n) < 0.05
    names[comma] = [f"{w}, type {k}" for w, k in zip(names[comma], number[comma])]
    quote = rng.random(n) < 0.002
    names[quote] = [f'{w} "{k}"' for w, k in zip(names[quote], number[quote])]
    return names.astype(str)
