"""Quantization (``quant=``): low-bit weights through torchao, as the plan's QUANTIZE stage."""
