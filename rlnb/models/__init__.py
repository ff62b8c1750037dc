"""Models: the tiny causal LM and its character tokenizer (``rlnb.models.lm``); MLPs and value/Q
networks with scalar or categorical heads (``rlnb.models.value``)."""
