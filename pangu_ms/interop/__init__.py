"""Checkpoint interoperability: streaming import / export / verification between pangu_ms checkpoints and HF
DeepSeek-V3 / openPangu-Ultra-MoE safetensors directories (names from ``pangu_ms/model/hf_names.py``)."""
