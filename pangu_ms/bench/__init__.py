"""Benchmark helpers: the HF ``DeepseekV3ForCausalLM`` twin of a pangu_ms config (config mapping and weight copy)
and the fp32 GEMM peak probe used by ``tools/bench.py``. Optional dependencies: ``requirements-bench.txt``."""
