"""Models: the tiny causal LM and its character tokenizer (``rlnb.models.lm``); MLPs, value/Q
networks with scalar or categorical heads and Polyak averaging (``rlnb.models.value``); a squashed
Gaussian policy and batched critics for continuous actions (``rlnb.models.continuous``); the
forwards that training, decoding and critics share (``rlnb.models.forward``: ``grouped_forward``,
``position_ids_from_mask``, ``small_attention``); GPT-2's forward written out for decoding
(``rlnb.models.gpt2``)."""
