"""The Flask front end: forms, the JSON API; never imports Keras."""
