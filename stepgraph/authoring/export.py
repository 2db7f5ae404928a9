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


def _junctions(edges: Sequence[Edge]) -> dict[str, str]:
    """One junction id per fan-in target."""
    targets = sorted({target for _, target, _, kind in edges if kind == "fan_in"})
    return {target: f"fan_in_{i}" for i, target in enumerate(targets)}


def _mermaid_id(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def to_mermaid(nodes: Sequence[str], edges: Sequence[Edge], *, start: str) -> str:
    """A Mermaid ``flowchart TD``: nodes in graph order, then edges in declaration order."""
    lines = ["flowchart TD", f'    {START}(["start"])']
    used = {s for s, _, _, _ in edges} | {t for _, t, _, _ in edges}
    for node in nodes:
        lines.append(f'    {_mermaid_id(node)}["{node}"]')
    for special in (END, CALLER):
        if special in used:
            lines.append(f'    {special}(["{_SPECIAL[special]}"])')
    junctions = _junctions(edges)
    for target, junction in junctions.items():
        lines.append(f"    {junction}((fan-in))")
        lines.append(f"    {junction} --> {_mermaid_id(target)}")
    lines.append(f"    {START} --> {_mermaid_id(start)}")
    for source, target, label, kind in edges:
        src = _mermaid_id(source)
        if kind == "fan_in":
            lines.append(f"    {src} --> {junctions[target]}")
            continue
        arrow = "-.->" if kind == "fan_out" else "-->"
        text = label if kind != "fan_out" else ("fan-out" + (f": {label}" if label else ""))
        shown = f"|{text}|" if text else ""
        lines.append(f"    {src} {arrow}{shown} {_mermaid_id(target)}")
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
    junctions = _junctions(edges)
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
