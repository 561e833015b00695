"""Offloading (``offload=``): diffusers' CPU offload strategies as the plan's OFFLOAD stage."""
