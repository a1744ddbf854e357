"""The three methods, each a module to read next to its paper: ``pc_darts`` (DARTS and
PC-DARTS), ``spos`` (with its ShuffleNetV2 space in ``spos_space``) and ``pnas`` (with its
cell space in ``pnas_space``). Each holds its algorithm and nothing else: no command line,
run folders, table making or figures (those import the methods, never the reverse). Reached
as ``nt.pc_darts``, ``nt.spos``, ``nt.pnas``.
"""
