"""The paper's baselines, built on the engine so that they run and train like LoRA does.

``adapter_layers``: Houlsby's and Lin's bottleneck adapters (Table 1's AdapterH and AdapterL).
"""
