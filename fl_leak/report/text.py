"""Labels that fit their box: a font size, line breaks and, as a last resort, an ellipsis.

Widths are measured with the Agg renderer of the figure the label goes into, once per string at a
reference size and scaled linearly, so a figure of many labels stays cheap to lay out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

REFERENCE_SIZE = 10.0  # points: the size widths are measured at
LINE_SPACING = 1.2  # matplotlib's default linespacing, in font sizes per line
SLACK = 0.94  # fraction of the box a label may fill, for rounding and hinting
ELLIPSIS = "\u2026"
BREAK = re.compile(r"(?<=[\s_\-,/=:])")  # break after a space, _, -, comma, /, = or :


@dataclass
class Fitted:
    """A label's text (lines joined by newlines) and its font size in points."""

    text: str
    size: float

    @property
    def lines(self) -> int:
        return self.text.count("\n") + 1


@dataclass
class Measure:
    """Widths and heights of labels in inches, as ``figure``'s Agg renderer draws them."""

    figure: Figure
    _widths: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.figure.canvas, FigureCanvasAgg):
            FigureCanvasAgg(self.figure)
        canvas = self.figure.canvas
        assert isinstance(canvas, FigureCanvasAgg)
        self._renderer: RendererAgg = canvas.get_renderer()

    def width(self, text: str, size: float) -> float:
        """Width in inches of one line of ``text`` at ``size`` points."""
        if text not in self._widths:
            width, _, _ = self._renderer.get_text_width_height_descent(
                text, FontProperties(size=REFERENCE_SIZE), ismath=False
            )
            self._widths[text] = width / self.figure.dpi
        return self._widths[text] * size / REFERENCE_SIZE

    @staticmethod
    def height(lines: int, size: float) -> float:
        """Height in inches of ``lines`` lines at ``size`` points (a bound, descenders included)."""
        return (size * (LINE_SPACING * (lines - 1) + 1.25)) / 72

    def fit(
        self,
        text: str,
        width: float,
        height: float,
        largest: float,
        smallest: float,
        step: float = 0.5,
    ) -> Fitted:
        """``text`` at the largest size from ``largest`` down to ``smallest`` (points) at which
        it fits ``width`` by ``height`` inches, broken into lines where needed; at ``smallest``,
        what does not fit is cut and ends in an ellipsis."""
        size = largest
        while True:
            lines = self.wrap(text, width * SLACK, size)
            room = self.lines_in(height, size)
            if len(lines) <= room:
                return Fitted("\n".join(lines), size)
            if size - step < smallest - 1e-9:
                return Fitted("\n".join(self._cut(lines, max(room, 1), width * SLACK, size)), size)
            size -= step

    @staticmethod
    def lines_in(height: float, size: float) -> int:
        """How many lines at ``size`` points fit ``height`` inches."""
        count = 0
        while Measure.height(count + 1, size) <= height:
            count += 1
        return count

    def wrap(self, text: str, width: float, size: float) -> list[str]:
        """Greedy line breaks of ``text`` after spaces and separators, then inside words that
        are wider than ``width`` on their own."""
        lines: list[str] = []
        current = ""
        for token in (piece for piece in BREAK.split(text) if piece):
            if self.width(current + token, size) <= width or not current:
                current += token
            else:
                lines.append(current.rstrip())
                current = token.lstrip()
            while self.width(current.rstrip(), size) > width and len(current) > 1:
                head = self._prefix(current, width, size)
                lines.append(head)
                current = current[len(head) :]
        if current.strip() or not lines:
            lines.append(current.rstrip())
        return lines

    def _prefix(self, text: str, width: float, size: float) -> str:
        end = 1
        while end < len(text) and self.width(text[: end + 1], size) <= width:
            end += 1
        return text[:end]

    def _cut(self, lines: list[str], keep: int, width: float, size: float) -> list[str]:
        kept = lines[:keep]
        last = kept[-1]
        while last and self.width(last + ELLIPSIS, size) > width:
            last = last[:-1]
        kept[-1] = last.rstrip() + ELLIPSIS
        return kept
