"""The AllNC method: simplex ETF, global class means, HyCon, P2P, the GBBN network, the baselines'
losses, and the objective that combines them."""

from .class_means import ClassMeans, ClassMeanTracker
from .classification import ClassificationLoss
from .etf import simplex_etf
from .gbbn import cumulative_alpha
from .hycon import hycon_loss
from .network import BranchedNetwork, NetworkOutput, build_network
from .objective import AllNCObjective, LossParts
from .p2p import p2p_loss

__all__ = [
    "AllNCObjective",
    "BranchedNetwork",
    "ClassMeanTracker",
    "ClassMeans",
    "ClassificationLoss",
    "LossParts",
    "NetworkOutput",
    "build_network",
    "cumulative_alpha",
    "hycon_loss",
    "p2p_loss",
    "simplex_etf",
]
