"""PrimeKG kg.csv loader and the synthetic generator, on small files in kg.csv's exact format."""

import json
import logging

import numpy as np
import pandas as pd
import pytest

from perturbjax.data.primekg import COLUMNS, NODE_TYPES, RELATIONS, load_primekg
from perturbjax.data.primekg_synthetic import synthetic_primekg, write_primekg_csv
from perturbjax.graph.hetero import EdgeType

HEADER = ",".join(COLUMNS)

# Real-looking rows: every undirected edge twice, as in kg.csv. Gene 9796 and phenotype 9796
# share an id across types (allowed); one exposure name needs quoting.
ROWS = [
    "protein_protein,ppi,0,9796,gene/protein,PHYHIP,NCBI,8889,56992,gene/protein,KIF15,NCBI",
    "protein_protein,ppi,8889,56992,gene/protein,KIF15,NCBI,0,9796,gene/protein,PHYHIP,NCBI",
    "protein_protein,ppi,1,7918,gene/protein,GPANK1,NCBI,2798,9240,gene/protein,PNMA1,NCBI",
    "protein_protein,ppi,2798,9240,gene/protein,PNMA1,NCBI,1,7918,gene/protein,GPANK1,NCBI",
    "drug_protein,target,14012,DB00001,drug,Lepirudin,DrugBank,1,7918,gene/protein,GPANK1,NCBI",
    "drug_protein,target,1,7918,gene/protein,GPANK1,NCBI,14012,DB00001,drug,Lepirudin,DrugBank",
    "indication,indication,14012,DB00001,drug,Lepirudin,DrugBank,27158,5044,disease,"
    "hypertensive disorder,MONDO",
    "indication,indication,27158,5044,disease,hypertensive disorder,MONDO,14012,DB00001,drug,"
    "Lepirudin,DrugBank",
    "anatomy_protein_present,expression present,63000,948,anatomy,heart,UBERON,0,9796,"
    "gene/protein,PHYHIP,NCBI",
    "anatomy_protein_present,expression present,0,9796,gene/protein,PHYHIP,NCBI,63000,948,"
    "anatomy,heart,UBERON",
    "phenotype_protein,associated with,22300,9796,effect/phenotype,Abnormal heart morphology,HPO,"
    "8889,56992,gene/protein,KIF15,NCBI",
    "phenotype_protein,associated with,8889,56992,gene/protein,KIF15,NCBI,22300,9796,"
    "effect/phenotype,Abnormal heart morphology,HPO",
    'exposure_protein,interacts with,61500,D019324,exposure,"1,2-dichloroethane",CTD,2798,9240,'
    "gene/protein,PNMA1,NCBI",
    "exposure_protein,interacts with,2798,9240,gene/protein,PNMA1,NCBI,61500,D019324,exposure,"
    '"1,2-dichloroethane",CTD',
]


def write(tmp_path, lines, name="kg.csv"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def kg(tmp_path):
    return write(tmp_path, [HEADER] + ROWS)


def test_counts_per_type_and_both_directions(kg):
    graph, nodes, report = load_primekg(kg)
    assert graph.summary() == {
        "nodes": {"anatomy": 1, "disease": 1, "drug": 1, "effect/phenotype": 1, "exposure": 1,
                  "gene/protein": 4},
        "edges": {
            "anatomy--anatomy_protein_present-->gene/protein": 1,
            "disease--indication-->drug": 1,
            "drug--drug_protein-->gene/protein": 1,
            "drug--indication-->disease": 1,
            "effect/phenotype--phenotype_protein-->gene/protein": 1,
            "exposure--exposure_protein-->gene/protein": 1,
            "gene/protein--anatomy_protein_present-->anatomy": 1,
            "gene/protein--drug_protein-->drug": 1,
            "gene/protein--exposure_protein-->exposure": 1,
            "gene/protein--phenotype_protein-->effect/phenotype": 1,
            "gene/protein--protein_protein-->gene/protein": 4,
        }}
    json.dumps(graph.summary())  # what `perturbjax data summary` prints
    genes = graph.nodes["gene/protein"]
    assert genes.names.tolist() == ["9796", "7918", "9240", "56992"]  # PrimeKG index order
    ppi = graph.edges[EdgeType("gene/protein", "protein_protein", "gene/protein")]
    pairs = {(genes.names[s], genes.names[r]) for s, r in zip(ppi.senders, ppi.receivers)}
    assert pairs == {("9796", "56992"), ("56992", "9796"), ("7918", "9240"), ("9240", "7918")}
    assert report.kept["rows"] == len(ROWS) and report.kept["nodes"] == 9
    assert report.kept["nodes:gene/protein"] == 4 and report.total_dropped == 0


def test_node_table_maps_graph_nodes_to_primekg(kg):
    graph, nodes, _ = load_primekg(kg)
    drugs = nodes.of_type("drug")
    assert drugs.iloc[0][["node_index", "node_id", "node_name", "node_source", "name"]].tolist() \
        == [14012, "DB00001", "Lepirudin", "DrugBank", "DB00001"]
    genes = nodes.of_type("gene/protein")
    assert genes["name"].tolist() == graph.nodes["gene/protein"].names.tolist()
    assert genes["position"].tolist() == [0, 1, 2, 3]
    assert nodes.of_type("exposure")["node_name"].tolist() == ["1,2-dichloroethane"]
    # the same id in two types names two distinct nodes
    assert nodes.of_type("effect/phenotype")["node_id"].tolist() == ["9796"]
    located = nodes.locate([8889, 22300])
    assert located["node_type"].tolist() == ["gene/protein", "effect/phenotype"]
    assert located["position"].tolist() == [3, 0]
    with pytest.raises(KeyError, match="not in the graph"):
        nodes.locate([5])
    with pytest.raises(KeyError, match="unknown node type"):
        nodes.of_type("protein")


def test_id_shared_by_two_indices_is_suffixed_and_reported(tmp_path):
    rows = ROWS[:2] + [
        "protein_protein,ppi,5,9796,gene/protein,PHYHIP,NCBI,1,7918,gene/protein,GPANK1,NCBI"]
    graph, nodes, report = load_primekg(write(tmp_path, [HEADER] + rows))
    assert sorted(graph.nodes["gene/protein"].names) == ["56992", "7918", "9796#0", "9796#5"]
    note = report.notes["ids shared by several indices (named id#index)"]
    assert note["nodes"] == 2 and "gene/protein 9796#0" in note["examples"]


def test_relations_and_types_outside_primekg_are_kept_and_reported(tmp_path, caplog):
    rows = ROWS[:2] + [
        "gene_vibes,vibes,0,9796,gene/protein,PHYHIP,NCBI,77,X1,mystery,M1,NONE"]
    with caplog.at_level(logging.WARNING, logger="perturbjax.data.primekg"):
        graph, _, report = load_primekg(write(tmp_path, [HEADER] + rows))
    assert report.notes["relations not in PrimeKG"] == ["gene_vibes"]
    assert report.notes["node types not in PrimeKG"] == ["mystery"]
    assert "mystery" in graph.node_types  # kept, not silently dropped either
    assert sum("not in PrimeKG" in r.message for r in caplog.records) == 2
    _, _, clean = load_primekg(write(tmp_path, [HEADER] + ROWS, name="clean.csv"))
    assert not any("not in PrimeKG" in k for k in clean.notes)


def test_filters_report_what_they_removed(kg):
    graph, _, report = load_primekg(kg, relations=["protein_protein", "drug_protein"])
    assert {str(k) for k in graph.edge_types} == {
        "gene/protein--protein_protein-->gene/protein", "drug--drug_protein-->gene/protein",
        "gene/protein--drug_protein-->drug"}
    assert report.dropped["relation not selected"] == len(ROWS) - 6
    assert graph.nodes["disease"].count == 1  # nodes stay; relation ablations share node sets
    assert report.notes["nodes without a kept edge"] == 4

    graph, _, report = load_primekg(kg, node_types=["gene/protein", "drug"])
    assert graph.node_types == ["drug", "gene/protein"]
    assert graph.num_edges == 6 and report.dropped["node type not selected"] == len(ROWS) - 6

    graph, _, report = load_primekg(kg, relations=["indication"], node_types=["drug", "disease"])
    assert graph.num_edges == 2
    assert report.dropped == {"relation not selected": len(ROWS) - 2}

    with pytest.raises(ValueError, match=r"unknown relations \['protein_protien'\]"):
        load_primekg(kg, relations=["protein_protien"])
    with pytest.raises(ValueError, match=r"unknown node types \['protein'\]"):
        load_primekg(kg, node_types=["protein"])


def test_empty_ids_and_duplicate_edges_dropped_and_reported(tmp_path):
    rows = ROWS[:4] + [
        ROWS[0],  # line 6 repeats line 2
        "protein_protein,ppi,3,,gene/protein,NOID,NCBI,0,9796,gene/protein,PHYHIP,NCBI",
    ]
    graph, _, report = load_primekg(write(tmp_path, [HEADER] + rows))
    assert graph.num_edges == 4 and graph.nodes["gene/protein"].count == 4
    assert report.dropped == {"duplicate directed edge": 1, "empty x_id or y_id": 1}
    assert report.examples["duplicate directed edge"] == [
        "line 6 repeats line 2: 0 -protein_protein-> 8889"]
    assert report.examples["empty x_id or y_id"][0].startswith("line 7:")


def _replace(row, **fields):
    values = row.split(",")
    for name, value in fields.items():
        values[COLUMNS.index(name)] = value
    return ",".join(values)


@pytest.mark.parametrize("bad, match", [
    (ROWS[0] + ",extra", r"line 4: 13 fields|line 4: .*Expected 12 columns, got 13"),
    (",".join(ROWS[0].split(",")[:8]), "line 4: .*Expected 12 columns, got 8"),
    (_replace(ROWS[0], x_index="12a"), "line 4: x_index '12a' is not a node index"),
    (_replace(ROWS[0], y_index="NA"), "line 4: y_index 'NA' is not a node index"),
    (_replace(ROWS[0], x_index="99999999999"), "line 4: x_index '99999999999' is not a node"),
    (_replace(ROWS[0], x_index=""), "line 4: x_index is empty"),
    (_replace(ROWS[0], y_index="-2"), "line 4: y_index -2 is negative"),
    (_replace(ROWS[0], x_type=""), "line 4: x_type is empty"),
    (_replace(ROWS[0], relation=""), "line 4: relation is empty"),
    ("", "line 4: empty line"),
    (_replace(ROWS[0], x_type="drug"),
     "line 4: x_index 0 has type 'drug' but 'gene/protein' on line 2"),
    (_replace(ROWS[0], x_name="PHYHIP2"),
     "line 4: x_index 0 has name 'PHYHIP2' but 'PHYHIP' on line 2"),
    (_replace(ROWS[0], y_id="1"), "line 4: y_index 8889 has id '1' but '56992' on line 2"),
])
def test_malformed_rows_name_file_and_line(tmp_path, bad, match):
    path = write(tmp_path, [HEADER, ROWS[0], ROWS[1], bad] + ROWS[2:])
    with pytest.raises(ValueError, match=match) as error:
        load_primekg(path)
    assert str(error.value).startswith(path + ": line 4")


def test_conflict_reported_at_the_first_disagreeing_line(tmp_path):
    # index 0 is a gene on lines 2-3, then claimed as a drug on line 5 (as y) and line 6 (as x)
    rows = ROWS[:3] + [_replace(ROWS[4], y_type="drug"), _replace(ROWS[0], x_type="drug")]
    with pytest.raises(ValueError, match=r"line 5: y_index 1 has type 'drug'"):
        load_primekg(write(tmp_path, [HEADER] + rows))


@pytest.mark.parametrize("header, match", [
    (HEADER.replace(",x_name", ""), r"missing columns \['x_name'\]"),
    (HEADER.replace("relation,display_relation", "rel,display_relation"),
     r"missing columns \['relation'\]; unexpected columns \['rel'\]"),
    (",".join(reversed(COLUMNS)), "wrong order"),
    ("x_index,y_index", "missing columns"),
])
def test_bad_header_names_file_and_columns(tmp_path, header, match):
    path = write(tmp_path, [header] + ROWS)
    with pytest.raises(ValueError, match=match) as error:
        load_primekg(path)
    assert str(error.value).startswith(path)


def test_header_only_file_is_an_empty_graph(tmp_path):
    graph, _, report = load_primekg(write(tmp_path, [HEADER]))
    assert graph.num_nodes == 0 and graph.num_edges == 0 and report.kept["rows"] == 0


def test_progress_reading_gives_the_same_graph(kg, caplog):
    with caplog.at_level(logging.INFO, logger="perturbjax.data.primekg"):
        graph, _, _ = load_primekg(kg, report_every=1)
    assert any("rows read" in r.message for r in caplog.records)
    assert graph.summary() == load_primekg(kg)[0].summary()


def test_writer_round_trips_through_pandas(tmp_path):
    table = pd.read_csv(write(tmp_path, [HEADER] + ROWS), dtype=str, keep_default_na=False)
    table.loc[0, "x_name"] = 'a "quoted", name'
    path = tmp_path / "out.csv"
    write_primekg_csv(path, table)
    text = path.read_text().splitlines()
    assert text[0] == HEADER and text[2] == ROWS[1]  # unquoted unless needed, like kg.csv
    assert text[13] == ROWS[12]
    back = pd.read_csv(path, dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(back, table)


def test_synthetic_file_round_trips(tmp_path):
    written = synthetic_primekg(tmp_path / "kg.csv", n_nodes=2_000, n_edges=20_000, seed=3)
    graph, nodes, report = load_primekg(written.path)
    assert written.num_rows == 20_000 and written.num_nodes == 2_000
    assert graph.summary() == {"nodes": dict(sorted(written.nodes.items())),
                               "edges": dict(sorted(written.edge_types.items()))}
    assert set(written.nodes) == set(NODE_TYPES)
    assert set(written.relations) == set(RELATIONS)  # every relation is present
    assert report.total_dropped == 0 and report.kept["rows"] == 20_000
    # gene/protein and biological_process are the two largest types, as in PrimeKG
    largest = sorted(written.nodes, key=written.nodes.get)[-2:]
    assert largest == ["gene/protein", "biological_process"]
    for relation, (a, b, _, _) in RELATIONS.items():
        if a != b:  # each direction of a cross-type relation is its own edge type, same count
            assert graph.edges[EdgeType(a, relation, b)].count == \
                graph.edges[EdgeType(b, relation, a)].count
    # every row of the file is an edge of the graph
    frame = pd.read_csv(written.path, dtype={"x_id": str, "y_id": str}, keep_default_na=False)
    assert list(frame.columns) == list(COLUMNS)
    sample = frame.sample(200, random_state=0)
    located_x = nodes.locate(sample["x_index"])
    located_y = nodes.locate(sample["y_index"])
    for row, x, y in zip(sample.itertuples(), located_x.itertuples(), located_y.itertuples()):
        es = graph.edges[EdgeType(row.x_type, row.relation, row.y_type)]
        assert ((es.senders == x.position) & (es.receivers == y.position)).any()
    assert (frame.groupby("x_index")["x_id"].nunique() == 1).all()


def test_synthetic_is_deterministic_and_scales_like_primekg(tmp_path):
    a = synthetic_primekg(tmp_path / "a.csv", n_nodes=300, n_edges=3_000, seed=7)
    b = synthetic_primekg(tmp_path / "b.csv", n_nodes=300, n_edges=3_000, seed=7)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert a.relations == b.relations
    assert sum(r[3] for r in RELATIONS.values()) == 8_100_498
    assert sum(n for n, _ in NODE_TYPES.values()) == 129_375
    assert all(r[3] % 2 == 0 for r in RELATIONS.values())
    assert max(a.relations, key=a.relations.get) == "anatomy_protein_present"


def test_loaded_graph_survives_save_and_load(kg, tmp_path):
    graph, _, _ = load_primekg(kg)
    graph.save(str(tmp_path / "g"))
    assert type(graph).load(str(tmp_path / "g")).summary() == graph.summary()
    np.testing.assert_array_equal(graph.nodes["drug"].names, ["DB00001"])
