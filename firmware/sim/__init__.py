# The simulator: a virtual world and clock (world.py), simulated sensors and buses
# (devices.py), the sim board (board.py), links and an in-process gateway, and the driver
# loop (run.py). BOARD is the sim board's name in a node config ("board"); it lives here,
# apart from those modules, so a tool that only names the board (tools/upload.py,
# tools/nodeconfig.py) does not load the simulator.
BOARD = "sim"
