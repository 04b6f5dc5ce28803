"""How spans nest, computed once in time linear in the spans and without recursion: the digest, `crc diff` and
`crc spans` all read the same forest.

A span's parent is the span with its trace id and its parent span id. A span whose parent is absent is a root.
Parent ids can form loops (a span its own parent, or A's parent B whose parent is A): no span of a loop is
reachable from a root, so each span of a loop becomes a root marked `loop` (its link to its parent is cut);
what hangs below a loop stays below it. Spans sharing an id are all kept; children attach to the first of them.
Depth is unbounded (a chain of a million spans is a tree of depth a million).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Forest:
    """Spans by index: `parent[i]` (-1 for a root), `children[i]` and `depth[i]`; `roots` in input order;
    `loop[i]` when span i's parent link was cut because it lay in a loop; `order`: parents before children."""

    parent: list[int]
    children: list[list[int]]
    depth: list[int]
    roots: list[int]
    loop: list[bool]
    order: list[int]


def forest(keys: Sequence[Hashable], parents: Sequence[Hashable | None]) -> Forest:
    """The forest of spans whose ids are `keys[i]` and whose parents' ids are `parents[i]` (None: no parent)."""
    n = len(keys)
    first: dict[Hashable, int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    parent = [-1 if p is None else first.get(p, -1) for p in parents]
    loop = [False] * n
    # Loops: follow parent links from each unvisited span; meeting a span of the current walk closes a loop.
    state = [0] * n  # 0 unvisited, 1 on the current walk, 2 done
    for start in range(n):
        if state[start]:
            continue
        walk: list[int] = []
        i = start
        while i != -1 and state[i] == 0:
            state[i] = 1
            walk.append(i)
            i = parent[i]
        if i != -1 and state[i] == 1:  # i is on this walk: walk[from i on] is a loop
            for j in walk[walk.index(i):]:
                loop[j] = True
        for j in walk:
            state[j] = 2
    for j in range(n):
        if loop[j]:
            parent[j] = -1
    children: list[list[int]] = [[] for _ in range(n)]
    roots: list[int] = []
    for i, p in enumerate(parent):
        (roots if p == -1 else children[p]).append(i)
    depth = [0] * n
    order = list(roots)
    for i in order:  # grows while it is read: breadth first
        for c in children[i]:
            depth[c] = depth[i] + 1
            order.append(c)
    return Forest(parent, children, depth, roots, loop, order)
