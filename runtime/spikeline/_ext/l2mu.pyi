"""Type stub for spikeline._ext.l2mu (built from ext/l2mu.pyx)."""

from collections.abc import Mapping
from typing import final

import numpy as np
import numpy.typing as npt

_F32 = npt.NDArray[np.float32]
_I64 = npt.NDArray[np.int64]

@final
class L2MUCell:
    """The L2MU cell: an LMU whose input module, u, memory, hidden and output parts are LIF populations."""

    def __init__(
        self,
        *,
        enc_w: _F32,
        enc_b: _F32,
        e_x: _F32,
        e_h: _F32,
        e_m: _F32,
        W_x: _F32,
        W_h: _F32,
        W_m: _F32,
        W_o: _F32,
        b_o: _F32,
        A_bar: _F32,
        B_bar: _F32,
        beta_x: npt.ArrayLike,
        threshold_x: npt.ArrayLike,
        beta_u: npt.ArrayLike,
        threshold_u: npt.ArrayLike,
        beta_m: npt.ArrayLike,
        threshold_m: npt.ArrayLike,
        beta_h: npt.ArrayLike,
        threshold_h: npt.ArrayLike,
        beta_o: npt.ArrayLike,
        threshold_o: npt.ArrayLike,
        memory_convention: str = "A",
        n_streams: int = 1,
    ) -> None: ...
    def step(self, x: _F32, out: _F32 | None = None, stream: int = 0, hidden_out: _F32 | None = None) -> _F32: ...
    def step_streams(
        self, x: _F32, out: _F32 | None = None, hidden_out: _F32 | None = None, streams: npt.ArrayLike | None = None
    ) -> _F32: ...
    def reset(self, stream: int = -1) -> None: ...
    def reset_counters(self, stream: int = -1) -> None: ...
    @property
    def state(self) -> dict[str, _F32]: ...
    @state.setter
    def state(self, value: Mapping[str, npt.ArrayLike]) -> None: ...
    @property
    def counters(self) -> dict[str, _I64]: ...
    @property
    def dense_columns(self) -> int: ...
    @property
    def dense_synops(self) -> int: ...
    @property
    def n_inputs(self) -> int: ...
    @property
    def enc(self) -> int: ...
    @property
    def memory(self) -> int: ...
    @property
    def order(self) -> int: ...
    @property
    def hidden(self) -> int: ...
    @property
    def n_outputs(self) -> int: ...
    @property
    def n_streams(self) -> int: ...
    @property
    def memory_convention(self) -> str: ...
    @property
    def sizes(self) -> dict[str, int]: ...
    @property
    def arrays(self) -> dict[str, _F32]: ...
