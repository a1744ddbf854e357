"""Teaching helpers: the notebooks' exercises with their checks and student copies
(``exercises``), and the notebooks as self-contained HTML handouts checked in a browser
(``handouts``). Reached from the command line as ``nas-tutorial student`` and
``nas-tutorial handouts``.
"""
