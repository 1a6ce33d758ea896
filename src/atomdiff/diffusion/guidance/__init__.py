"""Terms that steer sampling towards data: physics guidance by a measured pattern."""

from atomdiff.diffusion.guidance.physics import PhysicsGuidance

__all__ = ["PhysicsGuidance"]
