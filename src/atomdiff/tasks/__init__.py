"""Tasks compose structures, physics and models into what a user asks for, and write the results."""
