"""The paper's 2021 baselines (Section 5.1), built on the engine so that they train like LoRA.

``adapter_layers``: Houlsby's and Lin's bottleneck adapters (Table 1's AdapterH and AdapterL,
``add_adapter_layers(model, kind="H" | "L", bottleneck=m)``).
``bitfit``: BitFit (Ben Zaken et al. 2021), only the bias terms train (``apply_bitfit``).
``prefix``: prefix-embedding and prefix-layer tuning (Li & Liang 2021), the paper's PreEmbed
and PreLayer (``add_prefix(model, kind="embed" | "layer", length=l_p)``).
"""
