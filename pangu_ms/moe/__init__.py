"""Mixture-of-experts stages: router, dispatcher, experts, layer, aux loss."""
