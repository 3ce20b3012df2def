"""Contracts shared by the web and the worker: parameters, models, settings, images.

Nothing here imports Keras, TensorFlow, Flask or Celery.
"""
