"""Neural networks: score models, encoders and surrogates."""
