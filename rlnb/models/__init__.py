"""Models: the tiny causal LM and its character tokenizer (``rlnb.models.lm``); MLPs and value/Q
networks with scalar or categorical heads (``rlnb.models.value``); the forwards that training,
decoding and critics share (``rlnb.models.forward``: ``grouped_forward``, ``position_ids_from_mask``,
``small_attention``); GPT-2's forward written out for decoding (``rlnb.models.gpt2``)."""
