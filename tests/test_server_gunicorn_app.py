"""GunicornService: options applied, /health gated on every live worker being warm, warm-up through the edge."""
from __future__ import annotations

import threading
from types import SimpleNamespace

from modelarts_mnist.server.app import ServeConfig
from modelarts_mnist.server.edge import AppThreads
from modelarts_mnist.server.gunicorn_app import EdgeWorker, GunicornService, WarmWorkers, warm_http_path


def test_all_warm_counts_live_warm_workers_and_a_reaped_one_no_longer_counts():
    service = GunicornService(ServeConfig(), {"workers": 2, "bind": "127.0.0.1:0"})
    assert service.cfg.workers == 2 and not service.all_warm()
    service.worker_listening(SimpleNamespace(pid=101))
    service.worker_listening(SimpleNamespace(pid=101))  # counted once however often it says so
    assert not service.all_warm()
    service.worker_listening(SimpleNamespace(pid=102))
    assert service.all_warm()
    service.cfg.child_exit(None, SimpleNamespace(pid=101))  # killed: the master reaps it
    assert not service.all_warm()
    service.worker_listening(SimpleNamespace(pid=103))  # its replacement, once warm
    assert service.all_warm()
    service.worker_leaving(SimpleNamespace(pid=102))  # retiring: stops counting before it exits
    assert not service.all_warm()


def test_the_url_is_announced_once_whichever_worker_listens_first():
    said = []
    service = GunicornService(ServeConfig(), {"workers": 2}, announce=lambda: said.append("url"))
    service.worker_listening(SimpleNamespace(pid=1))
    service.worker_listening(SimpleNamespace(pid=2))
    assert said == ["url"]


def test_warm_workers_has_room_for_replacements():
    warm = WarmWorkers(2)
    warm.add(1)
    warm.add(2)
    warm.discard(1)
    warm.add(3)
    assert warm.count() == 2 and sorted(warm.pids[:]) == [2, 3]


def test_load_builds_a_gated_app_that_is_ready_when_returned(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr("modelarts_mnist.server.gunicorn_app.create_app",
                        lambda config: built.append(config) or "app")
    service = GunicornService(ServeConfig(model_dir=tmp_path, time_budget_seconds=3), {"workers": 2})
    assert service.load() == "app" and service.warm.count() == 0  # counted once it listens
    assert built[0].ready_gate == service.all_warm and built[0].load_in_background is False
    assert service.cfg.post_worker_init == service.warm_worker and service.cfg.worker_class is EdgeWorker
    assert service.edge_limits().app_seconds == 3


class Recorder:
    """A WSGI app with the admission hook, recording what reached it and on which thread."""

    def __init__(self):
        self.seen, self.admitted = [], []

    def admit(self, environ):
        self.admitted.append(environ.get("HTTP_X_AUTH_TOKEN"))
        return 1 << 20

    def __call__(self, environ, start_response):
        self.seen.append((threading.get_ident(), environ["REQUEST_METHOD"], environ["CONTENT_TYPE"],
                          environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def test_warm_worker_runs_every_pool_thread():
    app = Recorder()
    worker = SimpleNamespace(threads=AppThreads(2), wsgi=app, cfg=SimpleNamespace(threads=2))
    GunicornService(ServeConfig(), {"workers": 1}).warm_worker(worker)
    threads = {seen[0] for seen in app.seen}
    assert len(threads) == 2 and threading.get_ident() not in threads


def test_warm_http_path_runs_the_digit_through_the_edges_parser_with_the_token():
    from modelarts_mnist.server.loading import digit_png

    app = Recorder()
    warm_http_path(app, "s3cret", rounds=2)
    assert len(app.seen) == 2 and app.admitted == ["s3cret", "s3cret"]
    _, method, content_type, body = app.seen[0]
    assert (method, content_type) == ("POST", "multipart/form-data; boundary=warm")
    assert digit_png() in body and body.endswith(b"--warm--\r\n")


def test_a_worker_that_cannot_warm_only_logs(caplog):
    app = Recorder()
    app.admit = lambda environ: (_ for _ in ()).throw(RuntimeError("boom"))
    worker = SimpleNamespace(threads=AppThreads(1), wsgi=app, cfg=SimpleNamespace(threads=1))
    GunicornService(ServeConfig(), {"workers": 1}).warm_worker(worker)
    assert "warming the worker's threads failed: boom" in caplog.text and not app.seen
