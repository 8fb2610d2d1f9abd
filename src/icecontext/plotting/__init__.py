"""Figures: chart colour maps and legends (:mod:`.charts`), scene rendering (:mod:`.scene`).

Everything draws on explicit :class:`matplotlib.figure.Figure` objects with the Agg
canvas (no pyplot state), so it works headless and in worker processes.
"""
