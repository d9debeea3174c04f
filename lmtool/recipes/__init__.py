"""Recipes: each wires data, model, task and the training engine for one command."""
