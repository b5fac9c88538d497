"""Bridges to other libraries: e3nn (:mod:`tfn.interop.e3nn`) and ASE (:mod:`tfn.interop.ase`,
also importable as :mod:`tfn.ase`). Each is imported on demand; tfn itself needs neither."""
