"""The VMC bridge: a client of a holistream stream that sends each rig as VMC (OSC over UDP)."""
