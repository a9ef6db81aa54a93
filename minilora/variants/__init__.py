"""What came after the paper, each extending the LoRA layer, which knows none of them.

:mod:`.quantize` and :mod:`.linear4bit` (QLoRA's 4-bit base), :mod:`.dora` (DoRA, a
:class:`~minilora.lora_layer.LoraVariant`), :mod:`.loraplus` (LoRA+'s learning rates),
:mod:`.pissa` (PiSSA's init, in :data:`~minilora.lora_layer.INITS`).
"""
from . import dora, linear4bit, loraplus, pissa, quantize  # noqa: F401  (dora, pissa register)
