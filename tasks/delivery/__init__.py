"""Delivery work that runs on the fleet: the store feeds beat keeps fresh."""
