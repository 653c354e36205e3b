"""The method's config: AllNC's knobs (class means, HyCon, P2P, GBBN, the auxiliary schedule) and the
presets that name a method (docs/method.md)."""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, model_validator

from .sections import Section


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of `base` with `override` merged in, recursively; values of `override` win."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged



# ------------------------------------------------------------------------------------------- method
class ClassMeansConfig(Section):
    beta: float = Field(0.9, ge=0.0, lt=1.0, description="EMA factor of the global class means.")
    sync: Literal["auto", "all_reduce", "all_gather"] = Field(
        "auto", description="How per-class sums cross workers; auto picks the smaller payload."
    )


class HyConConfig(Section):
    weight: float = Field(1.0, ge=0.0, description="lambda_h")
    tau: float = Field(0.1, gt=0.0)
    negatives: Literal["global", "local", "prototypes"] = Field(
        "global",
        description="Sample set of each anchor: the all-gathered global batch, or prototypes only (pure "
        "two-view form), both exact across workers (W x B == 1 x WB); or the local batch, which needs no "
        "all-gather but is only approximately equivalent.",
    )
    projection_dim: int | None = Field(
        None, ge=1, description="Width of a projection head before normalisation; None: no head."
    )
    projection_head: Literal["linear", "mlp"] = Field(
        "linear",
        description="linear: bias-free, commutes with class means; mlp: Linear-ReLU-Linear, after BCL's head "
        "(prototypes are then the head applied to the centred class means).",
    )


# P2P's forms, named once: allnc_dist.method.p2p takes them from here.
P2PForm = Literal["contrastive", "contrastive_gram", "mse_gram"]


class P2PConfig(Section):
    weight: float = Field(1.0, ge=0.0, description="lambda_p")
    tau: float = Field(0.1, gt=0.0)
    form: P2PForm = Field(
        "mse_gram",
        description="mse_gram: alignment ||M_k - W_k||^2 + ETF Gram regulariser (allnc_paper's; robust in the UFM "
        "study); contrastive: the bidirectional CE of METHOD's first formula (the 10-class sweep's choice; its "
        "UFM Few classes settle past the simplex angle); contrastive_gram: contrastive + the same Gram "
        "regulariser (the allnc preset's: reaches the simplex angle in the UFM).",
    )


class GBBNConfig(Section):
    enabled: bool = True
    rebalance: Literal["reversed", "class_balanced", "tempered", "logit_adjust", "reweight"] = Field(
        "reversed",
        description="Re-balancing branch: a second sampler with p_k ∝ n_k^q (reversed: q=-1, class_balanced: "
        "q=0, tempered: q=gbbn.sampler_q) or a loss on the uniform batch (logit_adjust, reweight).",
    )
    sampler_q: float = Field(
        0.5, ge=-2.0, le=1.0,
        description="Exponent q of the tempered sampler p_k ∝ n_k^q (rebalance=tempered): 1 instance, 0.5 "
        "square-root, 0 class-balanced, -1 reversed.",
    )
    shared_stage: bool = Field(
        False, description="Light bilateral network: one shared last stage feeding both classifiers (≈ CE's FLOPs) "
        "instead of a last stage per branch.",
    )
    schedule: Literal["parabolic", "linear", "cosine", "step"] = Field(
        "parabolic", description="alpha_t: parabolic 1-(t/T)^2 (BBN), linear, cosine, or a hard switch."
    )
    switch_epoch: float | None = Field(None, ge=0.0, description="Epoch of the hard switch (schedule=step).")
    test_alpha: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def sampler_exponent(self) -> float | None:
        """q of the re-balancing sampler p_k ∝ n_k^q, or None when the branch re-balances by loss."""
        return {"reversed": -1.0, "class_balanced": 0.0, "tempered": self.sampler_q}.get(self.rebalance)

    @property
    def rebalances_by_sampler(self) -> bool:
        """A second, re-balanced batch that removes (part of) the label prior: q < 1."""
        return self.enabled and self.sampler_exponent is not None and self.sampler_exponent < 1.0


class AuxConfig(Section):
    """How the auxiliary losses (HyCon, P2P) are weighted over the branches and over training."""

    branch_weights: Literal["equal", "alpha"] = Field(
        "equal",
        description="equal: each branch's HyCon and P2P weigh 1/2; alpha: alpha_t on the conventional branch and "
        "1 - alpha_t on the re-balancing one, following GBBN's classification weights.",
    )
    warmup_epochs: float = Field(
        0.0, ge=0.0, description="lambda_h and lambda_p ramp linearly from 0 over these epochs (class means are noisy early)."
    )


# AllNC's defaults, as issue 13's sweep chose them on digits-LT's validation split (docs/RESULTS.md,
# "The study"): logit adjustment on the uniform batch, the re-balancing branch by loss on one shared
# last stage (about CE's cost per image), HyCon off, and P2P's contrastive form with the Gram gap (the
# sweep chose the contrastive form; the gap keeps the UFM geometry issue 13 requires). `allnc_paper` is every
# part as METHOD.md writes it: CE, the reversed sampler, a last stage per branch, HyCon and the
# mse_gram P2P at weight 1 (the fields' own defaults).
ALLNC_CHOSEN: dict[str, Any] = {
    "loss": "la",
    "gbbn": {"rebalance": "logit_adjust", "shared_stage": True},
    "hycon": {"weight": 0.0},
    "p2p": {"weight": 1.0, "form": "contrastive_gram"},
    "aux": {"branch_weights": "equal", "warmup_epochs": 0.0},
}

METHOD_PRESETS: dict[str, dict[str, Any]] = {
    "allnc": ALLNC_CHOSEN,
    "allnc_paper": {},
    "ce": {"gbbn": {"enabled": False}, "hycon": {"weight": 0.0}, "p2p": {"weight": 0.0}},
    "la": {"loss": "la", "gbbn": {"enabled": False}, "hycon": {"weight": 0.0}, "p2p": {"weight": 0.0}},
    "ldam_drw": {
        "loss": "ldam",
        "classifier": "cosine",
        "drw_start": 0.8,
        "gbbn": {"enabled": False},
        "hycon": {"weight": 0.0},
        "p2p": {"weight": 0.0},
    },
    "bbn": {"gbbn": {"enabled": True}, "hycon": {"weight": 0.0}, "p2p": {"weight": 0.0}},
    "etf_dr": {
        "loss": "dr",
        "classifier": "etf",
        "gbbn": {"enabled": False},
        "hycon": {"weight": 0.0},
        "p2p": {"weight": 0.0},
    },
}


class MethodConfig(Section):
    preset: Literal["allnc", "allnc_paper", "ce", "la", "ldam_drw", "bbn", "etf_dr"] = "allnc"
    loss: Literal["ce", "la", "ldam", "dr"] = Field("ce", description="Classification loss l.")
    classifier: Literal["linear", "cosine", "etf"] = "linear"
    la_tau: float = Field(1.0, ge=0.0, description="Logit-adjustment strength (Menon et al. 2021).")
    ldam_max_margin: float = Field(0.5, gt=0.0)
    cosine_scale: float = Field(30.0, gt=0.0, description="Scale s of cosine logits (LDAM uses 30).")
    drw_start: float | None = Field(
        None, gt=0.0, le=1.0, description="Deferred re-weighting from this fraction of the epochs."
    )
    drw_beta: float = Field(0.9999, gt=0.0, lt=1.0, description="Effective-number beta of DRW weights.")
    etf_seed: int = 0
    class_means: ClassMeansConfig = Field(default_factory=ClassMeansConfig)
    hycon: HyConConfig = Field(default_factory=HyConConfig)
    p2p: P2PConfig = Field(default_factory=P2PConfig)
    gbbn: GBBNConfig = Field(default_factory=GBBNConfig)
    aux: AuxConfig = Field(default_factory=AuxConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset", "allnc")
            if preset in METHOD_PRESETS:
                return deep_merge(METHOD_PRESETS[preset], data)
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> MethodConfig:
        if self.loss == "dr" and self.classifier != "etf":
            raise ValueError("method.loss='dr' (dot regression) needs method.classifier='etf'")
        if self.loss == "ldam" and self.classifier == "etf":
            raise ValueError("method.loss='ldam' needs a learned classifier ('linear' or 'cosine')")
        if self.drw_start is not None and self.loss == "dr":
            raise ValueError("method.drw_start (deferred re-weighting) needs class weights, which method.loss='dr' "
                             "(dot regression) has not: use it with method.loss='ce' or 'ldam'")
        if self.gbbn.schedule == "step" and self.gbbn.switch_epoch is None:
            raise ValueError("method.gbbn.schedule='step' needs method.gbbn.switch_epoch")
        self._check_one_prior_correction()
        return self

    def _check_one_prior_correction(self) -> None:
        """A re-balancing sampler already removes the label prior from its batch; a prior-correcting
        loss on that batch would correct a second time and over-favour the tail (METHOD.md, GBBN). So
        would deferred re-weighting on top of logit adjustment, on any batch."""
        if self.loss == "la" and self.drw_start is not None:
            raise ValueError(
                "method.drw_start (deferred re-weighting) with method.loss='la' corrects for the label prior twice "
                "on the same batch: drop one of the two (CE or LDAM take deferred re-weighting)"
            )
        if not self.gbbn.rebalances_by_sampler:
            return
        sampler = f"method.gbbn.rebalance={self.gbbn.rebalance!r}"
        if self.loss in ("la", "ldam"):
            raise ValueError(
                f"method.loss={self.loss!r} with {sampler} corrects for the label prior twice on the re-balanced "
                "batch: use method.loss='ce' with a re-balancing sampler, or re-balance by loss "
                "(method.gbbn.rebalance='logit_adjust' or 'reweight') with a uniform batch only"
            )
        if self.drw_start is not None:
            raise ValueError(
                f"method.drw_start (deferred re-weighting) with {sampler} corrects for the label prior twice on the "
                "re-balanced batch: drop one of the two"
            )

    @property
    def uses_class_means(self) -> bool:
        return self.hycon.weight > 0 or self.p2p.weight > 0


