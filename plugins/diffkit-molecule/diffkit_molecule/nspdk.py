"""The neighbourhood subgraph pairwise distance kernel (NSPDK; Costa & De Grave, ICML 2010) and its MMD.

A labelled graph ``G`` is described by counts of features ``(r, d, A, B)``: ``A`` and ``B`` are the rooted
neighbourhood subgraphs of radius ``r`` around two nodes ``u``, ``v`` whose shortest-path distance is
exactly ``d`` (``0 ≤ r ≤ R``, ``0 ≤ d ≤ D``; the pair is unordered). The neighbourhood subgraph of radius
``r`` around ``v`` is the subgraph induced by the nodes at distance ``≤ r`` from ``v``, rooted at ``v``.

Each rooted subgraph is identified by an isomorphism invariant: every node ``w`` of the ball gets the code
``(label(w), dist(root, w), sorted[(dist(w, x), label(x)) for x in the ball])``, and the subgraph's code is
the sorted list of node codes together with the sorted list of ``(code(a), code(b), edge label)`` over its
edges (distances are those of the whole graph). Isomorphic rooted subgraphs get equal codes; the codes
stand in for the paper's hashes without collisions (each distinct code becomes one integer feature id).

The feature vector is normalised as the paper does: each ``(r, d)`` block to unit Euclidean norm, then the
whole vector to unit norm, so ``k(G, G) = 1`` and ``k(G, H) = ⟨φ(G), φ(H)⟩ ∈ [0, 1]``.

The two-sample statistic is the biased squared MMD with the linear kernel on these vectors,
``MMD² = mean_{ij} k(x_i, x_j) + mean_{ij} k(y_i, y_j) − 2 mean_{ij} k(x_i, y_j) = ‖μ_X − μ_Y‖²``
(``μ`` the mean feature vector), computed through the means in time linear in the set sizes.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

Graph = tuple  # (labels: list of node labels, edges: dict {(i, j): edge label} with i < j)


def _distances(n: int, neighbours: list[list[int]]) -> list[list[int]]:
    """All-pairs shortest-path lengths by breadth-first search (-1: unreachable)."""
    out = []
    for source in range(n):
        dist = [-1] * n
        dist[source] = 0
        frontier = [source]
        while frontier:
            nxt = []
            for i in frontier:
                for j in neighbours[i]:
                    if dist[j] < 0:
                        dist[j] = dist[i] + 1
                        nxt.append(j)
            frontier = nxt
        out.append(dist)
    return out


class _Interner:
    """Maps each distinct subgraph code to a small integer id (shared by every graph of a comparison)."""

    def __init__(self):
        self.ids: dict = {}

    def __call__(self, code: Hashable) -> int:
        return self.ids.setdefault(code, len(self.ids))


def graph_features(labels: Sequence[Hashable], edges: dict, radius: int = 3, distance: int = 3, interner: _Interner | None = None) -> dict:
    """The normalised NSPDK feature vector of one labelled graph as ``{(r, d, id_a, id_b): value}``."""
    interner = interner or _Interner()
    n = len(labels)
    neighbours = [[] for _ in range(n)]
    edge_label = {}
    for (i, j), lab in edges.items():
        neighbours[i].append(j)
        neighbours[j].append(i)
        edge_label[(min(i, j), max(i, j))] = lab
    dist = _distances(n, neighbours)
    # the code of the rooted neighbourhood subgraph of every node at every radius
    codes = [[0] * (radius + 1) for _ in range(n)]
    for root in range(n):
        for r in range(radius + 1):
            ball = [w for w in range(n) if 0 <= dist[root][w] <= r]
            inside = set(ball)
            node_code = {w: (labels[w], dist[root][w], tuple(sorted((dist[w][x], labels[x]) for x in ball))) for w in ball}
            edge_codes = tuple(sorted(
                (min(node_code[a], node_code[b]), max(node_code[a], node_code[b]), lab)
                for (a, b), lab in edge_label.items() if a in inside and b in inside))
            codes[root][r] = interner((tuple(sorted(node_code.values())), edge_codes))
    blocks: dict = defaultdict(lambda: defaultdict(float))
    for u in range(n):
        for v in range(u, n):
            d = dist[u][v]
            if d < 0 or d > distance:
                continue
            for r in range(radius + 1):
                a, b = codes[u][r], codes[v][r]
                blocks[(r, d)][(r, d, min(a, b), max(a, b))] += 1.0
    vector = {}
    for block in blocks.values():
        norm = sum(c * c for c in block.values()) ** 0.5
        for key, c in block.items():
            vector[key] = c / norm
    total = sum(x * x for x in vector.values()) ** 0.5
    return {k: x / total for k, x in vector.items()} if total > 0 else {}


def kernel(x: dict, y: dict) -> float:
    """``k(G, H) = ⟨φ(G), φ(H)⟩`` of two feature vectors from :func:`graph_features` (same interner)."""
    if len(x) > len(y):
        x, y = y, x
    return float(sum(v * y.get(k, 0.0) for k, v in x.items()))


def mean_vector(vectors: Sequence[dict]) -> dict:
    out: dict = defaultdict(float)
    for vec in vectors:
        for k, v in vec.items():
            out[k] += v
    n = max(len(vectors), 1)
    return {k: v / n for k, v in out.items()}


def nspdk_mmd(graphs_x: Sequence[Graph], graphs_y: Sequence[Graph], radius: int = 3, distance: int = 3) -> float:
    """Biased squared MMD ``‖μ_X − μ_Y‖²`` between two sets of ``(labels, edges)`` graphs under NSPDK."""
    if not graphs_x or not graphs_y:
        raise ValueError(f"NSPDK needs graphs on both sides, got {len(graphs_x)} and {len(graphs_y)}; draw more samples")
    interner = _Interner()
    mx = mean_vector([graph_features(*g, radius=radius, distance=distance, interner=interner) for g in graphs_x])
    my = mean_vector([graph_features(*g, radius=radius, distance=distance, interner=interner) for g in graphs_y])
    keys = set(mx) | set(my)
    return float(max(sum((mx.get(k, 0.0) - my.get(k, 0.0)) ** 2 for k in keys), 0.0))


def molecule_graph(mol) -> Graph:
    """A sanitised RDKit molecule as an NSPDK graph, labelled as GDSS labels it: nodes by element symbol,
    edges by the integer part of RDKit's bond order (aromatic bonds, order 1.5, are labelled 1)."""
    labels = [a.GetSymbol() for a in mol.GetAtoms()]
    edges = {}
    for b in mol.GetBonds():
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        edges[(min(i, j), max(i, j))] = int(b.GetBondTypeAsDouble())
    return labels, edges


def smiles_graphs(smiles: Sequence[str]) -> list[Graph]:
    """NSPDK graphs of SMILES strings (each read and sanitised by RDKit); unreadable ones raise ValueError."""
    from rdkit import Chem

    out = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            raise ValueError(f"NSPDK: RDKit cannot read SMILES {s!r}; pass canonical SMILES of valid molecules")
        out.append(molecule_graph(mol))
    return out
