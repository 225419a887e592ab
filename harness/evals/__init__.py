"""Model-level evaluation: CoQA data and scoring, model loading, fidelity against a reference model.

Kept free of imports so that ``import harness`` stays light: each submodule pulls in what it needs
(torch, transformers) only when it is imported.
"""
