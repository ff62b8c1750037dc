import os

import matplotlib

matplotlib.use("Agg")
os.environ.setdefault("RLNB_THREADS", "2")
