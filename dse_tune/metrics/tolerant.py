"""The tolerant scorer: DSE of dense tokens that never raises for a sick model.

:func:`dse_tune.dse` raises on NaN, Inf or collapsed features, as a metric should; for a
training loop, a monitor or a rescorer a diverged or collapsed model is a *result*
(recorded as NaN with the reason, then stopped by the degradation rule), not a crash.
:func:`score_tokens` is that one place.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dse_tune.metrics.dse_metric import COMPONENTS, DSEResult, dse
from dse_tune.metrics.validation import ConstantFeaturesError

__all__ = ["TokenScore", "score_tokens"]


@dataclass(frozen=True)
class TokenScore:
    """DSE and its components, or NaN everywhere and the reason.

    Attributes:
        score, inter, intra_image, intra_batch, dim: DSE (lambda = 1) and its raw components.
        failure: ``None`` when scored, else one line saying why not.
        result: the full :class:`~dse_tune.metrics.DSEResult` (None on failure or from a
            custom scorer); noise: the score's standard error (``noise=True``), else None.
    """

    score: float
    inter: float
    intra_image: float
    intra_batch: float
    dim: float
    failure: str | None = None
    result: DSEResult | None = None
    noise: float | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    def as_dict(self) -> dict[str, Any]:
        """``{"dse", "inter", "intra_image", "intra_batch", "dim", "failure"}``."""
        return {"dse": self.score, **{name: getattr(self, name) for name in COMPONENTS}, "failure": self.failure}

    @classmethod
    def failed(cls, reason: str) -> TokenScore:
        return cls(math.nan, math.nan, math.nan, math.nan, math.nan, failure=reason)


def score_tokens(
    tokens: Tensor,
    *,
    scorer: Callable[[Tensor], Any] | None = None,
    **dse_kwargs: Any,
) -> TokenScore:
    """DSE of ``tokens`` (B, N, d), or NaN with the reason when the model is sick.

    Returns NaN components and a ``failure`` for: non-finite features (a diverged run),
    features for which DSE is undefined (every token the same vector: a collapsed run),
    and a non-finite score (``FloatingPointError`` inside the metric). Anything else
    (wrong shape, too few images for the clusters) raises, with the metric's message.

    ``scorer``: ``tokens -> result`` with float attributes ``score, inter, intra_image,
    intra_batch, dim``; default :func:`dse_tune.dse` with ``dse_kwargs`` (``seed``, ``noise``, ...).

    Example:
        >>> import torch
        >>> from dse_tune import score_tokens
        >>> score_tokens(torch.randn(16, 16, 8), seed=0).ok
        True
        >>> collapsed = score_tokens(torch.ones(16, 16, 8), seed=0)
        >>> collapsed.score != collapsed.score, collapsed.failure.startswith("collapsed features")
        (True, True)
        >>> score_tokens(torch.full((16, 16, 8), float("nan"))).failure
        'dense features contain NaN or infinite values'
    """
    if isinstance(tokens, Tensor) and tokens.is_floating_point() and not bool(torch.isfinite(tokens).all()):
        return TokenScore.failed("dense features contain NaN or infinite values")
    try:
        result = scorer(tokens) if scorer is not None else dse(tokens, **dse_kwargs)
    except ConstantFeaturesError as error:
        return TokenScore.failed(f"collapsed features: {error}")
    except FloatingPointError as error:
        return TokenScore.failed(f"non-finite DSE: {error}")
    values = {name: float(getattr(result, name)) for name in ("score", *COMPONENTS)}
    if not math.isfinite(values["score"]):
        return TokenScore.failed(f"non-finite DSE ({values['score']!r})")
    noise = getattr(result, "noise", None)
    noise = float(noise) if isinstance(noise, (int, float)) and math.isfinite(noise) else None
    return TokenScore(**values, result=result if isinstance(result, DSEResult) else None, noise=noise)
