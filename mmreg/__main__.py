"""`python -m mmreg` (so `accelerate launch -m mmreg run ...` works)."""

from mmreg.cli import main

main()
