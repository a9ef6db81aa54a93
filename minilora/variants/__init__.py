"""What came after the paper, each extending the LoRA layer, which knows none of them.

:mod:`.quantize` and :mod:`.linear4bit` (QLoRA's 4-bit base), :mod:`.dora` (DoRA, a
:class:`~minilora.lora_layer.LoraVariant`), :mod:`.loraplus` (LoRA+'s learning rates).
"""
from . import dora, linear4bit, loraplus, quantize  # noqa: F401  (dora registers use_dora)
