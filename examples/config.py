"""An annotated prefork config file: `prefork -c examples/config.py`.

It is plain Python, run once at start and again on every `kill -HUP`. Each top-level name is
a setting (the names are gunicorn's, so a gunicorn.conf.py works too). Names starting with
`_` and names brought in by `import` are yours; any other unknown name is an error that says
which name you meant, so a typo never passes silently. Precedence:
defaults < this file < $PREFORK_CMD_ARGS < the command line.

`prefork -c examples/config.py --check-config` prints the effective settings and exits.
"""

import multiprocessing
import os

# -- the app -----------------------------------------------------------------------------
# module:callable, as on the command line (which wins if it names one too).
wsgi_app = "examples.hello:app"
# Import the app in the master, then fork: shared memory pages, faster worker start. Code
# changes then need a restart (HUP reuses the master's copy).
preload_app = False

# -- sockets -----------------------------------------------------------------------------
# Repeatable. HOST:PORT, [IPv6]:PORT, unix:/path, fd://N. Behind nginx, use a unix socket
# (README: Behind nginx). Under systemd socket activation, the inherited sockets win.
bind = [f"127.0.0.1:{os.environ.get('PORT', '8000')}"]
backlog = 2048
umask = 0o007  # unix sockets we create: owner and group may connect (nginx's group)

# -- workers -----------------------------------------------------------------------------
# Processes do CPU-bound Python in parallel; threads only help handlers that wait (I/O).
# A common start: one or two workers per core, a few threads if the app waits on a database.
_cores = multiprocessing.cpu_count()
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * _cores))
threads = 1  # worker_class = "gthread" with threads = 4 means the same as in gunicorn
timeout = 30  # a worker silent this long: its stacks are logged, then it is replaced
graceful_timeout = 30  # on TERM/HUP, in-flight requests get this long
keepalive = 5  # idle keep-alive seconds; keep nginx's upstream keepalive_timeout below it
max_requests = 0  # retire a worker after N requests (a leak band-aid); 0: never
max_requests_jitter = 0  # so that workers do not all retire at once

# -- limits (answers 414 / 431 / 413) ----------------------------------------------------
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190
limit_request_body = 0  # bytes; 0: unlimited (nginx's client_max_body_size also applies)

# -- process ---------------------------------------------------------------------------------
proc_name = "myapp"  # ps shows "prefork: worker 1 [myapp]"
pidfile = None
user = None  # workers drop to this user/group; the master keeps root only to bind
group = None
raw_env = ["APP_ENV=production"]  # KEY=VALUE set in the workers

# -- logs --------------------------------------------------------------------------------
errorlog = "-"  # stderr (the journal, under systemd); kill -USR1 reopens files
loglevel = "info"
accesslog = None  # "-" for stdout
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(L)s'

# -- proxies -----------------------------------------------------------------------------
# Peers whose X-Forwarded-For / X-Forwarded-Proto are believed (unix-socket peers always).
forwarded_allow_ips = "127.0.0.1,::1"

# Not here: gunicorn server hooks (post_fork, when_ready, ...) are refused by name. For
# per-worker set-up, call os.register_at_fork(after_in_child=...) in your app module.
