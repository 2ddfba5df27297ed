"""Thin stacks that wire the constructs in stacks/constructs together."""
