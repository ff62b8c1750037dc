"""Models: the tiny causal LM and its character tokenizer (``rlnb.models.lm``)."""
