"""polyflax: a JAX/Flax NNX encoder-decoder Transformer that expands factored polynomials."""
