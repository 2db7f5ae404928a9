"""Graph export: Mermaid flowcharts and Graphviz DOT, for both authoring styles.

An edge is ``(source, target, label, kind)`` with kind ``edge``, ``fan_out``,
``fan_in`` or ``switch``. Fan-in edges meet at a junction node, so a drawing
shows that the target waits for all of its sources.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["Edge", "to_dot", "to_mermaid"]

Edge = tuple[str, str, str, str]

START = "__start__"
END = "__end__"
CALLER = "__caller__"
_SPECIAL = {START: "start", END: "end", CALLER: "caller"}


def _junctions(nodes: Sequence[str], edges: Sequence[Edge]) -> dict[str, str]:
    """One junction id per fan-in target, numbered in graph order."""
    targets = {target for _, target, _, kind in edges if kind == "fan_in"}
    ordered = [node for node in nodes if node in targets]
    return {target: f"__fan_in_{i}__" for i, target in enumerate(ordered)}


_MERMAID_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class", "click"}


def _mermaid_ids(nodes: Sequence[str], junctions: dict[str, str]) -> dict[str, str]:
    """A unique, safe Mermaid id per node name (names like "a-b" and "a_b" stay apart)."""
    taken = {START, END, CALLER, *junctions.values()}
    ids = {START: START, END: END, CALLER: CALLER}
    for name in nodes:
        base = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name) or "node"
        candidate, n = base, 1
        while candidate in taken or candidate.lower() in _MERMAID_RESERVED:
            n += 1
            candidate = f"{base}_{n}"
        taken.add(candidate)
        ids[name] = candidate
    return ids


def _mermaid_label(text: str) -> str:
    return text.replace('"', "#quot;")


def to_mermaid(nodes: Sequence[str], edges: Sequence[Edge], *, start: str) -> str:
    """A Mermaid ``flowchart TD``: nodes in graph order, then edges in declaration order."""
    lines = ["flowchart TD", f'    {START}(["start"])']
    used = {s for s, _, _, _ in edges} | {t for _, t, _, _ in edges}
    junctions = _junctions(nodes, edges)
    ids = _mermaid_ids(nodes, junctions)
    for node in nodes:
        lines.append(f'    {ids[node]}["{_mermaid_label(node)}"]')
    for special in (END, CALLER):
        if special in used:
            lines.append(f'    {special}(["{_SPECIAL[special]}"])')
    for target, junction in junctions.items():
        lines.append(f"    {junction}((fan-in))")
        lines.append(f"    {junction} --> {ids[target]}")
    lines.append(f"    {START} --> {ids[start]}")
    for source, target, label, kind in edges:
        src = ids[source]
        if kind == "fan_in":
            lines.append(f"    {src} --> {junctions[target]}")
            continue
        arrow = "-.->" if kind == "fan_out" else "-->"
        text = label if kind != "fan_out" else ("fan-out" + (f": {label}" if label else ""))
        shown = f"|{_mermaid_label(text)}|" if text else ""
        lines.append(f"    {src} {arrow}{shown} {ids[target]}")
    return "\n".join(lines) + "\n"


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(name: str, nodes: Sequence[str], edges: Sequence[Edge], *, start: str) -> str:
    """A Graphviz ``digraph``: nodes in graph order, then edges in declaration order."""
    lines = [f"digraph {_dot_quote(name)} {{", "    rankdir=TB;"]
    lines.append(f'    {_dot_quote(START)} [label="start", shape=oval];')
    used = {s for s, _, _, _ in edges} | {t for _, t, _, _ in edges}
    for node in nodes:
        lines.append(f"    {_dot_quote(node)} [shape=box];")
    for special in (END, CALLER):
        if special in used:
            lines.append(f'    {_dot_quote(special)} [label="{_SPECIAL[special]}", shape=oval];')
    junctions = _junctions(nodes, edges)
    for target, junction in junctions.items():
        lines.append(f'    {_dot_quote(junction)} [label="fan-in", shape=circle];')
        lines.append(f"    {_dot_quote(junction)} -> {_dot_quote(target)};")
    lines.append(f"    {_dot_quote(START)} -> {_dot_quote(start)};")
    for source, target, label, kind in edges:
        if kind == "fan_in":
            lines.append(f"    {_dot_quote(source)} -> {_dot_quote(junctions[target])};")
            continue
        attrs = []
        text = label if kind != "fan_out" else ("fan-out" + (f": {label}" if label else ""))
        if text:
            attrs.append(f"label={_dot_quote(text)}")
        if kind == "fan_out":
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"    {_dot_quote(source)} -> {_dot_quote(target)}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
