"""Monitor the empirical neural tangent kernel while a model trains: its spectrum and how far it
has moved from the kernel at fit start (the laziness of training, Huang, Du & Xu 2021).

Thin glue over :func:`~ortho_lightning.spectra.ntk_matrix`: the base class
(:class:`~ortho_lightning.callbacks._monitor_base.SpectrumMonitor`) decides when to measure (rank
zero only, no collective, the model's modes, gradients and RNG left as they were, a failure is a
warning), this class what: the (N*C x N*C) kernel Theta of the outputs on the fixed probe batch,
its eigenvalues, and the relative drift ||Theta_t - Theta_0||_F / ||Theta_0||_F from the kernel
measured at fit start. Theta_0 is kept in the callback's checkpoint state (a plain tensor,
``weights_only``-safe) beside the probe, so a resumed run keeps measuring against the same one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from typing_extensions import override

from ortho_lightning import spectra
from ortho_lightning.callbacks._monitor_base import Spectrum, SpectrumMonitor
from ortho_lightning.validation import check_callable, check_int


class NTKSpectrumMonitor(SpectrumMonitor):
    """Log the eigenvalues of the empirical NTK on a fixed probe batch and its drift from the
    kernel at fit start.

    Args:
        output_fn: selects the output tensor from the model's output (default: the output
            itself, flattened per sample to (N, C)).
        chunk_size: vmap chunk of the kernel's generic (non Linear/Conv/RNN) route.
        Other arguments (cadence, probe, ``log_spaced``, histogram, figure, eval mode): see
            :class:`~ortho_lightning.callbacks._monitor_base.SpectrumMonitor`.

    Logs ``spectra/ntk/<key>`` for the :func:`~ortho_lightning.spectra.summarize` keys of
    ``kind="kernel"`` (``max``, ``min``, ``trace``, ``mean``, ``condition``) over all N*C
    eigenvalues, the histogram ``spectra/ntk/eigenvalues`` and ``spectra/ntk/drift``. The
    reference kernel is the one measured at step 0 (``on_fit_start=True``, the default); without
    that measurement (``on_fit_start=False``, or it failed) no drift is logged.

    The kernel costs one forward and C batched backward passes of the probe plus an
    (N*C)^2 matrix: the default probe of 16 samples with 10 outputs gives a 160 x 160 kernel.
    The default cadence is once per epoch (and at fit start).
    """

    kind = "ntk"

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = 1,
        on_fit_start: bool = True,
        probe_size: int = 16,
        probe_source: str = "train",
        output_fn: Callable[..., Tensor] | None = None,
        chunk_size: int | None = None,
        input_fn: Callable[[Any], Tensor] | None = None,
        histogram: bool = True,
        figure: bool = False,
        eval_mode: bool = True,
        log_spaced: bool = False,
    ) -> None:
        super().__init__(
            every_n_steps=every_n_steps,
            every_n_epochs=every_n_epochs,
            on_fit_start=on_fit_start,
            probe_size=probe_size,
            probe_source=probe_source,
            input_fn=input_fn,
            histogram=histogram,
            figure=figure,
            eval_mode=eval_mode,
            log_spaced=log_spaced,
        )
        name = type(self).__name__
        self.output_fn = check_callable(name, "output_fn", output_fn, optional=True)
        self.chunk_size = check_int(name, "chunk_size", chunk_size, 1, optional=True)
        self.reference: Tensor | None = None

    @override
    def compute(self, pl_module: LightningModule, probe: Tensor | None) -> list[Spectrum]:
        theta = spectra.ntk_matrix(
            pl_module, probe, output_fn=self.output_fn, chunk_size=self.chunk_size,
            eval_mode=self.eval_mode,
        )
        eig = spectra.kernel_eigenvalues(theta)
        if self.reference is None and self.last_step == 0 and bool(torch.isfinite(theta).all()):
            self.reference = theta.detach().to("cpu", copy=True)
        extra = {}
        if self.reference is not None:
            extra["drift"] = float(spectra.kernel_distance(theta, self.reference))
        return [
            Spectrum(
                "spectra/ntk",
                eig,
                dict(spectra.summarize(eig, kind="kernel")),
                histogram="eigenvalues",
                plot_label="eigenvalue of the empirical NTK",
                extra=extra,
            )
        ]

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "reference": self.reference}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.reference = state_dict.get("reference")
