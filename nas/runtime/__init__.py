"""What a long-running command needs, shared by ``nas-search`` and ``nas-fidelity``: joining Ray and its
logging (``cluster``, ``raylog``), signals as a pause (``signals``), the folder lock (``lock``), the mirror of a
run directory on a URI (``storage``), and whose messages these are (``command``). Internal.
"""
