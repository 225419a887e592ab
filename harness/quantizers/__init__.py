"""Built-in implementations, each a thin adapter to the contract: the plain-torch references (the oracle)
and the full-precision identity stand-ins. Library adapters (bitsandbytes, torchao, Triton) come next."""
