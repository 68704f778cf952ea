"""The avatar rig as clients see it: the Rig type and its wire order of bones, expressions and
parts (skeleton.py, with its coordinate conventions), quaternion helpers (quat.py) and VMC
bundles (vmc.py). Pure computation, no I/O. The server solves rigs (server.rig); clients read
them from results and may send them on (holistream.vmc)."""
