"""Shared pytest fixtures for the data-layer tests: generated files and a local HTTP server."""

import contextlib
import http.server
import threading

import pytest

from fedjax_compress.data import download, tff_emnist
from tests.data import fixtures  # the repository root is on sys.path: tests/conftest.py


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
  """Never touch the real cache, never reach the internet: default URL is a closed port."""
  monkeypatch.setenv(download.CACHE_ENV, str(tmp_path / "default_cache"))
  monkeypatch.setenv(tff_emnist.BASE_URL_ENV, "http://127.0.0.1:1/")


@pytest.fixture(scope="session")
def tff_splits():
  return fixtures.tff_split_clients()


@pytest.fixture(scope="session")
def tff_sqlite(tmp_path_factory, tff_splits):
  """A generated emnist_all.sqlite with all four TFF splits (read-only use)."""
  folder = tmp_path_factory.mktemp("tff_sqlite")
  return fixtures.write_tff_sqlite(folder / tff_emnist.SQLITE_NAME, tff_splits)


@pytest.fixture(scope="session")
def tff_lzma_dir(tmp_path_factory, tff_sqlite):
  """A folder holding only emnist_all.sqlite.lzma."""
  folder = tmp_path_factory.mktemp("tff_lzma")
  fixtures.write_lzma(tff_sqlite, folder / tff_emnist.LZMA_NAME)
  return folder


class _Server:
  """Serves a folder on 127.0.0.1; records request paths; can truncate bodies."""

  def __init__(self, folder):
    self.requests, self.truncate = [], False
    server = self

    class Handler(http.server.SimpleHTTPRequestHandler):
      def __init__(self, *args, **kw):
        super().__init__(*args, directory=str(folder), **kw)

      def do_GET(self):
        server.requests.append(self.path)
        if not server.truncate:
          return super().do_GET()
        body = (folder / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])  # Then the connection closes.

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.timeout = 5
    self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
    self.thread = threading.Thread(  # Short poll: shutdown() waits for one.
      target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()
    self.thread.join(timeout=5)


@pytest.fixture
def http_server(tff_lzma_dir):
  """A local server for the generated emnist_all.sqlite.lzma; stopped after the test."""
  server = _Server(tff_lzma_dir)
  with contextlib.closing(server):
    yield server
