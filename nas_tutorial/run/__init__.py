"""The run layer: everything between a search and the files it leaves.

``cli`` (the ``nas-tutorial`` command, the only argparse), ``searches`` (flags -> config ->
``method.search()`` -> the one run-folder writer and the one ``summary.json`` layout),
``folders`` (run folders checked before any work), ``tables`` (making the ground-truth
tables), ``compare`` (the methods side by side, studies over seeds) and ``records``
(recorded runs under ``data/runs``). The methods never import this package: it imports
them.
"""
