"""Bridges to other RL libraries. Nothing else in rlnb imports these modules; each needs its
library installed (``pip install "rlnb[torchrl]"``)."""
