"""Untrusted text (file names, model names, settings) made safe for the places it is shown.

A file name may hold anything but ``/`` and NUL: markup (``<img src=x onerror=...>``), Markdown
(``[md](javascript:alert(1)).png``, ``![t](http:127.0.0.1:8765).png``), newlines, terminal escape sequences
or bidirectional overrides. Wherever such text reaches a notebook cell, an HTML page, a plotly title or a
terminal line, it goes through one of these functions and stays text:

- :func:`one_line`: one line of visible characters (for logs, progress lines and error messages);
- :func:`html_text`: HTML text, also what plotly titles read (they parse a few HTML tags);
- :func:`markdown_text`: Markdown *and* HTML text: every ASCII punctuation character becomes a numeric
  character reference, which Markdown renderers (CommonMark, mistune, marked) and HTML show as the
  character and never read as structure (links, images, emphasis, tags, autolinks, math).
"""

from __future__ import annotations

import string
import unicodedata

__all__ = ["html_text", "markdown_text", "one_line"]

#: bidirectional controls reorder what is shown (``gnp.exe`` read as ``exe.png``): shown as escapes
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_PUNCTUATION = frozenset(string.punctuation)


def _visible(ch: str) -> str:
    if ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def one_line(value: object) -> str:
    """``value`` as one line of visible text.

    Runs of whitespace (newlines included) become one space and the ends are trimmed; other control
    characters (escape sequences) and bidirectional overrides are written as ``\\xNN`` / ``\\uNNNN``.

    Examples
    --------
    >>> one_line("odd\\nname.png")
    'odd name.png'
    >>> one_line("\\x1b[31mred.png")
    '\\\\x1b[31mred.png'
    """
    return "".join(_visible(ch) for ch in " ".join(str(value).split()))


def html_text(value: object) -> str:
    """``value`` as one line of HTML text: ``& < > " '`` escaped, so no tag or attribute can start.

    Examples
    --------
    >>> html_text("<img src=x onerror=alert(1)>.png")
    '&lt;img src=x onerror=alert(1)&gt;.png'
    """
    import html

    return html.escape(one_line(value), quote=True)


def markdown_text(value: object) -> str:
    """``value`` as one line of Markdown (and HTML) text that renders as exactly that text.

    Every ASCII punctuation character is written as a numeric character reference (``[`` -> ``&#91;``):
    Markdown never reads a character reference as structure, and HTML shows it as the character.

    Examples
    --------
    >>> markdown_text("[md](javascript:alert(1)).png")
    '&#91;md&#93;&#40;javascript&#58;alert&#40;1&#41;&#41;&#46;png'
    """
    return "".join(f"&#{ord(ch)};" if ch in _PUNCTUATION else ch for ch in one_line(value))
