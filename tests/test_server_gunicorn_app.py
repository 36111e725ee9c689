"""GunicornService: options applied, /health gated on every worker being warm."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from modelarts_mnist.server.app import ServeConfig
from modelarts_mnist.server.gunicorn_app import GunicornService, warm_threads


def test_all_warm_only_once_every_worker_counted():
    service = GunicornService(ServeConfig(), {"workers": 3, "bind": "127.0.0.1:0"})
    assert service.cfg.workers == 3 and not service.all_warm()
    service.warm_workers.value = 2
    assert not service.all_warm()
    service.warm_workers.value = 3
    assert service.all_warm()


def test_load_builds_a_gated_app_that_is_ready_when_returned(tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr("modelarts_mnist.server.gunicorn_app.create_app",
                        lambda config: built.append(config) or "app")
    service = GunicornService(ServeConfig(model_dir=tmp_path), {"workers": 2})
    assert service.load() == "app" and service.warm_workers.value == 0  # counted once its threads are warm
    assert built[0].ready_gate == service.all_warm and built[0].load_in_background is False
    assert service.cfg.post_worker_init == service.warm_worker


def echo_app(seen):
    def app(environ, start_response):
        seen.append(threading.get_ident())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    return app


def test_warm_worker_runs_every_pool_thread_then_counts_the_worker():
    from gunicorn.config import Config

    seen = []
    cfg = Config()
    cfg.set("threads", 2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        worker = SimpleNamespace(tpool=pool, wsgi=echo_app(seen), cfg=cfg)
        service = GunicornService(ServeConfig(), {"workers": 1})
        service.warm_worker(worker)
    assert len(set(seen)) == 2 and threading.get_ident() not in seen
    assert service.warm_workers.value == 1 and service.all_warm()


def test_warm_worker_without_a_pool_warms_on_its_own_thread():
    from gunicorn.config import Config

    seen = []
    service = GunicornService(ServeConfig(), {"workers": 1})
    service.warm_worker(SimpleNamespace(wsgi=echo_app(seen), cfg=Config()))
    assert set(seen) == {threading.get_ident()} and service.warm_workers.value == 1


def test_warm_threads_that_cannot_all_start_only_log(caplog):
    with ThreadPoolExecutor(max_workers=1) as pool:
        warm_threads(pool, 2, lambda: None, timeout=0.2)
    assert "warming the worker's threads failed" in caplog.text


def test_warm_http_path_runs_the_digit_through_gunicorns_parser_and_writer():
    from gunicorn.config import Config

    from modelarts_mnist.server.gunicorn_app import warm_http_path
    from modelarts_mnist.server.loading import digit_png

    seen = []

    def app(environ, start_response):
        seen.append((environ["REQUEST_METHOD"], environ["CONTENT_TYPE"], environ["wsgi.input"].read()))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    warm_http_path(app, Config(), rounds=2)
    assert len(seen) == 2
    method, content_type, body = seen[0]
    assert (method, content_type) == ("POST", "multipart/form-data; boundary=warm")
    assert digit_png() in body and body.endswith(b"--warm--\r\n")


def test_warm_http_path_failure_only_logs(caplog):
    from gunicorn.config import Config

    from modelarts_mnist.server.gunicorn_app import warm_http_path

    def broken(environ, start_response):
        raise RuntimeError("boom")

    warm_http_path(broken, Config(), rounds=1)
    assert "gunicorn warm-up request failed: boom" in caplog.text
