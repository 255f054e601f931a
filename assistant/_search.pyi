"""Types of the compiled grammar search (``_search.c``)."""

from typing import Any

class SearchGraph:
    def __init__(self, units: Any, position_arc: Any, position_last: Any, arc_first: Any, arc_dst: Any,
                 arc_tag: Any, successor_start: Any, successors: Any, start_node: int) -> None: ...
    def viterbi(self, log_probs: Any, beam: int, prune: float,
                blank_penalty: float) -> list[tuple[int, float, tuple[int, ...]]]: ...
