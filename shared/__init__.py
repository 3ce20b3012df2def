"""What the web and the worker share: the job record and its lifecycle (job.py, jobs.py),
job kinds (kinds/), parameters, models, settings, images, the store and Redis key names.

Nothing here imports Keras, TensorFlow or Flask.  Only ``queue.py`` imports Celery, and
``jobs.py`` reaches it only to send a message, so the record needs no Celery to be read.
"""
