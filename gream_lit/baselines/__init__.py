"""ID-based baselines evaluated like GREAM: full-catalogue ranking, Recall/NDCG/MRR at 1, 5, 10."""

from gream_lit.baselines.mostpop import MostPop
from gream_lit.baselines.sasrec import SASRec

__all__ = ["MostPop", "SASRec"]
