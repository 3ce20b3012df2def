"""The GPU side: the dream engine (no Celery, no Flask in dream.py / models.py)."""
