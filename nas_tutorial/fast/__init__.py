"""Speed paths, each tested equal to the plain code it replaces.

The method modules (``nas_tutorial.pc_darts`` and the others) read like their papers; what
they run for speed lives here, beside them: :mod:`.pc_darts` (the PC-DARTS search cell
rewritten exactly, and the CPU memory layout per K), :mod:`.fused` (the same cell with the
mixed ops of all edges leaving a state fused into few large operators) and :mod:`.convs`
(depthwise convs whose CPU backward takes exact shortcuts).
"""
