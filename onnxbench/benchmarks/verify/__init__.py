"""Is it right: the references (float64 torch, unoptimized ONNX Runtime), the noise floor, the agreement checks
and verdicts (float bands, quantized criteria) and the search for the first diverging block."""
