"""The book's own helpers, apart from the library: what only a chapter uses.

One module per chapter that needs one (``ch3`` ... ``ch6``), and two that
several chapters share: :mod:`ewcbook.chapters.style` (the look of every
figure, one colour per method) and :mod:`ewcbook.chapters.original_post`
(the seed blog post's code, bugs included, for measuring them). Chapters
import them as ``from ewcbook.chapters import ch5``; the library never
imports this package, and ``import ewcbook`` does not load it. A new
chapter's helpers go in a new module here, ``chN.py``.

These modules need the book's extras (``pip install "ewcbook[book]"``):
matplotlib, for the figures.
"""
