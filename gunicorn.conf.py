# gunicorn reads ./gunicorn.conf.py by default: a bare `gunicorn "api:create_app()"` run
# from here gets the same configuration as `baton api`.
from baton.gunicorn_conf import *  # noqa: F403
