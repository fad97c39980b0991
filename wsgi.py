"""Entry point: ``gunicorn -c conf/gunicorn.conf.py wsgi:app`` and ``flask --app wsgi``."""

from flaskstream import create_app

app = create_app()
