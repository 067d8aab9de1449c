"""The differential test's support: random inventories, the cell matrix, the oracle,
the XCLIENT relay and the SMTP driver.

Three answers are compared for every cell of the matrix: the intended policy
(``oracle``, computed from the generated records alone, never from the
compiler), ``relaygate query`` (``answers``) and a real Postfix loaded with the
compiled output (``relay`` and ``smtp``). ``inventory`` writes the random
inventories the cells are drawn from; ``matrix`` enumerates the cells.
"""
